//! Reading a job's file once: BLAKE3, SHA-1 and the media kind, on as many
//! threads as there are cores, keeping the file open for the stages' reads.

use std::fs::File;
use std::sync::{Arc, Mutex};

use std::path::{Path, PathBuf};

use crate::effects::fsops;
use crate::hashing::{Hashes, hash_and_copy, hash_reader};
use crate::ledger::JobRecord;
use crate::media::{self, MediaKind};
use crate::shutdown::Stoppable;

/// A file read once: its hashes, what it is, and an open handle the stages
/// read through.
pub struct ReadFile {
    pub hashes: Hashes,
    /// The file copied into the staging folder while it was hashed.
    pub staged: Option<PathBuf>,
    pub kind: MediaKind,
    pub file: Arc<File>,
}

/// Why a file could not be read.
#[derive(Debug, Clone)]
pub enum ReadError {
    Vanished,
    /// keepsake is stopping: the job stays pending.
    Stopped,
    /// The file is no longer what the job found (rewritten or replaced).
    Changed,
    Unreadable(String),
}

/// Hash every job's file, on as many threads as there are cores.
///
/// `staging`: where each file is copied in the same pass as it is hashed (on
/// the library's filesystem, so the copy later moves into place with a
/// rename). One read serves both, the bytes placed are the bytes hashed, and
/// the copying happens here, beside the stage calls, instead of in the
/// applier that every batch waits for. Copies no write takes (duplicates)
/// are dropped before the batch's sync, so they never reach the disk.
pub fn read_all(batch: &[JobRecord], staging: Option<&Path>) -> Vec<Result<ReadFile, ReadError>> {
    let threads = crate::par::threads_for(batch.len());
    let slots: Vec<Mutex<Option<Result<ReadFile, ReadError>>>> =
        batch.iter().map(|_| Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(job) = batch.get(i) else { break };
                    let result = if crate::shutdown::requested() {
                        Err(ReadError::Stopped)
                    } else {
                        read_one(job, staging)
                    };
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(Err(ReadError::Unreadable("not read".into())))
        })
        .collect()
}

fn read_one(job: &JobRecord, staging: Option<&Path>) -> Result<ReadFile, ReadError> {
    let path = &job.source_path;
    let file = match fsops::open_nofollow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Vanished),
        // Replaced by a link since it was found: never followed.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(ReadError::Unreadable(format!(
                "{} is a symlink now; keepsake never follows links in an inbox",
                path.display()
            )));
        }
        Err(e) => {
            return Err(ReadError::Unreadable(format!(
                "cannot read {}: {e}; fix its permissions, then `keepsake retry {}`",
                path.display(),
                job.id
            )));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| ReadError::Unreadable(format!("cannot stat {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(ReadError::Unreadable(format!(
            "{} is no longer a regular file",
            path.display()
        )));
    }
    let as_found = |meta: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        meta.len() == job.size
            && crate::discover::mtime_ns(meta) == job.mtime_ns
            && meta.ino() == job.inode
    };
    if !as_found(&meta) {
        return Err(ReadError::Changed);
    }
    let (hashes, staged) = match staging {
        Some(dir) => {
            let staged = dir.join(format!("{}.tmp", job.id));
            let copied = fsops::create_staging(&staged).and_then(|mut out| {
                let hashes = hash_and_copy(Stoppable(&file), meta.len(), Some(&mut out))?;
                Ok(hashes)
            });
            match copied {
                Ok(hashes) => (hashes, Some(staged)),
                Err(_) if crate::shutdown::requested() => {
                    let _ = fsops::remove_temp(&staged);
                    return Err(ReadError::Stopped);
                }
                Err(e) => {
                    let _ = fsops::remove_temp(&staged);
                    let hint = if e.kind() == std::io::ErrorKind::StorageFull {
                        "; the disk is full: free space on it, then `keepsake retry --failed`"
                    } else {
                        ""
                    };
                    return Err(ReadError::Unreadable(format!(
                        "cannot read {} into {}: {e}{hint}",
                        path.display(),
                        dir.display()
                    )));
                }
            }
        }
        None => (
            hash_reader(&file, meta.len()).map_err(|e| {
                ReadError::Unreadable(format!("cannot read {}: {e}", path.display()))
            })?,
            None,
        ),
    };
    // Written to while it was read: the hashes may mix two versions.
    if !file.metadata().is_ok_and(|meta| as_found(&meta)) {
        if let Some(staged) = &staged {
            let _ = fsops::remove_temp(staged);
        }
        return Err(ReadError::Changed);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = media::refine_tiff(media::sniff(&hashes.head), &name);
    Ok(ReadFile {
        hashes,
        staged,
        kind,
        file: Arc::new(file),
    })
}
