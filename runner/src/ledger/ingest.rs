//! What an ingest asks the ledger beyond jobs and assets: Live Photo stills
//! placed by earlier runs, the finished job behind a file still in an
//! inbox, and the files of an inbox already taken.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension, params};

/// The first done still (not a video) whose exif recorded this Live Photo
/// content id: (job id, where it was placed). An error when there is none.
pub fn still_by_content_id(conn: &Connection, content_id: &str) -> rusqlite::Result<(u64, String)> {
    conn.query_row(
        "SELECT id, dest_path FROM jobs WHERE state = 'done' AND media_kind != 'video' \
         AND json_extract(facts, '$.\"live.content_id\"') = ?1 ORDER BY id LIMIT 1",
        [content_id],
        |r| Ok((r.get::<_, u64>(0)?, r.get::<_, String>(1)?)),
    )
}

/// A job as [`job_of_source`] reads it: (id, state, BLAKE3, the job it is
/// a duplicate of).
pub type SourceJob = (u64, String, Option<String>, Option<u64>);

/// The job that took an inbox's file at `rel_path`.
pub fn job_of_source(
    conn: &Connection,
    inbox: &str,
    rel_path: &[u8],
) -> rusqlite::Result<Option<SourceJob>> {
    conn.query_row(
        "SELECT j.id, j.state, j.blake3, j.duplicate_of FROM sources s JOIN jobs j ON j.id = s.job_id \
         WHERE s.inbox = ?1 AND s.rel_path = ?2",
        params![inbox, rel_path],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
}

/// A job's journaled writes of one action that are done: (source,
/// destination, the copy's BLAKE3, the BLAKE3 of the source it keeps
/// whole, the copy's when the journal names none).
pub fn done_writes_of_job(
    conn: &Connection,
    job_id: u64,
    action: &str,
) -> rusqlite::Result<Vec<(PathBuf, PathBuf, String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT source, dest, blake3, COALESCE(keeps, blake3) FROM journal \
         WHERE job_id = ?1 AND state = 'done' AND action = ?2",
    )?;
    stmt.query_map(params![job_id, action], |r| {
        let path = |b: Vec<u8>| PathBuf::from(OsStr::from_bytes(&b));
        Ok((path(r.get(0)?), path(r.get(1)?), r.get(2)?, r.get(3)?))
    })?
    .collect()
}

/// How many files of `inbox` named `rel_path`, or matching the LIKE
/// pattern `rel_like`, a job has taken (it is no longer pending).
pub fn taken_sources(
    conn: &Connection,
    inbox: &str,
    rel_path: &[u8],
    rel_like: &str,
) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM sources s JOIN jobs j ON j.id = s.job_id \
         WHERE s.inbox = ?1 AND (s.rel_path = ?2 OR s.rel_path LIKE ?3) AND j.state != 'pending'",
        params![inbox, rel_path, rel_like],
        |r| r.get::<_, i64>(0),
    )
}
