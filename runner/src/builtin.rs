//! The built-in stages, compiled to wasm32-wasip2 components by `build.rs`
//! and embedded, so the binary runs with no extra files.

include!(concat!(env!("OUT_DIR"), "/builtin_stages.rs"));

/// The component of a built-in stage.
pub fn wasm(name: &str) -> Option<&'static [u8]> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
