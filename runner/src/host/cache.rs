//! Compiled components cached on disk, so a restart deserializes in
//! milliseconds instead of compiling with Cranelift again.
//!
//! A cache file is `<blake3 of the wasm + engine compatibility>.cwasm` and
//! starts with the BLAKE3 of the compiled bytes that follow: a truncated or
//! tampered file is recompiled, never loaded. Deserializing runs the native
//! code in it, so only a file owned by keepsake's own user and writable by
//! nobody else is loaded (a checksum anyone can recompute proves nothing);
//! any other file is recompiled and replaced.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where the component came from, for `plugins list` and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let bytes = self.0.finalize();
        u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or_default())
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.update(wasm);
    hasher.0.finalize().to_hex()[..32].to_string()
}

pub fn load(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> wasmtime::Result<(Component, CacheOutcome)> {
    let Some(dir) = cache_dir else {
        return Ok((Component::new(engine, wasm)?, CacheOutcome::Compiled));
    };
    let path: PathBuf = dir.join(format!("{}.cwasm", cache_key(engine, wasm)));
    if let Some(bytes) = read_trusted(&path)
        && bytes.len() > 32
        && blake3::hash(&bytes[32..]).as_bytes() == &bytes[..32]
    {
        // SAFETY: the bytes were produced by `precompile_component` of an
        // engine with the same compatibility hash (it is part of the file
        // name), and the BLAKE3 check above proves they are unchanged since.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &bytes[32..]) };
        if let Ok(component) = component {
            return Ok((component, CacheOutcome::Hit));
        }
    }
    let compiled = engine.precompile_component(wasm)?;
    // SAFETY: as above; these are the bytes the engine just produced.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, &compiled)? };
    // A cache that cannot be written only costs time on the next start.
    let _ = write_cache(dir, &path, &compiled);
    Ok((component, CacheOutcome::Compiled))
}

/// The file's bytes, if it is a regular file (not a link) owned by this
/// process's user and not writable by its group or others.
fn read_trusted(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut file = crate::effects::fsops::open_nofollow(path).ok()?;
    let meta = file.metadata().ok()?;
    let owner = rustix::process::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != owner || meta.mode() & 0o022 != 0 {
        tracing::warn!(
            "{} is not owned by keepsake's user or is writable by others; it is compiled again instead of loaded",
            path.display()
        );
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

fn write_cache(dir: &Path, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = crate::effects::fsops::remove_temp(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    let written = file
        .write_all(blake3::hash(compiled).as_bytes())
        .and_then(|()| file.write_all(compiled))
        .and_then(|()| file.sync_all());
    drop(file);
    // A full disk: the half-written cache file must not take the space
    // photos need.
    if let Err(e) = written {
        let _ = crate::effects::fsops::remove_temp(&temp);
        return Err(e);
    }
    crate::effects::fsops::rename_over(&temp, path)
}
