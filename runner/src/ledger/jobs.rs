//! Jobs, the fingerprints of inbox files, steps, assets and stage key-values.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{JobState, now};

/// A file found in an inbox, before keepsake has read it.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub inbox: String,
    pub rel_path: Vec<u8>,
    pub source_path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub companions: Vec<String>,
    /// Decided without running stages (e.g. an orphan sidecar): state and reason.
    pub settled: Option<(JobState, String)>,
}

/// The fingerprint of an inbox file the ledger has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: u64,
    pub inbox: String,
    pub rel_path: Vec<u8>,
    pub source_path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub companions: Vec<String>,
    pub state: JobState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub reason: Option<String>,
    pub blake3: Option<String>,
    pub sha1: Option<String>,
    pub media_kind: Option<String>,
    pub capture_time: Option<String>,
    pub capture_source: Option<String>,
    pub dest_path: Option<String>,
    pub duplicate_of: Option<u64>,
    pub updated_at: i64,
    /// What stages recorded (JSON object).
    pub facts: String,
    /// When a deferred job runs again (Unix seconds).
    pub wake_at: Option<i64>,
    /// Read from its quarantine copy (the inbox file is gone): nothing
    /// leaves an inbox for it, and the quarantine copy stays.
    pub from_quarantine: bool,
    /// Where its companions are, when not beside `source_path` (the inbox
    /// folder of a job read from its quarantine copy).
    pub companions_in: Option<PathBuf>,
}

impl JobRecord {
    /// The folder its companions (sidecars) are found in.
    pub fn companion_dir(&self) -> PathBuf {
        self.companions_in
            .clone()
            .or_else(|| self.source_path.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    }
}

const JOB_COLUMNS: &str = "id, inbox, rel_path, source_path, size, mtime_ns, inode, companions, \
    state, attempts, last_error, reason, blake3, sha1, media_kind, capture_time, capture_source, \
    dest_path, duplicate_of, updated_at, facts, wake_at";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let state: String = row.get(8)?;
    let companions: String = row.get(7)?;
    let source: Vec<u8> = row.get(3)?;
    Ok(JobRecord {
        id: row.get(0)?,
        inbox: row.get(1)?,
        rel_path: row.get(2)?,
        source_path: PathBuf::from(std::ffi::OsStr::from_bytes(&source)),
        size: row.get(4)?,
        mtime_ns: row.get(5)?,
        inode: row.get(6)?,
        companions: serde_json::from_str(&companions).unwrap_or_default(),
        state: JobState::from_sql(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Text,
                format!("unknown job state {state:?}").into(),
            )
        })?,
        attempts: row.get(9)?,
        last_error: row.get(10)?,
        reason: row.get(11)?,
        blake3: row.get(12)?,
        sha1: row.get(13)?,
        media_kind: row.get(14)?,
        capture_time: row.get(15)?,
        capture_source: row.get(16)?,
        dest_path: row.get(17)?,
        duplicate_of: row.get(18)?,
        updated_at: row.get(19)?,
        facts: row.get(20)?,
        wake_at: row.get(21)?,
        from_quarantine: false,
        companions_in: None,
    })
}

pub fn fingerprint(
    conn: &Connection,
    inbox: &str,
    rel_path: &[u8],
) -> rusqlite::Result<Option<Fingerprint>> {
    conn.prepare_cached(
        "SELECT size, mtime_ns, inode FROM sources WHERE inbox = ?1 AND rel_path = ?2",
    )?
    .query_row(params![inbox, rel_path], |r| {
        Ok(Fingerprint {
            size: r.get(0)?,
            mtime_ns: r.get(1)?,
            inode: r.get(2)?,
        })
    })
    .optional()
}

/// The fingerprints of every file an inbox's jobs took, by relative path.
pub fn fingerprints_of(
    conn: &Connection,
    inbox: &str,
) -> rusqlite::Result<std::collections::HashMap<Vec<u8>, Fingerprint>> {
    conn.prepare_cached("SELECT rel_path, size, mtime_ns, inode FROM sources WHERE inbox = ?1")?
        .query_map([inbox], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                Fingerprint {
                    size: r.get(1)?,
                    mtime_ns: r.get(2)?,
                    inode: r.get(3)?,
                },
            ))
        })?
        .collect()
}

/// Record a new job for a file and remember its fingerprint.
pub fn insert_job(conn: &Connection, job: &NewJob) -> rusqlite::Result<u64> {
    let now = now();
    let (state, reason) = match &job.settled {
        Some((state, reason)) => (state.as_sql(), Some(reason.as_str())),
        None => (JobState::Pending.as_sql(), None),
    };
    conn.prepare_cached(
        "INSERT INTO jobs (inbox, rel_path, source_path, size, mtime_ns, inode, companions, state, \
         reason, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?
    .execute(params![
        job.inbox,
        job.rel_path,
        job.source_path.as_os_str().as_bytes(),
        job.size,
        job.mtime_ns,
        job.inode,
        serde_json::to_string(&job.companions).unwrap_or_else(|_| "[]".into()),
        state,
        reason,
        now,
    ])?;
    let id = conn.last_insert_rowid() as u64;
    // The file changed while its earlier job was still waiting or failed:
    // the new job takes it, the old one stands down (and says why).
    debug_assert!(
        [JobState::Pending, JobState::Failed, JobState::Deferred]
            .into_iter()
            .all(|from| JobState::Skipped.may_follow(from))
    );
    conn.prepare_cached(
        "UPDATE jobs SET state = 'skipped', reason = ?3, updated_at = ?4 \
         WHERE id = (SELECT job_id FROM sources WHERE inbox = ?1 AND rel_path = ?2) \
         AND state IN ('pending', 'failed', 'deferred')",
    )?
    .execute(params![
        job.inbox,
        job.rel_path,
        format!("the file changed before this job finished; job {id} takes it"),
        now
    ])?;
    conn.prepare_cached(
        "INSERT INTO sources (inbox, rel_path, size, mtime_ns, inode, job_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (inbox, rel_path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, \
         inode = excluded.inode, job_id = excluded.job_id",
    )?
    .execute(params![job.inbox, job.rel_path, job.size, job.mtime_ns, job.inode, id])?;
    Ok(id)
}

pub fn job(conn: &Connection, id: u64) -> rusqlite::Result<Option<JobRecord>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_from_row)
        .optional()
}

/// Pending jobs with an id above `after`, oldest first.
pub fn pending_jobs(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<JobRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'pending' AND id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    stmt.query_map(params![after, limit as i64], job_from_row)?
        .collect()
}

pub fn jobs_in_state(
    conn: &Connection,
    state: Option<JobState>,
) -> rusqlite::Result<Vec<JobRecord>> {
    match state {
        Some(state) => conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = ?1 ORDER BY id"
            ))?
            .query_map([state.as_sql()], job_from_row)?
            .collect(),
        None => conn
            .prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id"))?
            .query_map([], job_from_row)?
            .collect(),
    }
}

/// Every job of these inboxes, in id order.
pub fn jobs_of_inboxes(conn: &Connection, inboxes: &[String]) -> rusqlite::Result<Vec<JobRecord>> {
    if inboxes.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; inboxes.len()].join(", ");
    conn.prepare(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE inbox IN ({marks}) ORDER BY id"
    ))?
    .query_map(rusqlite::params_from_iter(inboxes), job_from_row)?
    .collect()
}

pub fn state_counts(conn: &Connection) -> rusqlite::Result<Vec<(JobState, u64)>> {
    let mut counts: Vec<(JobState, u64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_sql() == state) {
            slot.1 = n;
        }
    }
    Ok(counts)
}

/// Put failed and deferred jobs (or one job, also quarantined or skipped)
/// back in the queue now. Returns how many.
pub fn retry(conn: &Connection, job: Option<u64>) -> rusqlite::Result<usize> {
    debug_assert!(
        [
            JobState::Failed,
            JobState::Deferred,
            JobState::Quarantined,
            JobState::Skipped
        ]
        .into_iter()
        .all(|from| JobState::Pending.may_follow(from))
    );
    match job {
        Some(id) => conn.execute(
            "UPDATE jobs SET state = 'pending', wake_at = NULL, updated_at = ?2 WHERE id = ?1 \
             AND state IN ('failed', 'deferred', 'quarantined', 'skipped')",
            params![id, now()],
        ),
        None => conn.execute(
            "UPDATE jobs SET state = 'pending', wake_at = NULL, updated_at = ?1 \
             WHERE state IN ('failed', 'deferred')",
            [now()],
        ),
    }
}

/// How the service retries failed jobs: after `base`, then twice as long
/// each time up to `cap`, at most `max_attempts` runs in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub max_attempts: u32,
    pub base_secs: i64,
    pub cap_secs: i64,
}

impl Backoff {
    /// Seconds to wait after the `attempts`-th failed run.
    pub fn delay(&self, attempts: u32) -> i64 {
        let doublings = attempts.saturating_sub(1).min(30);
        self.base_secs
            .saturating_mul(1i64 << doublings)
            .min(self.cap_secs)
    }

    /// When a job failed at `updated_at` after `attempts` runs runs again,
    /// or None when it has used all its attempts.
    pub fn next_run(&self, attempts: u32, updated_at: i64) -> Option<i64> {
        (attempts < self.max_attempts).then(|| updated_at + self.delay(attempts))
    }
}

/// (job id, when it runs again) of every failed or deferred job that will:
/// a deferred job at its wake time, a failed one after its backoff.
fn wake_times(conn: &Connection, backoff: &Backoff) -> rusqlite::Result<Vec<(u64, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, state, attempts, updated_at, wake_at FROM jobs WHERE state IN ('failed', 'deferred')",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, u64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u32>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    let mut times = Vec::new();
    for row in rows {
        let (id, state, attempts, updated_at, wake_at) = row?;
        let at = match JobState::from_sql(&state) {
            Some(JobState::Deferred) => Some(wake_at.unwrap_or(updated_at)),
            _ => backoff.next_run(attempts, updated_at),
        };
        if let Some(at) = at {
            times.push((id, at));
        }
    }
    Ok(times)
}

/// Queue again the failed jobs whose backoff has passed and the deferred
/// jobs whose time has come. Returns how many.
pub fn wake_due(conn: &Connection, now: i64, backoff: &Backoff) -> rusqlite::Result<usize> {
    let due: Vec<u64> = wake_times(conn, backoff)?
        .into_iter()
        .filter(|(_, at)| *at <= now)
        .map(|(id, _)| id)
        .collect();
    // `wake_times` read only failed and deferred jobs.
    debug_assert!(
        [JobState::Failed, JobState::Deferred]
            .into_iter()
            .all(|from| JobState::Pending.may_follow(from))
    );
    let mut update = conn.prepare_cached(
        "UPDATE jobs SET state = 'pending', wake_at = NULL, updated_at = ?2 WHERE id = ?1",
    )?;
    for id in &due {
        update.execute(params![id, now])?;
    }
    Ok(due.len())
}

/// The earliest time a failed or deferred job wakes, if any will.
pub fn next_wake(conn: &Connection, backoff: &Backoff) -> rusqlite::Result<Option<i64>> {
    Ok(wake_times(conn, backoff)?
        .into_iter()
        .map(|(_, at)| at)
        .min())
}

pub fn pending_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM jobs WHERE state = 'pending'")?
        .query_row([], |r| r.get(0))
}

/// Jobs per inbox and state.
pub fn inbox_counts(conn: &Connection) -> rusqlite::Result<Vec<(String, JobState, u64)>> {
    let mut stmt = conn
        .prepare("SELECT inbox, state, COUNT(*) FROM jobs GROUP BY inbox, state ORDER BY inbox")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (inbox, state, n) = row?;
        if let Some(state) = JobState::from_sql(&state) {
            out.push((inbox, state, n));
        }
    }
    Ok(out)
}

/// What a running service publishes for `keepsake status`.
pub fn set_service_state(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO service_state (key, value) VALUES (?1, ?2) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// The `service_state` key of the device an inbox's files were last found on.
pub fn inbox_device_key(inbox: &str) -> String {
    format!("inbox_dev:{inbox}")
}

/// Count a change to what the library holds (`verdict_changes` in
/// `service_state`), in the transaction that makes it: the archive's
/// verdicts compare the count before and after a plan, in this process or
/// another, and keep none made across a change.
pub fn count_change(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO service_state (key, value) VALUES ('verdict_changes', '1') \
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
    )?
    .execute([])?;
    Ok(())
}

/// The changes counted by [`count_change`] so far.
pub fn change_count(conn: &Connection) -> rusqlite::Result<u64> {
    count_of(conn, "verdict_changes")
}

/// `unvoided`'s job that stands for every year.
pub const EVERY_YEAR: u64 = 0;

/// Job `job_id`'s change is committed and its verdicts not voided yet;
/// whether the row is new (it was not listed already).
pub fn note_unvoided(conn: &Connection, job_id: u64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("INSERT OR IGNORE INTO unvoided (job_id) VALUES (?1)")?
        .execute([job_id])?
        == 1)
}

/// The jobs whose changes' verdicts are not voided yet.
pub fn unvoided_jobs(conn: &Connection) -> rusqlite::Result<Vec<u64>> {
    conn.prepare("SELECT job_id FROM unvoided ORDER BY job_id")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// The verdicts of these jobs' changes are voided.
pub fn clear_unvoided(conn: &Connection, jobs: &[u64]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("DELETE FROM unvoided WHERE job_id = ?1")?;
    for job in jobs {
        stmt.execute([job])?;
    }
    Ok(())
}

fn count_of(conn: &Connection, key: &str) -> rusqlite::Result<u64> {
    Ok(conn
        .prepare_cached("SELECT value FROM service_state WHERE key = ?1")?
        .query_row([key], |r| r.get::<_, String>(0))
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Forget a key `status` shows; whether it was there.
pub fn clear_service_state(conn: &Connection, key: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM service_state WHERE key = ?1", [key])? > 0)
}

pub fn service_state(
    conn: &Connection,
) -> rusqlite::Result<std::collections::BTreeMap<String, String>> {
    let mut stmt = conn.prepare("SELECT key, value FROM service_state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    rows.collect()
}

/// What the host learned reading the file.
pub fn set_hashes(
    conn: &Connection,
    id: u64,
    blake3: &str,
    sha1: &str,
    media_kind: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET blake3 = ?2, sha1 = ?3, media_kind = ?4, updated_at = ?5 WHERE id = ?1",
    )?
    .execute(params![id, blake3, sha1, media_kind, now()])?;
    Ok(())
}

/// The decisions stages made that the ledger keeps for `status` and `jobs`.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub reason: Option<String>,
    pub capture_time: Option<String>,
    pub capture_source: Option<String>,
    pub capture_confidence: Option<String>,
    pub dest_path: Option<String>,
    pub duplicate_of: Option<u64>,
    pub facts: String,
    /// Deferred: when to run again (Unix seconds).
    pub wake_at: Option<i64>,
}

pub fn finish_job(
    conn: &Connection,
    id: u64,
    state: JobState,
    outcome: &Outcome,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET state = ?2, reason = ?3, capture_time = ?4, capture_source = ?5, \
         capture_confidence = ?6, dest_path = ?7, duplicate_of = ?8, facts = ?9, last_error = NULL, \
         attempts = attempts + (?2 != 'deferred'), updated_at = ?10, wake_at = ?11 WHERE id = ?1",
    )?
    .execute(params![
        id,
        state.as_sql(),
        outcome.reason,
        outcome.capture_time,
        outcome.capture_source,
        outcome.capture_confidence,
        outcome.dest_path,
        outcome.duplicate_of,
        if outcome.facts.is_empty() { "{}" } else { outcome.facts.as_str() },
        now(),
        outcome.wake_at,
    ])?;
    Ok(())
}

/// Put a job whose journaled writes were rolled back (`effects::recover`)
/// back in the queue. Its previous state is not checked (in practice
/// `pending`); `wake_at` and `attempts` stay as they are.
pub fn requeue_job(conn: &Connection, id: u64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE jobs SET state = 'pending', updated_at = ?2 WHERE id = ?1",
        params![id, now()],
    )?;
    Ok(())
}

pub fn fail_job(conn: &Connection, id: u64, error: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE jobs SET state = 'failed', last_error = ?2, attempts = attempts + 1, updated_at = ?3 WHERE id = ?1",
    )?
    .execute(params![id, error, now()])?;
    Ok(())
}

/// One stage call, as the `steps` table keeps it.
pub struct Step<'a> {
    pub job_id: u64,
    pub attempt: u32,
    pub stage: &'a str,
    pub effects_json: &'a str,
    pub error: Option<&'a str>,
    pub micros: u64,
    pub bytes_read: u64,
}

pub fn record_step(conn: &Connection, step: &Step<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO steps (job_id, attempt, stage, outcome, effects, error, micros, bytes_read, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        step.job_id,
        step.attempt,
        step.stage,
        if step.error.is_some() { "error" } else { "ok" },
        step.effects_json,
        step.error,
        step.micros,
        step.bytes_read,
        now()
    ])?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRow {
    pub job_id: u64,
    /// The original's BLAKE3 (dedup identity).
    pub blake3: String,
    /// The BLAKE3 of the copy's own bytes (differs with embedded XMP).
    pub copy_blake3: String,
    pub library_path: String,
    /// `library` or `archive`: the root the copy lives under.
    pub root: String,
}

const ASSET_ROW: &str =
    "SELECT job_id, blake3, COALESCE(library_blake3, blake3), library_path, root FROM assets";

pub fn asset_by_hash(conn: &Connection, blake3: &str) -> rusqlite::Result<Option<AssetRow>> {
    asset_where(conn, &format!("{ASSET_ROW} WHERE blake3 = ?1"), blake3)
}

pub fn asset_by_path(conn: &Connection, library_path: &str) -> rusqlite::Result<Option<AssetRow>> {
    asset_where(
        conn,
        &format!("{ASSET_ROW} WHERE library_path = ?1"),
        library_path,
    )
}

pub fn asset_by_job(conn: &Connection, job_id: u64) -> rusqlite::Result<Option<AssetRow>> {
    asset_where(
        conn,
        &format!("{ASSET_ROW} WHERE job_id = ?1"),
        &job_id.to_string(),
    )
}

fn asset_where(conn: &Connection, sql: &str, value: &str) -> rusqlite::Result<Option<AssetRow>> {
    conn.prepare_cached(sql)?
        .query_row([value], |r| {
            Ok(AssetRow {
                job_id: r.get(0)?,
                blake3: r.get(1)?,
                copy_blake3: r.get(2)?,
                library_path: r.get(3)?,
                root: r.get(4)?,
            })
        })
        .optional()
}

pub struct NewAsset<'a> {
    pub job_id: u64,
    pub blake3: &'a str,
    pub sha1: &'a str,
    pub size: u64,
    pub media_kind: &'a str,
    pub capture_time: Option<&'a str>,
    pub capture_source: Option<&'a str>,
    pub library_path: &'a str,
    /// The copy's own BLAKE3 when it differs from `blake3`.
    pub library_blake3: Option<&'a str>,
}

pub fn insert_asset(conn: &Connection, asset: &NewAsset<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO assets (job_id, blake3, sha1, size, media_kind, capture_time, capture_source, \
         library_path, created_at, library_blake3) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        asset.job_id,
        asset.blake3,
        asset.sha1,
        asset.size,
        asset.media_kind,
        asset.capture_time,
        asset.capture_source,
        asset.library_path,
        now(),
        asset.library_blake3.filter(|copy| *copy != asset.blake3)
    ])?;
    Ok(())
}

pub fn asset_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM assets", [], |r| r.get(0))
}

pub fn kv_get(conn: &Connection, stage: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM kv WHERE stage = ?1 AND key = ?2")?
        .query_row([stage, key], |r| r.get(0))
        .optional()
}

/// (keys, bytes of keys and values) a stage keeps. An empty value is how a
/// stage clears a key (the contract has no delete): it does not count.
pub fn kv_usage(conn: &Connection, stage: &str) -> rusqlite::Result<(u64, u64)> {
    conn.prepare_cached(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(value)), 0) FROM kv \
         WHERE stage = ?1 AND LENGTH(value) > 0",
    )?
    .query_row([stage], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// The bytes one pair takes, if it exists and is not cleared.
pub fn kv_size(conn: &Connection, stage: &str, key: &str) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached(
        "SELECT LENGTH(CAST(key AS BLOB)) + LENGTH(value) FROM kv \
         WHERE stage = ?1 AND key = ?2 AND LENGTH(value) > 0",
    )?
    .query_row([stage, key], |r| r.get(0))
    .optional()
}

pub fn kv_set(conn: &Connection, stage: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (stage, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (stage, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![stage, key, value])?;
    Ok(())
}
