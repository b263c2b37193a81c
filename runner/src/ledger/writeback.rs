//! What the write-back sweeps read of a placed-phase service (`sweeps`,
//! `remote_albums`, `remote_album_members`, `remote_assets`), and which
//! sidecars are behind it.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};

/// When the stage's last sweep and last full sweep ran (Unix seconds).
pub fn sweep_times(
    conn: &Connection,
    stage: &str,
) -> rusqlite::Result<Option<(Option<i64>, Option<i64>)>> {
    conn.query_row(
        "SELECT last_at, last_full_at FROM sweeps WHERE stage = ?1",
        [stage],
        |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)),
    )
    .optional()
}

/// A sweep of the stage failed at `now`; the next waits for the schedule.
pub fn record_sweep_error(
    conn: &Connection,
    stage: &str,
    error: &str,
    now: i64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO sweeps (stage, last_at, last_error) VALUES (?1, ?3, ?2) \
         ON CONFLICT(stage) DO UPDATE SET last_at = ?3, last_error = ?2",
        params![stage, error, now],
    )
}

/// A sweep of the stage (a full one, when `full`) went through at `now`.
pub fn record_sweep(
    conn: &Connection,
    stage: &str,
    now: i64,
    full: bool,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO sweeps (stage, last_at, last_full_at, last_error) \
         VALUES (?1, ?2, CASE WHEN ?3 THEN ?2 END, NULL) \
         ON CONFLICT(stage) DO UPDATE SET last_at = ?2, \
         last_full_at = CASE WHEN ?3 THEN ?2 ELSE last_full_at END, last_error = NULL",
        params![stage, now, full],
    )
}

/// The name an earlier sweep read for the album, if any.
pub fn remote_album_name(
    conn: &Connection,
    stage: &str,
    album: &str,
) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT name FROM remote_albums WHERE stage = ?1 AND id = ?2",
        params![stage, album],
        |r| r.get(0),
    )
    .optional()
}

/// The jobs an earlier sweep read in the album.
pub fn remote_album_members(
    conn: &Connection,
    stage: &str,
    album: &str,
) -> rusqlite::Result<BTreeSet<u64>> {
    let mut statement = conn.prepare_cached(
        "SELECT job_id FROM remote_album_members WHERE stage = ?1 AND album_id = ?2",
    )?;
    let rows = statement.query_map(params![stage, album], |r| r.get::<_, u64>(0))?;
    rows.collect()
}

pub fn set_remote_album(
    conn: &Connection,
    stage: &str,
    album: &str,
    name: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO remote_albums (stage, id, name) VALUES (?1, ?2, ?3) \
         ON CONFLICT(stage, id) DO UPDATE SET name = ?3",
        params![stage, album, name],
    )
}

pub fn remove_remote_album_member(
    conn: &Connection,
    stage: &str,
    album: &str,
    job_id: u64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM remote_album_members WHERE stage = ?1 AND album_id = ?2 AND job_id = ?3",
        params![stage, album, job_id],
    )
}

pub fn add_remote_album_member(
    conn: &Connection,
    stage: &str,
    album: &str,
    job_id: u64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT OR IGNORE INTO remote_album_members (stage, album_id, job_id) VALUES (?1, ?2, ?3)",
        params![stage, album, job_id],
    )
}

/// The album is gone from the service: it and its members are forgotten.
pub fn remove_remote_album(conn: &Connection, stage: &str, album: &str) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM remote_album_members WHERE stage = ?1 AND album_id = ?2",
        params![stage, album],
    )?;
    conn.execute(
        "DELETE FROM remote_albums WHERE stage = ?1 AND id = ?2",
        params![stage, album],
    )?;
    Ok(())
}

/// The asset's state an earlier sweep recorded: None for no row, Some(None)
/// for a row without a state.
pub fn remote_asset_state(
    conn: &Connection,
    stage: &str,
    job_id: u64,
) -> rusqlite::Result<Option<Option<String>>> {
    conn.query_row(
        "SELECT state FROM remote_assets WHERE stage = ?1 AND job_id = ?2",
        params![stage, job_id],
        |r| r.get(0),
    )
    .optional()
}

/// Record the asset's state (the first one recorded stays as `first`) and
/// mark its sidecar behind.
pub fn set_remote_asset_state(
    conn: &Connection,
    stage: &str,
    job_id: u64,
    state: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO remote_assets (stage, job_id, state, first, dirty) VALUES (?1, ?2, ?3, ?3, 1) \
         ON CONFLICT(stage, job_id) DO UPDATE SET state = ?3, first = COALESCE(first, ?3), dirty = 1",
        params![stage, job_id, state],
    )
}

/// Mark the asset's sidecar behind.
pub fn mark_remote_asset_dirty(
    conn: &Connection,
    stage: &str,
    job_id: u64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO remote_assets (stage, job_id, dirty) VALUES (?1, ?2, 1) \
         ON CONFLICT(stage, job_id) DO UPDATE SET dirty = 1",
        params![stage, job_id],
    )
}

/// The asset's sidecar holds `written` now.
pub fn mark_remote_asset_written(
    conn: &Connection,
    stage: &str,
    job_id: i64,
    written: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE remote_assets SET written = ?3, dirty = 0 WHERE stage = ?1 AND job_id = ?2",
        params![stage, job_id, written],
    )
}

/// An asset whose sidecar is behind what the service holds.
pub struct DirtyRow {
    pub job_id: i64,
    pub state: Option<String>,
    pub first: Option<String>,
    pub written: String,
    pub albums: Vec<String>,
    pub library_path: Option<String>,
    pub root: Option<String>,
}

/// Up to `limit` assets of the stage whose sidecar is behind, after job
/// `after`, by job, with the names of their albums.
pub fn dirty_rows(
    conn: &Connection,
    stage: &str,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<DirtyRow>> {
    let mut statement = conn.prepare_cached(
        "SELECT r.job_id, r.state, r.first, r.written, a.library_path, a.root \
         FROM remote_assets r LEFT JOIN assets a ON a.job_id = r.job_id \
         WHERE r.stage = ?1 AND r.dirty = 1 AND r.job_id > ?2 ORDER BY r.job_id LIMIT ?3",
    )?;
    let mut rows: Vec<DirtyRow> = statement
        .query_map(params![stage, after, limit as i64], |r| {
            Ok(DirtyRow {
                job_id: r.get(0)?,
                state: r.get(1)?,
                first: r.get(2)?,
                written: r.get(3)?,
                albums: Vec::new(),
                library_path: r.get(4)?,
                root: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut names = conn.prepare_cached(
        "SELECT DISTINCT al.name FROM remote_album_members m \
         JOIN remote_albums al ON al.stage = m.stage AND al.id = m.album_id \
         WHERE m.stage = ?1 AND m.job_id = ?2 ORDER BY al.name",
    )?;
    for row in &mut rows {
        row.albums = names
            .query_map(params![stage, row.job_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(rows)
}
