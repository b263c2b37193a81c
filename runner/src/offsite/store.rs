//! The kinds of offsite target behind one trait, [`Backend`]: a folder (a
//! mounted NAS share, a USB disk; `dir.rs`), any S3-compatible server
//! (`s3.rs`), any rclone remote (`rclone.rs`), and a manifest, a
//! `--files-from` list for restic (`manifest.rs`). [`Store`] holds one of
//! them and keeps the rules every kind shares, so no kind can break them:
//!
//! - a key that exists is compared, never replaced: the same bytes count as
//!   pushed, other bytes are a conflict;
//! - an upload an earlier try began is aborted (S3) or, being keepsake's own
//!   partial copy, replaced (rclone) before anything else;
//! - nothing is ever deleted but such a partial copy.
//!
//! `tests/e2e/conformance.rs` runs one suite against every kind.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::pace::Pace;
use crate::config::{OffsiteTarget, TargetKind};
use crate::hashing::blake3_file;

/// Why a push (or a check) did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The target cannot be reached or answered with a server error: try
    /// again later.
    Unavailable(String),
    /// The target refused (credentials, a missing bucket, permissions):
    /// retried later too, since fixing the config is the usual cure, but
    /// reported loudly.
    Refused(String),
    /// The key holds other bytes.
    Conflict(String),
    /// The library file could not be read.
    Local(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(m)
            | StoreError::Refused(m)
            | StoreError::Conflict(m)
            | StoreError::Local(m) => f.write_str(m),
        }
    }
}

/// What a target holds under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub size: u64,
    pub etag: Option<String>,
}

/// What a push knows beyond the file: a multipart upload (or an rclone
/// copy) an earlier try began, and how to note the one this try begins.
pub struct Attempt<'a> {
    pub begun: Option<String>,
    pub note: &'a (dyn Fn(Option<&str>) -> Result<(), String> + Sync),
}

/// One write a backend is asked for: the key is free (or holds keepsake's
/// own partial copy, removed already).
pub struct Write<'a> {
    /// The library file, BLAKE3 `blake3`, `size` bytes.
    pub local: &'a Path,
    pub key: &'a str,
    pub blake3: &'a str,
    pub size: u64,
    pub attempt: &'a Attempt<'a>,
    /// The bandwidth limit, for backends that do not pace themselves.
    pub pace: Option<&'a Pace>,
}

/// Marks a push that began an rclone copy: a partial object at its key is
/// keepsake's own and may be replaced.
pub const RCLONE_BEGUN: &str = "rclone";

/// One kind of target. Every method names the target in its errors. The
/// rules of never replacing a key live in [`Store::put`], not here: `write`
/// is only called for a key that holds nothing.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// The target's name, for messages.
    fn name(&self) -> &str;

    /// A folder target: its copies are rehashed without a download.
    fn is_local(&self) -> bool {
        false
    }

    /// The backend keeps to a bandwidth limit itself (rclone's
    /// `--bwlimit`); the others get a [`Pace`].
    fn paces_itself(&self) -> bool {
        false
    }

    /// The key under which the target knows a library file (a manifest
    /// lists absolute paths).
    fn key_for(&self, key: &str, _local: &Path) -> String {
        key.to_string()
    }

    /// Check that the target is there and usable. `pushed_before`: keepsake
    /// pushed to it before, so a folder without its marker is a disk that is
    /// not mounted.
    async fn check(&self, pushed_before: bool) -> Result<(), StoreError>;

    /// What the target holds under `key`, if anything.
    async fn head(&self, key: &str) -> Result<Option<Remote>, StoreError>;

    /// A digest the target gives for `key` without a download, as (kind,
    /// lowercase hex), kind being `sha256`, `sha1` or `md5`.
    async fn digest(&self, _key: &str) -> Result<Option<(&'static str, String)>, StoreError> {
        Ok(None)
    }

    /// BLAKE3 of what the target holds under `key` (reads all of it).
    async fn hash(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Copy the file to its free key; the ETag where the target gives one.
    async fn write(&self, write: &Write<'_>) -> Result<Option<String>, StoreError>;

    /// Abort an upload an earlier try began (`begun`, never
    /// [`RCLONE_BEGUN`]), so no parts stay on the target.
    async fn abort(&self, _key: &str, _begun: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Remove the partial object an interrupted copy of keepsake's own left
    /// at `key` (rclone writes some remotes in place).
    async fn remove_partial(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every object under the target (for `restore`): (key, size).
    async fn list(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Download `key` into the new file `dest`.
    async fn download(&self, key: &str, dest: &Path) -> Result<(), StoreError>;
}

/// One target, ready to take files.
pub struct Store {
    backend: Box<dyn Backend>,
    pace: Option<Pace>,
}

impl Store {
    /// Connect to a target (no request yet for S3: the first one tells;
    /// rclone targets start their `rclone rcd`).
    pub async fn open(target: &OffsiteTarget) -> Result<Store, StoreError> {
        let name = target.name.clone();
        let backend: Box<dyn Backend> = match &target.kind {
            TargetKind::Dir { path } => Box::new(super::dir::Dir::new(name, path.clone())),
            TargetKind::S3 { .. } => Box::new(super::s3::S3::open(name, &target.kind)?),
            TargetKind::Rclone {
                remote,
                program,
                config,
            } => Box::new(
                super::rclone::Rclone::open(
                    name,
                    remote,
                    program,
                    config.as_deref(),
                    target.bwlimit,
                )
                .await?,
            ),
            TargetKind::Manifest { path } => {
                Box::new(super::manifest::Manifest::new(name, path.clone()))
            }
        };
        Ok(Store::with(backend, target.bwlimit))
    }

    /// A store over any backend, paced to `bwlimit` bytes/s unless the
    /// backend paces itself.
    pub fn with(backend: Box<dyn Backend>, bwlimit: Option<u64>) -> Store {
        let pace = bwlimit.filter(|_| !backend.paces_itself()).map(Pace::new);
        Store { backend, pace }
    }

    pub fn name(&self) -> &str {
        self.backend.name()
    }

    /// A folder target: its copies are rehashed without a download.
    pub fn is_local(&self) -> bool {
        self.backend.is_local()
    }

    /// The key under which the target knows a library file.
    pub fn key_for(&self, key: &str, local: &Path) -> String {
        self.backend.key_for(key, local)
    }

    /// Check that the target is there and usable (the folder exists, the
    /// bucket answers with these credentials, the rclone remote is known).
    pub async fn check(&self, pushed_before: bool) -> Result<(), StoreError> {
        self.backend.check(pushed_before).await
    }

    /// What the target holds under `key`, if anything.
    pub async fn head(&self, key: &str) -> Result<Option<Remote>, StoreError> {
        self.backend.head(key).await
    }

    /// A digest the target gives for `key` without a download (see
    /// [`Backend::digest`]); `None` where it keeps none for it.
    pub async fn digest(&self, key: &str) -> Result<Option<(&'static str, String)>, StoreError> {
        self.backend.digest(key).await
    }

    /// BLAKE3 of what the target holds under `key` (downloads it).
    pub async fn hash(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.backend.hash(key).await
    }

    /// Copy the file `local` (BLAKE3 `blake3`, `size` bytes) to `key`. A key
    /// that already holds the same bytes is done (a push a crash interrupted
    /// after the upload); other bytes are a conflict.
    pub async fn put(
        &self,
        local: &Path,
        key: &str,
        blake3: &str,
        size: u64,
        attempt: &Attempt<'_>,
    ) -> Result<Option<String>, StoreError> {
        let backend = self.backend.as_ref();
        // An rclone marker stays until the push is recorded done: the
        // partial object it vouches for may still be there.
        if let Some(begun) = attempt.begun.as_deref().filter(|b| *b != RCLONE_BEGUN) {
            backend.abort(key, begun).await?;
            (attempt.note)(None).map_err(StoreError::Local)?;
        }
        if let Some(remote) = backend.head(key).await? {
            let ours = attempt.begun.as_deref() == Some(RCLONE_BEGUN);
            match compare_existing(backend, key, blake3, size, remote).await {
                // A copy rclone began and never finished (a local or SFTP
                // remote writes in place): keepsake's own, replaced below.
                Err(StoreError::Conflict(_)) if ours => backend.remove_partial(key).await?,
                other => return other,
            }
        }
        backend
            .write(&Write {
                local,
                key,
                blake3,
                size,
                attempt,
                pace: self.pace.as_ref(),
            })
            .await
    }

    /// Every object under the target (for `restore`): (key, size).
    pub async fn list(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.backend.list().await
    }

    /// Download `key` into the new file `dest`.
    pub async fn download(&self, key: &str, dest: &Path) -> Result<(), StoreError> {
        self.backend.download(key, dest).await
    }
}

/// A key that holds something already: the same bytes are pushed (its ETag
/// stands), other bytes a conflict, never replaced.
pub async fn compare_existing(
    backend: &dyn Backend,
    key: &str,
    blake3: &str,
    size: u64,
    remote: Remote,
) -> Result<Option<String>, StoreError> {
    let same = remote.size == size
        && match backend.hash(key).await? {
            Some(hash) => hash == blake3,
            None => {
                return Err(StoreError::Unavailable(format!(
                    "offsite target {}: {key} vanished while it was read; tried again later",
                    backend.name()
                )));
            }
        };
    if same {
        Ok(remote.etag)
    } else {
        Err(StoreError::Conflict(format!(
            "offsite target {}: {key} already holds other bytes ({} bytes); keepsake never overwrites it",
            backend.name(),
            remote.size
        )))
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The library file changed since keepsake placed it.
pub(super) fn changed(local: &Path) -> StoreError {
    StoreError::Local(format!(
        "{} no longer has the bytes keepsake placed; restore it from another copy",
        local.display()
    ))
}

/// BLAKE3 of a file on a local disk (a folder target's copy, a manifest's
/// entry), `None` when it is not there.
pub(super) async fn hash_file(name: &str, path: PathBuf) -> Result<Option<String>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let name = name.to_string();
    tokio::task::spawn_blocking(move || blake3_file(&path))
        .await
        .map_err(|e| StoreError::Local(e.to_string()))?
        .map(Some)
        .map_err(|e| StoreError::Unavailable(format!("offsite target {name}: {e}")))
}

/// BLAKE3 of the library file.
pub(super) async fn blake3_of(local: &Path) -> Result<String, StoreError> {
    let path = local.to_path_buf();
    tokio::task::spawn_blocking(move || blake3_file(&path))
        .await
        .map_err(|e| StoreError::Local(e.to_string()))?
        .map_err(|e| StoreError::Local(format!("cannot read {}: {e}", local.display())))
}
