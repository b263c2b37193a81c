//! Offsite pushes: what is to be copied where, and how far it got.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{PushState, now};

/// A push the plan of a job asks for, recorded when the job is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPush {
    pub target: String,
    pub key: String,
    /// Library-relative path of the file to push.
    pub file: String,
    pub blake3: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct PushRow {
    pub id: u64,
    pub job_id: u64,
    pub target: String,
    pub key: String,
    pub file: String,
    pub blake3: String,
    pub size: u64,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub etag: Option<String>,
    pub pushed_at: Option<i64>,
    pub wake_at: Option<i64>,
    /// An S3 multipart upload begun and not finished.
    pub upload_id: Option<String>,
    /// For an encrypted target: (BLAKE3, size) of the ciphertext sent.
    pub sealed: Option<(String, u64)>,
}

impl PushRow {
    /// The key the target holds: encrypted objects carry `.age`.
    pub fn remote_key(&self) -> String {
        if self.sealed.is_some() {
            format!("{}.age", self.key)
        } else {
            self.key.clone()
        }
    }

    /// (BLAKE3, size) of the object the target holds.
    pub fn remote_content(&self) -> (&str, u64) {
        match &self.sealed {
            Some((blake3, size)) => (blake3, *size),
            None => (&self.blake3, self.size),
        }
    }
}

const COLUMNS: &str = "id, job_id, target, key, file, blake3, size, state, attempts, last_error, etag, pushed_at, wake_at, upload_id, sealed_blake3, sealed_size";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PushRow> {
    Ok(PushRow {
        id: r.get(0)?,
        job_id: r.get(1)?,
        target: r.get(2)?,
        key: r.get(3)?,
        file: r.get(4)?,
        blake3: r.get(5)?,
        size: r.get(6)?,
        state: r.get(7)?,
        attempts: r.get(8)?,
        last_error: r.get(9)?,
        etag: r.get(10)?,
        pushed_at: r.get(11)?,
        wake_at: r.get(12)?,
        upload_id: r.get(13)?,
        sealed: match (
            r.get::<_, Option<String>>(14)?,
            r.get::<_, Option<u64>>(15)?,
        ) {
            (Some(blake3), Some(size)) => Some((blake3, size)),
            _ => None,
        },
    })
}

/// Note the multipart upload now in progress for push `id` (None: finished
/// or aborted).
pub fn set_upload_id(conn: &Connection, id: u64, upload_id: Option<&str>) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE pushes SET upload_id = ?2 WHERE id = ?1")?
        .execute(params![id, upload_id])?;
    Ok(())
}

/// Note the ciphertext (BLAKE3, size) about to be sent for push `id`, or
/// that the push is no longer encrypted.
pub fn set_sealed(conn: &Connection, id: u64, sealed: Option<(&str, u64)>) -> rusqlite::Result<()> {
    let (blake3, size) = sealed.unzip();
    conn.prepare_cached("UPDATE pushes SET sealed_blake3 = ?2, sealed_size = ?3 WHERE id = ?1")?
        .execute(params![id, blake3, size])?;
    Ok(())
}

/// Record a push (once per target, key and bytes: a replayed job adds nothing).
pub fn insert_push(conn: &Connection, job_id: u64, push: &NewPush) -> rusqlite::Result<()> {
    let now = now();
    conn.prepare_cached(
        "INSERT INTO pushes (job_id, target, key, file, blake3, size, state, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7) ON CONFLICT (target, key, blake3) DO NOTHING",
    )?
    .execute(params![
        job_id,
        push.target,
        push.key,
        push.file,
        push.blake3,
        push.size,
        now
    ])?;
    Ok(())
}

/// Pushes to run now: pending, and deferred ones whose time has come.
/// With `now_all`, every deferred push too, whatever its wake time.
pub fn due_pushes(
    conn: &Connection,
    after: u64,
    limit: usize,
    now_all: bool,
) -> rusqlite::Result<Vec<PushRow>> {
    let until = if now_all { i64::MAX } else { now() };
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM pushes WHERE id > ?1 AND (state = 'pending' \
         OR (state = 'deferred' AND COALESCE(wake_at, 0) <= ?2)) ORDER BY id LIMIT ?3"
    ))?
    .query_map(params![after, until, limit as i64], from_row)?
    .collect()
}

/// Whether any of `targets` has a push to run now (rows of targets no
/// longer in the config wait, and do not wake the pusher).
pub fn has_due_pushes(conn: &Connection, targets: &[&str]) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT target FROM pushes WHERE state = 'pending' \
         OR (state = 'deferred' AND COALESCE(wake_at, 0) <= ?1)",
    )?;
    let due = stmt.query_map([now()], |r| r.get::<_, String>(0))?;
    for target in due {
        if targets.contains(&target?.as_str()) {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn pushes_of(
    conn: &Connection,
    target: Option<&str>,
    state: Option<&str>,
) -> rusqlite::Result<Vec<PushRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM pushes WHERE (?1 IS NULL OR target = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY id"
    ))?
    .query_map(params![target, state], from_row)?
    .collect()
}

/// How a push attempt ended.
#[derive(Debug, Clone)]
pub enum PushOutcome {
    Done {
        etag: Option<String>,
    },
    /// The target could not take it now: try again at `wake_at`.
    Deferred {
        error: String,
        wake_at: i64,
    },
    /// The key holds other bytes: never overwritten, reported.
    Conflict(String),
}

pub fn record_push(conn: &Connection, id: u64, outcome: &PushOutcome) -> rusqlite::Result<()> {
    let now = now();
    if cfg!(debug_assertions) {
        let to = match outcome {
            PushOutcome::Done { .. } => PushState::Done,
            PushOutcome::Deferred { .. } => PushState::Deferred,
            PushOutcome::Conflict(_) => PushState::Conflict,
        };
        // A missing row is left to the UPDATE (0 rows), as in release.
        let from: Option<String> = conn
            .prepare_cached("SELECT state FROM pushes WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if let Some(from) = from {
            debug_assert!(
                PushState::from_sql(&from).is_some_and(|from| to.may_follow(from)),
                "push {id}: {from:?} -> {to:?} is no transition of a push"
            );
        }
    }
    match outcome {
        PushOutcome::Done { etag } => conn
            .prepare_cached(
                "UPDATE pushes SET state = 'done', etag = ?2, pushed_at = ?3, last_error = NULL, \
                 wake_at = NULL, upload_id = NULL, attempts = attempts + 1, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, etag, now])?,
        PushOutcome::Deferred { error, wake_at } => conn
            .prepare_cached(
                "UPDATE pushes SET state = 'deferred', last_error = ?2, wake_at = ?3, \
                 attempts = attempts + 1, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, error, wake_at, now])?,
        PushOutcome::Conflict(error) => conn
            .prepare_cached(
                "UPDATE pushes SET state = 'conflict', last_error = ?2, attempts = attempts + 1, \
                 updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, error, now])?,
    };
    Ok(())
}

/// Per target: (state, count, bytes), and the last successful push.
pub fn push_summary(conn: &Connection) -> rusqlite::Result<Vec<(String, String, u64, u64)>> {
    conn.prepare(
        "SELECT target, state, COUNT(*), COALESCE(SUM(size), 0) FROM pushes GROUP BY target, state",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
    .collect()
}

pub fn last_push(conn: &Connection, target: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT MAX(pushed_at) FROM pushes WHERE target = ?1",
        [target],
        |r| r.get(0),
    )
}
