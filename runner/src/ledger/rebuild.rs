//! What `keepsake ledger rebuild` writes when it records the library's
//! files again: roots, hashes, capture times, and rows whose file is gone.

use rusqlite::{Connection, params};

/// The capture time the stages gave a rebuilt job, on its job and asset.
pub fn set_capture(
    conn: &Connection,
    job_id: u64,
    time: &str,
    source: &str,
    confidence: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE jobs SET capture_time = ?2, capture_source = ?3, capture_confidence = ?4 WHERE id = ?1",
        params![job_id, time, source, confidence],
    )?;
    conn.execute(
        "UPDATE assets SET capture_time = ?2, capture_source = ?3 WHERE job_id = ?1",
        params![job_id, time, source],
    )?;
    Ok(())
}

/// Every asset row: (job id, path below its root, the root).
pub fn asset_locations(conn: &Connection) -> rusqlite::Result<Vec<(u64, String, String)>> {
    conn.prepare("SELECT job_id, library_path, root FROM assets")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

/// The asset at `library_path` is in `root`.
pub fn set_asset_root(
    conn: &Connection,
    library_path: &str,
    root: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE assets SET root = ?2 WHERE library_path = ?1",
        params![library_path, root],
    )
}

/// The asset at `library_path`, and its job, are keyed by the original's
/// BLAKE3; the library copy's own is `library_blake3`.
pub fn set_original_hash(
    conn: &Connection,
    job_id: u64,
    library_path: &str,
    original: &str,
    library_blake3: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE assets SET blake3 = ?2, library_blake3 = ?3 WHERE library_path = ?1",
        params![library_path, original, library_blake3],
    )?;
    conn.execute(
        "UPDATE jobs SET blake3 = ?2 WHERE id = ?1",
        params![job_id, original],
    )?;
    Ok(())
}

/// What a rebuilt job found of its file.
pub fn set_rebuilt_job(
    conn: &Connection,
    job_id: u64,
    blake3: &str,
    sha1: &str,
    media_kind: &str,
    dest_path: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE jobs SET blake3 = ?2, sha1 = ?3, media_kind = ?4, dest_path = ?5, attempts = 1 WHERE id = ?1",
        params![job_id, blake3, sha1, media_kind, dest_path],
    )
}

/// Drop the asset row of job `job_id`, and the archive journal's
/// references to it.
pub fn drop_asset_of_job(conn: &Connection, job_id: u64) -> rusqlite::Result<usize> {
    drop_asset(conn, "job_id = ?1", &job_id.to_string())
}

/// Drop the asset row at `library_path`, and the archive journal's
/// references to it.
pub fn drop_asset_at(conn: &Connection, library_path: &str) -> rusqlite::Result<usize> {
    drop_asset(conn, "library_path = ?1", library_path)
}

fn drop_asset(conn: &Connection, condition: &str, value: &str) -> rusqlite::Result<usize> {
    conn.execute(
        &format!("UPDATE moves SET asset_id = NULL WHERE asset_id IN (SELECT id FROM assets WHERE {condition})"),
        [value],
    )?;
    conn.execute(&format!("DELETE FROM assets WHERE {condition}"), [value])
}
