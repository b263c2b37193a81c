//! The ledger: one SQLite file (WAL, `synchronous=FULL`) holding jobs, the
//! steps stages took, assets, the effect journal and each stage's key-value
//! store. Migrations are plain `.sql` files applied in order at open.

pub(crate) mod immich;
pub(crate) mod ingest;
mod jobs;
mod journal;
pub(crate) mod kei;
mod moves;
mod placed;
mod pushes;
pub(crate) mod rebuild;
mod states;
pub(crate) mod writeback;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, Transaction};

pub use jobs::*;
pub use journal::*;
pub use moves::*;
pub use placed::*;
pub use pushes::*;
pub use states::*;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_step_bytes.sql"),
    include_str!("migrations/0003_service.sql"),
    include_str!("migrations/0004_pushes.sql"),
    include_str!("migrations/0005_push_resume.sql"),
    include_str!("migrations/0006_archive.sql"),
    include_str!("migrations/0007_placed_calls.sql"),
    include_str!("migrations/0008_writeback.sql"),
    include_str!("migrations/0009_library_blake3.sql"),
    include_str!("migrations/0010_journal_keeps.sql"),
    include_str!("migrations/0011_one_journal_protocol.sql"),
    include_str!("migrations/0012_unvoided.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the state folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "ledger {path} was written by a newer keepsake (schema {found}, this one knows {known}); upgrade keepsake"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("another keepsake is using {path}; stop it first (or wait for it to finish)")]
    Locked { path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the disk holding the ledger {path} is full: free space on it, then run keepsake again (nothing is lost: files not yet placed stay in their inbox)"
    )]
    DiskFull { path: PathBuf },
}

/// Bytes kept in `reserve` beside the ledger: freed when a disk fills, so
/// the ledger can still record the stop and `status` can still answer.
const RESERVE_BYTES: u64 = 8 << 20;

fn is_disk_full(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull
    )
}

pub struct Ledger {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// Open (creating and migrating when needed) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let sql = |source| LedgerError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        // FULL: a commit that lets keepsake act (an intent) or forget (done)
        // must survive a power cut.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(sql)?;
        migrate(&mut conn, path)?;
        if let Some(dir) = path.parent() {
            hold_reserve(&dir.join("reserve"));
        }
        Ok(Ledger {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (the transaction rolls back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Free the space held in reserve (a disk filled up): what keepsake
    /// records next still fits. It is taken again at the next open.
    pub fn hold_reserve(&self) {
        if let Some(dir) = self.path.parent() {
            hold_reserve(&dir.join("reserve"));
        }
    }

    pub fn release_reserve(&self) {
        if let Some(dir) = self.path.parent() {
            let reserve = dir.join("reserve");
            if reserve.exists() {
                tracing::warn!("a disk is full; the ledger's reserve is freed to record the stop");
                let _ = crate::effects::fsops::remove_temp(&reserve);
            }
        }
    }

    fn error(&self, source: rusqlite::Error) -> LedgerError {
        if is_disk_full(&source) {
            self.release_reserve();
            return LedgerError::DiskFull {
                path: self.path.clone(),
            };
        }
        LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Run `f` on the connection.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, LedgerError> {
        f(&self.conn()).map_err(|source| self.error(source))
    }

    /// Run `f` in one transaction, committed when it returns `Ok`.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
    ) -> Result<R, LedgerError> {
        let mut conn = self.conn();
        let result = (|| {
            let tx = conn.transaction()?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        result.map_err(|source| self.error(source))
    }
}

/// Make sure `path` holds [`RESERVE_BYTES`] of real (allocated) space; a
/// disk too full for it goes without.
fn hold_reserve(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= RESERVE_BYTES) {
        return;
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
    else {
        return;
    };
    let allocated =
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES)
            .map_err(std::io::Error::from)
            .or_else(|_| {
                // No fallocate (some FUSE and network filesystems): zeros.
                use std::io::Write;
                let mut file = &file;
                let zeros = vec![0u8; 1 << 20];
                (0..RESERVE_BYTES >> 20).try_for_each(|_| file.write_all(&zeros))
            });
    if allocated.is_err() {
        drop(file);
        let _ = crate::effects::fsops::remove_temp(path);
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), LedgerError> {
    let sql = |source| LedgerError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(LedgerError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    if version == known {
        return Ok(());
    }
    // Every pending step in one transaction: a new ledger costs one commit,
    // and an upgrade cut off half-way leaves the old version whole.
    let tx = conn.transaction().map_err(sql)?;
    for migration in &MIGRATIONS[version as usize..] {
        tx.execute_batch(migration).map_err(sql)?;
    }
    tx.pragma_update(None, "user_version", known).map_err(sql)?;
    tx.commit().map_err(sql)
}

/// An exclusive lock on the state folder, held while keepsake writes to it,
/// so a second `ingest` or `run` refuses to start instead of racing the first.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LedgerError> {
        Self::acquire_named(state_dir, "lock")
    }

    /// The lock held while offsite pushes run: `keepsake offsite push` and
    /// a running service never push at the same time.
    pub fn acquire_push(state_dir: &Path) -> Result<StateLock, LedgerError> {
        Self::acquire_named(state_dir, "push.lock")
    }

    fn acquire_named(state_dir: &Path, name: &str) -> Result<StateLock, LedgerError> {
        std::fs::create_dir_all(state_dir).map_err(|source| LedgerError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LedgerError::Lock {
                path: path.clone(),
                source,
            })?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LedgerError::Locked {
                path: state_dir.to_path_buf(),
            }),
            Err(e) => Err(LedgerError::Lock {
                path,
                source: e.into(),
            }),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
