//! The `immich` stage's rows in the ledger, as `keepsake immich status`
//! and `sync --all` read and reset them.

use rusqlite::{Connection, OptionalExtension};

/// One of the stage's placed-phase calls, as its status counts it.
pub struct ImmichCall {
    pub state: String,
    pub facts: String,
    pub requests: u64,
    pub last_error: Option<String>,
    pub wake_at: Option<i64>,
    pub updated_at: i64,
}

/// Every placed-phase call of the `immich` stage.
pub fn calls(conn: &Connection) -> rusqlite::Result<Vec<ImmichCall>> {
    let mut stmt = conn.prepare(
        "SELECT state, facts, requests, last_error, wake_at, updated_at FROM placed_calls WHERE stage = 'immich'",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ImmichCall {
            state: r.get::<_, String>(0)?,
            facts: r.get::<_, String>(1)?,
            requests: r.get::<_, u64>(2)?,
            last_error: r.get::<_, Option<String>>(3)?,
            wake_at: r.get::<_, Option<i64>>(4)?,
            updated_at: r.get::<_, i64>(5)?,
        })
    })?;
    rows.collect()
}

/// The write-back's last sweep, last full sweep (Unix seconds) and why the
/// last one failed.
pub type SweepTimes = (Option<i64>, Option<i64>, Option<String>);

/// The write-back's last sweep, last full sweep and its error.
pub fn sweep(conn: &Connection) -> rusqlite::Result<Option<SweepTimes>> {
    conn.query_row(
        "SELECT last_at, last_full_at, last_error FROM sweeps WHERE stage = 'immich'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

/// Sidecars still behind what Immich holds.
pub fn sidecars_behind(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COUNT(*) FROM remote_assets WHERE stage = 'immich' AND dirty = 1",
        [],
        |r| r.get(0),
    )
}

/// Forget the asset and album ids the stage kept (its KV), what the sweeps
/// read of albums and assets, and queue every call again. How many calls.
pub fn forget(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM kv WHERE stage = 'immich'", [])?;
    conn.execute(
        "DELETE FROM remote_album_members WHERE stage = 'immich'",
        [],
    )?;
    conn.execute("DELETE FROM remote_albums WHERE stage = 'immich'", [])?;
    conn.execute(
        "UPDATE remote_assets SET state = NULL, dirty = 0 WHERE stage = 'immich'",
        [],
    )?;
    conn.execute("DELETE FROM sweeps WHERE stage = 'immich'", [])?;
    conn.execute(
        "UPDATE placed_calls SET state = 'pending', wake_at = NULL, attempts = 0, \
         last_error = NULL, facts = '{}' WHERE stage = 'immich'",
        [],
    )
}
