//! Host bindings generated from `sdk/wit/stage.wit`.
#![allow(unsafe_code, clippy::all, missing_docs)]

wasmtime::component::bindgen!({
    world: "stage",
    path: "../sdk/wit",
});
