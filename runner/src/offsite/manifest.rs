//! A manifest as an offsite target: a `--files-from` list of library paths
//! for restic (or any tool that reads one). keepsake copies nothing: a file
//! is "pushed" once its absolute path is a line of the list, written
//! durably, and the tool that reads the list is the one that keeps it
//! offsite. Restore is that tool's.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::store::{Backend, Remote, StoreError, Write, changed, hash_file, lock};
use crate::effects::fsops;

pub struct Manifest {
    name: String,
    path: PathBuf,
    /// The lines it holds, read at `check`.
    listed: Mutex<Option<HashSet<String>>>,
}

impl Manifest {
    pub fn new(name: String, path: PathBuf) -> Manifest {
        Manifest {
            name,
            path,
            listed: Mutex::new(None),
        }
    }

    fn lists(&self, key: &str) -> bool {
        lock(&self.listed).as_ref().is_some_and(|l| l.contains(key))
    }
}

#[async_trait::async_trait]
impl Backend for Manifest {
    fn name(&self) -> &str {
        &self.name
    }

    /// Nothing is copied, so there is nothing to pace.
    fn paces_itself(&self) -> bool {
        true
    }

    /// A manifest lists absolute paths.
    fn key_for(&self, _key: &str, local: &Path) -> String {
        local.to_string_lossy().into_owned()
    }

    async fn check(&self, _pushed_before: bool) -> Result<(), StoreError> {
        let path = self.path.clone();
        let lines = tokio::task::spawn_blocking(move || read_manifest(&path))
            .await
            .map_err(|e| StoreError::Local(e.to_string()))?
            .map_err(|e| StoreError::Unavailable(format!("offsite target {}: {e}", self.name)))?;
        *lock(&self.listed) = Some(lines);
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<Remote>, StoreError> {
        if !self.lists(key) {
            return Ok(None);
        }
        match tokio::fs::metadata(key).await {
            Ok(meta) => Ok(Some(Remote {
                size: meta.len(),
                etag: None,
            })),
            Err(_) => Ok(Some(Remote {
                size: 0,
                etag: None,
            })),
        }
    }

    async fn hash(&self, key: &str) -> Result<Option<String>, StoreError> {
        if !self.lists(key) {
            return Ok(None);
        }
        hash_file(&self.name, PathBuf::from(key)).await
    }

    async fn write(&self, write: &Write<'_>) -> Result<Option<String>, StoreError> {
        let (name, local) = (&self.name, write.local);
        let line = local.to_string_lossy().into_owned();
        if line.contains(['\n', '\r']) {
            return Err(StoreError::Conflict(format!(
                "offsite target {name}: {} has a line break in its name, which a manifest cannot list; rename it",
                local.display()
            )));
        }
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| StoreError::Local(format!("{}: {e}", local.display())))?;
        if meta.len() != write.size {
            return Err(changed(local));
        }
        let (path, entry) = (self.path.clone(), line.clone());
        tokio::task::spawn_blocking(move || append_line(&path, &entry))
            .await
            .map_err(|e| StoreError::Local(e.to_string()))?
            .map_err(|e| StoreError::Unavailable(format!("offsite target {name}: {e}")))?;
        if let Some(lines) = lock(&self.listed).as_mut() {
            lines.insert(line);
        }
        Ok(None)
    }

    async fn list(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Err(self.no_restore())
    }

    async fn download(&self, _key: &str, _dest: &Path) -> Result<(), StoreError> {
        Err(self.no_restore())
    }
}

impl Manifest {
    fn no_restore(&self) -> StoreError {
        StoreError::Refused(format!(
            "offsite target {} is a manifest: restore with the tool that read it (restic restore)",
            self.name
        ))
    }
}

fn read_manifest(path: &Path) -> std::io::Result<HashSet<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if path.parent().is_some_and(Path::is_dir) {
                Ok(HashSet::new())
            } else {
                Err(std::io::Error::new(
                    e.kind(),
                    format!("the folder of {} is missing", path.display()),
                ))
            }
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )),
    }
}

/// Append one line to a manifest, durably.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    fsops::append_durably(path, format!("{line}\n").as_bytes())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
