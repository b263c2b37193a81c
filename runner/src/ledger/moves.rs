//! The archive's move journal (`moves`), which follows the effect
//! journal's protocol (`journal.rs`: one [`JournalState`], one state
//! change, one temp name), and what the archive reads and changes of assets.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::{Journal, JournalState, Root, now, set_journal_state, temp_path};

/// An asset as the archive sees it.
#[derive(Debug, Clone)]
pub struct HeldAsset {
    pub asset_id: u64,
    pub job_id: u64,
    /// The copy's own BLAKE3: with embedded XMP it is not the original's.
    pub blake3: String,
    pub size: u64,
    /// Its path below its root (the same below both roots).
    pub library_path: String,
    pub root: Root,
    /// The asset's capture time, else its job's.
    pub capture_time: Option<String>,
    pub media_kind: String,
}

/// Every asset, by library path.
pub fn held_assets(conn: &Connection) -> rusqlite::Result<Vec<HeldAsset>> {
    conn.prepare(
        "SELECT a.id, a.job_id, COALESCE(a.library_blake3, a.blake3), a.size, a.library_path, a.root, \
         COALESCE(a.capture_time, j.capture_time), a.media_kind FROM assets a JOIN jobs j ON j.id = a.job_id \
         ORDER BY a.library_path",
    )?
    .query_map([], |r| {
        Ok(HeldAsset {
            asset_id: r.get(0)?,
            job_id: r.get(1)?,
            blake3: r.get(2)?,
            size: r.get(3)?,
            library_path: r.get(4)?,
            root: Root::from_sql(&r.get::<_, String>(5)?).unwrap_or(Root::Library),
            capture_time: r.get(6)?,
            media_kind: r.get(7)?,
        })
    })?
    .collect()
}

/// The other assets whose library path shares a stem with one of job
/// `job_id`'s (a Live Photo's still and its video, which the archive's plan
/// puts in the union of their years): (their job, their capture time).
pub fn pair_of_job(conn: &Connection, job_id: u64) -> rusqlite::Result<Vec<(u64, Option<String>)>> {
    let paths: Vec<String> = conn
        .prepare_cached("SELECT library_path FROM assets WHERE job_id = ?1")?
        .query_map([job_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut others = Vec::new();
    for path in paths {
        let stem = match path.rfind('.') {
            Some(dot) if dot > path.rfind('/').map_or(0, |s| s + 1) => &path[..dot],
            _ => continue,
        };
        // The archive's plan pairs names in any case (`IMG_1.JPG` with
        // `img_1.mov`): the stem as it is, in lower and in upper case.
        let (dir, name) = stem.split_at(stem.rfind('/').map_or(0, |s| s + 1));
        let mut stems = vec![
            stem.to_string(),
            format!("{dir}{}", name.to_ascii_lowercase()),
            format!("{dir}{}", name.to_ascii_uppercase()),
        ];
        stems.dedup();
        stems.sort();
        stems.dedup();
        for stem in stems {
            // `stem.` up to `stem/` ('/' follows '.'): every `stem.<ext>`.
            let mut stmt = conn.prepare_cached(
                "SELECT a.job_id, COALESCE(a.capture_time, j.capture_time) FROM assets a \
                 JOIN jobs j ON j.id = a.job_id \
                 WHERE a.library_path >= ?1 AND a.library_path < ?2 AND a.job_id != ?3",
            )?;
            let found = stmt.query_map(
                params![format!("{stem}."), format!("{stem}/"), job_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for other in found {
                others.push(other?);
            }
        }
    }
    Ok(others)
}

/// Whether keepsake ever archived anything: an asset in the archive, or
/// any move journaled.
pub fn ever_archived(conn: &Connection) -> rusqlite::Result<bool> {
    let count: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM assets WHERE root = 'archive') + (SELECT COUNT(*) FROM moves)",
        [],
        |r| r.get(0),
    )?;
    Ok(count > 0)
}

/// A file about to move from the library root to the archive root.
#[derive(Debug, Clone, Copy)]
pub struct NewMove<'a> {
    /// None for a sidecar.
    pub asset_id: Option<u64>,
    pub rel_path: &'a str,
    pub source: &'a Path,
    pub dest: &'a Path,
    pub blake3: &'a str,
    pub size: u64,
}

/// Record the intent to move a file. The temp name is derived from the
/// entry id, so it is returned with the id.
pub fn insert_move(conn: &Connection, new: &NewMove<'_>) -> rusqlite::Result<(u64, PathBuf)> {
    conn.prepare_cached(
        "INSERT INTO moves (asset_id, rel_path, source, dest, temp, blake3, size, state, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, '', ?5, ?6, 'intent', ?7, ?7)",
    )?
    .execute(params![
        new.asset_id,
        new.rel_path,
        new.source.as_os_str().as_bytes(),
        new.dest.as_os_str().as_bytes(),
        new.blake3,
        new.size,
        now()
    ])?;
    let id = conn.last_insert_rowid() as u64;
    let temp = temp_path(new.dest, Journal::Moves, id);
    conn.execute(
        "UPDATE moves SET temp = ?2 WHERE id = ?1",
        params![id, temp.as_os_str().as_bytes()],
    )?;
    Ok((id, temp))
}

/// `intent → placed`: the archive copy is durable and verified. The asset
/// now lives in the archive, and its `immich` placed call runs again.
pub fn mark_move_placed(conn: &Connection, id: u64, asset_id: Option<u64>) -> rusqlite::Result<()> {
    set_journal_state(
        conn,
        Journal::Moves,
        id,
        JournalState::Intent,
        JournalState::Placed,
    )?;
    // A sidecar (no asset) moves in its photo's batch, whose job is noted.
    if let Some(asset_id) = asset_id {
        set_asset_root(conn, asset_id, Root::Archive)?;
        requeue_placed(conn, asset_id)?;
        note_asset_unvoided(conn, asset_id)?;
    }
    // Where a file is held changed: the archive's verdicts hear of it.
    super::count_change(conn)
}

/// The job of asset `asset_id` changed (its file moved): its verdicts are
/// voided later.
fn note_asset_unvoided(conn: &Connection, asset_id: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO unvoided (job_id) SELECT job_id FROM assets WHERE id = ?1",
    )?
    .execute([asset_id])?;
    Ok(())
}

/// `intent → rolled_back`: the file was not placed in its batch; it stays
/// in the library.
pub fn mark_move_unplaced(conn: &Connection, id: u64) -> rusqlite::Result<()> {
    set_journal_state(
        conn,
        Journal::Moves,
        id,
        JournalState::Intent,
        JournalState::RolledBack,
    )
}

/// `placed → done`: the removal of the library copy was tried.
pub fn mark_move_done(conn: &Connection, id: u64) -> rusqlite::Result<()> {
    set_journal_state(
        conn,
        Journal::Moves,
        id,
        JournalState::Placed,
        JournalState::Done,
    )
}

/// A move neither done nor rolled back: what a crash left behind.
#[derive(Debug, Clone)]
pub struct OpenMove {
    pub id: u64,
    /// None for a sidecar.
    pub asset_id: Option<u64>,
    pub source: PathBuf,
    pub dest: PathBuf,
    pub temp: PathBuf,
    pub blake3: String,
    /// `intent` or `placed`.
    pub state: JournalState,
}

pub fn open_moves(conn: &Connection) -> rusqlite::Result<Vec<OpenMove>> {
    conn.prepare(
        "SELECT id, asset_id, source, dest, temp, blake3, state FROM moves \
         WHERE state IN ('intent', 'placed') ORDER BY id",
    )?
    .query_map([], |r| {
        let path = |i| -> rusqlite::Result<PathBuf> {
            let bytes: Vec<u8> = r.get(i)?;
            Ok(PathBuf::from(OsStr::from_bytes(&bytes)))
        };
        let state: String = r.get(6)?;
        Ok(OpenMove {
            id: r.get(0)?,
            asset_id: r.get(1)?,
            source: path(2)?,
            dest: path(3)?,
            temp: path(4)?,
            blake3: r.get(5)?,
            state: JournalState::from_sql(&state).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Text,
                    format!("unknown move state {state:?}").into(),
                )
            })?,
        })
    })?
    .collect()
}

/// Settle an open move at recovery: `done` (the asset lives in the
/// archive, its `immich` call runs again), or `rolled_back` or `lost` (it
/// is recorded in the library).
pub fn settle_move(conn: &Connection, open: &OpenMove, to: JournalState) -> rusqlite::Result<()> {
    debug_assert!(
        matches!(
            to,
            JournalState::Done | JournalState::RolledBack | JournalState::Lost
        ),
        "move {} settled as {to:?}",
        open.id
    );
    set_journal_state(conn, Journal::Moves, open.id, open.state, to)?;
    if let Some(asset_id) = open.asset_id {
        let root = if to == JournalState::Done {
            Root::Archive
        } else {
            Root::Library
        };
        set_asset_root(conn, asset_id, root)?;
        if to == JournalState::Done {
            requeue_placed(conn, asset_id)?;
        }
        note_asset_unvoided(conn, asset_id)?;
    }
    super::count_change(conn)?;
    Ok(())
}

fn set_asset_root(conn: &Connection, asset_id: u64, root: Root) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE assets SET root = ?2 WHERE id = ?1",
        params![asset_id, root.as_sql()],
    )?;
    Ok(())
}

/// A file that moved to the archive is at a new path: the `immich` stage
/// sees it again. For Immich's external-library mode it is a new asset
/// there, which gets the file's albums and favorite back (from the config's
/// rules and its sidecar); an uploaded file keeps the asset it has, and
/// the stage sends nothing. Other placed stages (notifications) do not
/// run again.
fn requeue_placed(conn: &Connection, asset_id: u64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE placed_calls SET state = 'pending', attempts = 0, wake_at = NULL, \
         last_error = NULL, updated_at = ?2 \
         WHERE job_id = (SELECT job_id FROM assets WHERE id = ?1) AND stage = 'immich' AND state = 'done'",
        params![asset_id, now()],
    )
}
