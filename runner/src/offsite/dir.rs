//! A folder as an offsite target: a mounted NAS share, a USB disk. Each
//! copy is written to a temp beside its key, synced, hashed again, and
//! renamed without replacing. A marker file, written at the first push,
//! tells a mounted disk from the empty mount point an unplugged one leaves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::pace::Pace;
use super::store::{Backend, Remote, StoreError, Write, hash_file};
use crate::effects::fsops;
use crate::hashing::blake3_file;

/// In a folder target, written at its first push.
pub const MARKER: &str = ".keepsake-target";

/// The start of every push temp's name (`.keepsake-push-PID-N-NANOS.tmp`).
pub const PUSH_TEMP: &str = ".keepsake-push-";

pub struct Dir {
    name: String,
    root: PathBuf,
}

impl Dir {
    pub fn new(name: String, root: PathBuf) -> Dir {
        Dir { name, root }
    }

    fn missing(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "offsite target {}: folder {} is missing (not mounted?)",
            self.name,
            self.root.display()
        ))
    }
}

#[async_trait::async_trait]
impl Backend for Dir {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_local(&self) -> bool {
        true
    }

    /// A folder target carries a marker file from its first push on: a disk
    /// that is not mounted leaves an empty mount point, which must not be
    /// filled instead.
    async fn check(&self, pushed_before: bool) -> Result<(), StoreError> {
        let (name, root) = (&self.name, &self.root);
        let marker = root.join(MARKER);
        if marker.is_file() {
            sweep_push_temps(name, root);
            return Ok(());
        }
        if !root.is_dir() {
            return Err(self.missing());
        }
        if pushed_before {
            return Err(StoreError::Unavailable(format!(
                "offsite target {name}: {} has no {MARKER} although keepsake pushed there before: is the disk mounted?",
                root.display()
            )));
        }
        let written = fsops::write_temp(&marker, b"keepsake offsite target\n")
            .and_then(|_| fsops::sync_files(&[marker.as_path(), root.as_path()]));
        written.map_err(|e| {
            StoreError::Unavailable(format!(
                "offsite target {name}: cannot write {}: {e}",
                marker.display()
            ))
        })
    }

    async fn head(&self, key: &str) -> Result<Option<Remote>, StoreError> {
        let path = self.root.join(key);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) => Ok(Some(Remote {
                size: meta.len(),
                etag: None,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.root.is_dir() {
                    Ok(None)
                } else {
                    Err(self.missing())
                }
            }
            Err(e) => Err(StoreError::Unavailable(format!(
                "offsite target {}: {}: {e}",
                self.name,
                path.display()
            ))),
        }
    }

    async fn hash(&self, key: &str) -> Result<Option<String>, StoreError> {
        hash_file(&self.name, self.root.join(key)).await
    }

    async fn write(&self, write: &Write<'_>) -> Result<Option<String>, StoreError> {
        let dest = self.root.join(write.key);
        let (local, blake3) = (write.local.to_path_buf(), write.blake3.to_string());
        let (name, root) = (self.name.clone(), self.root.clone());
        let pace = write.pace.cloned();
        tokio::task::spawn_blocking(move || {
            put_dir(&name, &root, &local, &dest, &blake3, pace.as_ref())
        })
        .await
        .map_err(|e| StoreError::Local(e.to_string()))?
    }

    async fn list(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || list_dir(&root))
            .await
            .map_err(|e| StoreError::Local(e.to_string()))?
            .map_err(|e| StoreError::Unavailable(format!("offsite target {}: {e}", self.name)))
    }

    async fn download(&self, key: &str, dest: &Path) -> Result<(), StoreError> {
        let (from, to) = (self.root.join(key), dest.to_path_buf());
        tokio::task::spawn_blocking(move || fsops::copy_to_temp(&from, &to))
            .await
            .map_err(|e| StoreError::Local(e.to_string()))?
            .map(drop)
            .map_err(|e| StoreError::Local(format!("{}: {e}", dest.display())))
    }
}

/// Remove the temps an interrupted push left on a folder target, once per
/// target and process (at the start, or the first run). Only those not
/// written to for ten minutes: another machine's push may be under way.
fn sweep_push_temps(name: &str, root: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if swept.iter().any(|r| r == root) {
            return;
        }
        swept.push(root.to_path_buf());
    }
    let old = std::time::SystemTime::now() - Duration::from_secs(600);
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && entry.file_name().to_string_lossy().starts_with(PUSH_TEMP)
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at < old)
                && fsops::remove_temp(&entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            "offsite target {name}: removed {removed} temp files an interrupted push left"
        );
    }
}

fn list_dir(root: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name == MARKER || name.starts_with(PUSH_TEMP) {
                    continue;
                }
                if let Ok(key) = path.strip_prefix(root) {
                    out.push((key.to_string_lossy().into_owned(), entry.metadata()?.len()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Temp file beside the destination, synced, re-hashed, then renamed
/// without replacing.
fn put_dir(
    name: &str,
    root: &Path,
    local: &Path,
    dest: &Path,
    blake3: &str,
    pace: Option<&Pace>,
) -> Result<Option<String>, StoreError> {
    let unavailable = |e: std::io::Error| {
        StoreError::Unavailable(format!("offsite target {name}: {}: {e}", dest.display()))
    };
    // Nothing is created on a mount point whose disk is not there.
    if !root.join(MARKER).is_file() {
        return Err(StoreError::Unavailable(format!(
            "offsite target {name}: {} has no {MARKER}: is the disk mounted?",
            root.display()
        )));
    }
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let gained = fsops::create_dirs(dir).map_err(unavailable)?;
    // Unique per push: two pushes of the same bytes may run at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // The name is new: another machine writing to the same share, or an
    // earlier crash, may have left one like it, never removed here.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = dir.join(format!(
        "{PUSH_TEMP}{}-{}-{nanos}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let copied = match pace {
        None => fsops::copy_to_temp(local, &temp),
        Some(pace) => fsops::copy_to_temp_paced(local, &temp, &|n| pace.take_blocking(n)),
    };
    copied.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && !local.exists() {
            StoreError::Local(format!("{} is missing from the library", local.display()))
        } else {
            unavailable(e)
        }
    })?;
    let mut durable: Vec<&Path> = vec![temp.as_path()];
    durable.extend(gained.iter().map(PathBuf::as_path));
    let checked = fsops::sync_files(&durable)
        .map_err(unavailable)
        .and_then(|()| blake3_file(&temp).map_err(unavailable));
    match checked {
        Ok(hash) if hash == blake3 => {}
        Ok(_) => {
            let _ = fsops::remove_temp(&temp);
            return Err(StoreError::Local(format!(
                "{} no longer has the bytes keepsake placed",
                local.display()
            )));
        }
        Err(e) => {
            let _ = fsops::remove_temp(&temp);
            return Err(e);
        }
    }
    // The disk may have been unplugged since the round began: never fill
    // the empty mount point left behind.
    if !root.join(MARKER).is_file() {
        let _ = fsops::remove_temp(&temp);
        return Err(StoreError::Unavailable(format!(
            "offsite target {name}: {} lost its {MARKER}: is the disk still mounted?",
            root.display()
        )));
    }
    match fsops::rename_no_replace(&temp, dest) {
        Ok(()) => {
            let _ = fsops::fsync_dir(dir);
            Ok(None)
        }
        Err(e) => {
            let _ = fsops::remove_temp(&temp);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Err(StoreError::Unavailable(format!(
                    "offsite target {name}: {} appeared while it was written",
                    dest.display()
                )))
            } else {
                Err(unavailable(e))
            }
        }
    }
}
