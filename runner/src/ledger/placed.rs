//! The placed-phase queue (`placed_calls`): one row per job and stage that
//! runs after the file is in the library (Immich).

use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// Put a stage's deferred and failed calls back in the queue, due now
/// (the person asked for now, whatever their next try). How many.
pub fn wake_placed_calls(tx: &Transaction<'_>, stage: &str) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE placed_calls SET state = 'pending', wake_at = NULL, attempts = 0 \
         WHERE stage = ?1 AND state IN ('deferred', 'failed')",
        [stage],
    )
}

/// The newest asset's id (0 for none): how far the queue can be filled.
pub fn max_asset_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM assets", [], |r| r.get(0))
}

/// Queue a call of `stage` for every done job of `inbox` whose asset id is
/// in `(from, to]` and has none yet. How many were queued.
pub fn queue_placed_calls(
    conn: &Connection,
    inbox: &str,
    stage: &str,
    now: i64,
    from: i64,
    to: i64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT OR IGNORE INTO placed_calls (job_id, stage, state, created_at, updated_at) \
         SELECT j.id, ?2, 'pending', ?3, ?3 FROM assets a JOIN jobs j ON j.id = a.job_id \
         WHERE a.id > ?4 AND a.id <= ?5 AND j.inbox = ?1 AND j.state = 'done'",
        params![inbox, stage, now, from, to],
    )
}

/// The due calls of a stage: pending or woken, Live Photo videos before
/// their stills (a still is uploaded with its video's id), then by job;
/// at most `limit`. (call id, job id, attempts).
pub fn due_placed_calls(
    conn: &Connection,
    stage: &str,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, u64, u32)>> {
    let mut stmt = conn.prepare(
        "SELECT p.id, p.job_id, p.attempts FROM placed_calls p JOIN jobs j ON j.id = p.job_id \
         WHERE p.stage = ?1 AND (p.state = 'pending' OR (p.state = 'deferred' AND p.wake_at <= ?2)) \
         ORDER BY json_extract(j.facts, '$.\"live.still_job\"') IS NULL, p.attempts, p.job_id LIMIT ?3",
    )?;
    stmt.query_map(params![stage, now, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?
    .collect()
}

/// Whether a call of `stage` is pending, or deferred and due by `now`.
pub fn placed_call_due(conn: &Connection, stage: &str, now: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM placed_calls WHERE stage = ?1 AND state = 'pending') \
         OR EXISTS (SELECT 1 FROM placed_calls WHERE stage = ?1 AND state = 'deferred' AND wake_at <= ?2)",
        params![stage, now],
        |r| r.get::<_, bool>(0),
    )
}

/// Hold back every pending call of `stage` (and those deferred to wake
/// before `wake`) until `wake`: its server said "later".
pub fn defer_placed_stage(
    conn: &Connection,
    stage: &str,
    wake: i64,
    now: i64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE placed_calls SET state = 'deferred', wake_at = ?2, updated_at = ?3 \
         WHERE stage = ?1 AND (state = 'pending' OR (state = 'deferred' AND wake_at < ?2))",
        params![stage, wake, now],
    )
}

/// What one call came to: its state, why (when not done), when it runs
/// again, the requests it sent, and whether it counts as a try.
pub fn record_placed_call(
    conn: &Connection,
    call_id: i64,
    state: &str,
    error: Option<&str>,
    wake_at: Option<i64>,
    requests: u64,
    attempt: bool,
) -> rusqlite::Result<usize> {
    if cfg!(debug_assertions) {
        let from: Option<String> = conn
            .prepare_cached("SELECT state FROM placed_calls WHERE id = ?1")?
            .query_row([call_id], |r| r.get(0))
            .optional()?;
        if let Some(from) = from {
            let (from, to) = (
                super::CallState::from_sql(&from),
                super::CallState::from_sql(state),
            );
            debug_assert!(
                matches!((from, to), (Some(from), Some(to)) if to.may_follow(from)),
                "placed call {call_id}: {from:?} -> {state:?} is no transition of a call"
            );
        }
    }
    conn.execute(
        "UPDATE placed_calls SET state = ?2, last_error = ?3, wake_at = ?4, \
         attempts = attempts + ?7, requests = requests + ?5, \
         done_at = CASE WHEN ?2 = 'done' THEN ?6 ELSE done_at END, updated_at = ?6 \
         WHERE id = ?1",
        params![
            call_id,
            state,
            error,
            wake_at,
            requests,
            super::now(),
            u32::from(attempt)
        ],
    )
}

/// Merge facts a call's stage set into the call's own.
pub fn save_placed_facts(
    conn: &Connection,
    call_id: i64,
    facts: &[(String, String)],
) -> rusqlite::Result<()> {
    if facts.is_empty() {
        return Ok(());
    }
    let old: String = conn.query_row(
        "SELECT facts FROM placed_calls WHERE id = ?1",
        [call_id],
        |r| r.get(0),
    )?;
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&old).unwrap_or_default();
    for (k, v) in facts {
        map.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    conn.execute(
        "UPDATE placed_calls SET facts = ?2 WHERE id = ?1",
        params![call_id, serde_json::Value::Object(map).to_string()],
    )?;
    Ok(())
}

/// A job's library copy as the placed phase reads it: (path below its
/// root, the root, SHA-1, capture time).
pub type PlacedAsset = (String, String, String, Option<String>);

/// A job's library copy, for the placed phase.
pub fn placed_asset(conn: &Connection, job_id: u64) -> rusqlite::Result<Option<PlacedAsset>> {
    conn.query_row(
        "SELECT library_path, root, sha1, capture_time FROM assets WHERE job_id = ?1",
        [job_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
}

/// The done video of the Live Photo whose still is job `still_job`.
pub fn live_video_of(conn: &Connection, still_job: u64) -> rusqlite::Result<Option<u64>> {
    conn.query_row(
        "SELECT id FROM jobs WHERE json_extract(facts, '$.\"live.still_job\"') = ?1 AND state = 'done' LIMIT 1",
        [still_job],
        |r| r.get(0),
    )
    .optional()
}

/// The job that placed these bytes and where its copy is, for a stage's
/// `find-by-hash`.
pub fn placed_by_hash(
    conn: &Connection,
    blake3: &str,
) -> rusqlite::Result<Option<(u64, Option<String>)>> {
    conn.query_row(
        "SELECT job_id, library_path FROM assets WHERE blake3 = ?1",
        [blake3],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}
