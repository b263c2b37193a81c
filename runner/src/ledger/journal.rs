//! The effect journal: intent before acting, done after verifying; and
//! the protocol it shares with the archive's move journal (`moves.rs`):
//! one set of states ([`JournalState`]), one state change
//! ([`set_journal_state`]) and one temp name ([`temp_path`]).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Journal, JournalState, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The job's file into the library.
    Place,
    /// A sidecar travelling with the job's file.
    Companion,
    /// The job's file into quarantine.
    Quarantine,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Place => "place",
            Action::Companion => "companion",
            Action::Quarantine => "quarantine",
        }
    }

    fn parse(text: &str) -> Action {
        match text {
            "companion" => Action::Companion,
            "quarantine" => Action::Quarantine,
            _ => Action::Place,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub id: u64,
    pub job_id: u64,
    pub action: Action,
    pub source: PathBuf,
    pub dest: PathBuf,
    pub temp: PathBuf,
    pub blake3: String,
    pub size: u64,
    pub outcome_json: String,
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&bytes))
}

/// What is about to be written.
#[derive(Debug, Clone, Copy)]
pub struct Intent<'a> {
    pub job_id: u64,
    pub action: Action,
    pub source: &'a Path,
    pub dest: &'a Path,
    /// BLAKE3 of the bytes that must end up at `dest`.
    pub blake3: &'a str,
    pub size: u64,
    pub outcome_json: &'a str,
    /// BLAKE3 of the source these bytes keep whole ("" for none).
    pub keeps: &'a str,
}

/// Record the intent to write `dest` (through `temp`). The temp name is
/// derived from the entry id, so it is returned with the id.
pub fn insert_intent(conn: &Connection, intent: &Intent<'_>) -> rusqlite::Result<JournalEntry> {
    let Intent {
        job_id,
        action,
        source,
        dest,
        blake3,
        size,
        outcome_json,
        keeps,
    } = *intent;
    let now = now();
    conn.prepare_cached(
        "INSERT INTO journal (job_id, action, source, dest, temp, blake3, size, outcome, state, created_at, updated_at, keeps) \
         VALUES (?1, ?2, ?3, ?4, x'', ?5, ?6, ?8, 'intent', ?7, ?7, ?9)",
    )?
    .execute(params![
        job_id,
        action.as_str(),
        source.as_os_str().as_bytes(),
        dest.as_os_str().as_bytes(),
        blake3,
        size,
        now,
        outcome_json,
        keeps
    ])?;
    let id = conn.last_insert_rowid() as u64;
    let temp = temp_path(dest, Journal::Effects, id);
    conn.prepare_cached("UPDATE journal SET temp = ?2 WHERE id = ?1")?
        .execute(params![id, temp.as_os_str().as_bytes()])?;
    Ok(JournalEntry {
        id,
        job_id,
        action,
        source: source.to_path_buf(),
        dest: dest.to_path_buf(),
        temp,
        blake3: blake3.to_string(),
        size,
        outcome_json: outcome_json.to_string(),
    })
}

/// The temp name of entry `id` of `journal`, next to `dest`; see
/// [`crate::effects::fsops::temp_name`]. It is stored with the entry when
/// the intent is recorded, and recovery removes the stored name, so the
/// names older versions made are still cleaned up.
pub fn temp_path(dest: &Path, journal: Journal, id: u64) -> PathBuf {
    crate::effects::fsops::temp_name(dest, journal.table(), id)
}

/// Set entry `id` of `journal` from `from` to `to`, the one state change
/// both journals make. The caller knows `from` (it read or wrote it in this
/// transaction); debug builds check it and the transition (`FORMAT.md`
/// §3.2, §3.3). The update itself does not filter on `from`.
pub fn set_journal_state(
    conn: &Connection,
    journal: Journal,
    id: u64,
    from: JournalState,
    to: JournalState,
) -> rusqlite::Result<()> {
    debug_assert!(
        journal.uses(to) && to.may_follow(from),
        "{} entry {id}: {from:?} -> {to:?} is no transition of its journal",
        journal.table()
    );
    if cfg!(debug_assertions) {
        let now_in: Option<String> = conn
            .prepare_cached(&format!(
                "SELECT state FROM {} WHERE id = ?1",
                journal.table()
            ))?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if let Some(now_in) = now_in {
            debug_assert_eq!(
                JournalState::from_sql(&now_in),
                Some(from),
                "{} entry {id} is {now_in:?}, not {from:?}",
                journal.table()
            );
        }
    }
    conn.prepare_cached(&format!(
        "UPDATE {} SET state = ?2, updated_at = ?3 WHERE id = ?1",
        journal.table()
    ))?
    .execute(params![id, to.as_sql(), now()])?;
    Ok(())
}

/// The destination changed (a name collision found at rename time).
pub fn set_dest(conn: &Connection, id: u64, dest: &Path) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE journal SET dest = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, dest.as_os_str().as_bytes(), now()])?;
    Ok(())
}

/// Settle an open entry: `intent` → `done` or `rolled_back`, the only
/// transitions of the effect journal.
pub fn mark(conn: &Connection, id: u64, state: JournalState) -> rusqlite::Result<()> {
    set_journal_state(conn, Journal::Effects, id, JournalState::Intent, state)
}

/// Entries neither done nor rolled back: what a crash left behind.
pub fn open_intents(conn: &Connection) -> rusqlite::Result<Vec<JournalEntry>> {
    let mut stmt = conn.prepare(
        "SELECT id, job_id, action, source, dest, temp, blake3, size, outcome FROM journal WHERE state = 'intent' ORDER BY id",
    )?;
    stmt.query_map([], |r| {
        Ok(JournalEntry {
            id: r.get(0)?,
            job_id: r.get(1)?,
            action: Action::parse(&r.get::<_, String>(2)?),
            source: path_of(r.get(3)?),
            dest: path_of(r.get(4)?),
            temp: path_of(r.get(5)?),
            blake3: r.get(6)?,
            size: r.get(7)?,
            outcome_json: r.get(8)?,
        })
    })?
    .collect()
}

/// A write the journal records as done: where from, where to, the copy's
/// BLAKE3, and the BLAKE3 of the source it keeps whole ("" for none).
#[derive(Debug, Clone)]
pub struct DoneWrite {
    pub job_id: u64,
    pub source: PathBuf,
    pub dest: PathBuf,
    pub blake3: String,
    pub keeps: String,
}

/// Every done write of `action`, oldest first.
pub fn done_writes(conn: &Connection, action: Action) -> rusqlite::Result<Vec<DoneWrite>> {
    conn.prepare_cached(
        "SELECT job_id, source, dest, blake3, COALESCE(keeps, blake3) FROM journal \
         WHERE state = 'done' AND action = ?1 ORDER BY id",
    )?
    .query_map([action.as_str()], |r| {
        let path = |b: Vec<u8>| PathBuf::from(std::ffi::OsStr::from_bytes(&b));
        Ok(DoneWrite {
            job_id: r.get(0)?,
            source: path(r.get(1)?),
            dest: path(r.get(2)?),
            blake3: r.get(3)?,
            keeps: r.get(4)?,
        })
    })?
    .collect()
}

/// The newest done write of `action` for job `job_id`: (dest, the BLAKE3 of
/// the bytes there).
pub fn last_done_write(
    conn: &Connection,
    job_id: u64,
    action: Action,
) -> rusqlite::Result<Option<(PathBuf, String)>> {
    conn.prepare_cached(
        "SELECT dest, blake3 FROM journal WHERE job_id = ?1 AND action = ?2 AND state = 'done' \
         ORDER BY id DESC LIMIT 1",
    )?
    .query_row(params![job_id, action.as_str()], |r| {
        Ok((path_of(r.get(0)?), r.get(1)?))
    })
    .optional()
}

/// The quarantine copy a job's bytes were kept in, if any.
pub fn quarantine_copy(conn: &Connection, job_id: u64) -> rusqlite::Result<Option<PathBuf>> {
    Ok(last_done_write(conn, job_id, Action::Quarantine)?.map(|(dest, _)| dest))
}
