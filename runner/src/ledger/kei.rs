//! kei's state database, read-only: the inventory of iCloud's own items.
//!
//! kei (the Rust rewrite of icloudpd) keeps a SQLite database of every
//! iCloud asset it has seen: one row per version it downloads (`original`,
//! `medium`, `adjusted`…, and a Live Photo's `live_original` video under the
//! same id), its status
//! (`pending`, `downloaded`, `failed`), its creation time and where it was
//! written; and one row per sync run. keepsake knows schema versions 7
//! (kei 0.10 to 0.12) and 8 (which adds the library zone, `library`, to each
//! asset's key) by `PRAGMA user_version`, checks that every column it reads
//! is there, and refuses any other version, since a column that means
//! something else would make the proof wrong. What keepsake makes of it
//! lives in `crate::kei`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// The schema versions of kei's state database keepsake reads.
pub const KNOWN_VERSIONS: [i64; 2] = [7, 8];

/// The columns keepsake reads, by table (version 8 adds `assets.library`).
const NEEDED: [(&str, &[&str]); 4] = [
    (
        "assets",
        &[
            "id",
            "version_size",
            "filename",
            "created_at",
            "status",
            "local_path",
            "last_seen_at",
            "last_error",
            "is_deleted",
            "is_favorite",
            "media_type",
        ],
    ),
    ("sync_runs", &["id", "started_at", "completed_at", "status"]),
    ("metadata", &["key", "value"]),
    ("asset_albums", &["asset_id", "album_name"]),
];

/// One version of an iCloud asset kei must download.
#[derive(Debug, Clone)]
pub struct KeiItem {
    /// The library zone (`PrimarySync`, or a shared library's): one iCloud
    /// id may be in several.
    pub library: String,
    /// iCloud's id of the asset (a Live Photo's still and video share it).
    pub id: String,
    pub version: String,
    /// `photo`, `video`, `live_photo_image` (a Live Photo's still) or
    /// `live_photo_video`.
    pub media_type: String,
    pub filename: String,
    /// Unix seconds (UTC).
    pub created_at: i64,
    pub status: String,
    pub local_path: Option<PathBuf>,
    pub last_seen_at: i64,
    pub last_error: Option<String>,
    pub deleted: bool,
}

/// What kei's database says.
#[derive(Debug, Default)]
pub struct KeiState {
    pub items: Vec<KeiItem>,
    /// (started, completed) of the last complete sync run, Unix seconds.
    pub last_complete: Option<(i64, i64)>,
    /// The latest sync run, when it did not complete: (started, status).
    pub unfinished: Option<(i64, String)>,
    /// Full enumerations kei began and has not finished cleanly:
    /// (zone, began at), from its `enum_in_progress:<zone>` markers.
    pub enumerating: Vec<(String, String)>,
    /// Albums of each asset id.
    pub albums: HashMap<String, Vec<String>>,
    /// Asset ids kei marks as favourites.
    pub favorites: std::collections::HashSet<String>,
}

/// Open `path` read-only and read what the proof needs.
pub fn read(path: &Path) -> Result<KeiState, String> {
    let fail = |what: String| {
        format!(
            "kei's state {}: {what}; check [archive] kei_state",
            path.display()
        )
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(e.to_string()))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| fail(e.to_string()))?;
    if !KNOWN_VERSIONS.contains(&version) {
        return Err(fail(format!(
            "schema version {version}, and this keepsake knows only version 7 (kei 0.10 to 0.12) and version 8: a column that means something else would make the proof wrong. Use a kei and a keepsake of the same time, or give `--inventory FILE` instead"
        )));
    }
    for (table, columns) in NEEDED {
        let have = columns_of(&conn, table).map_err(|e| fail(e.to_string()))?;
        let extra: &[&str] = if table == "assets" && version >= 8 {
            &["library"]
        } else {
            &[]
        };
        if let Some(missing) = columns
            .iter()
            .chain(extra)
            .find(|c| !have.iter().any(|h| h == *c))
        {
            return Err(fail(format!(
                "schema version {version} without `{table}.{missing}`, which keepsake reads: not the kei schema it knows. Give `--inventory FILE` instead"
            )));
        }
    }
    let zone = if version >= 8 {
        "library"
    } else {
        "'PrimarySync'"
    };
    let query = |conn: &Connection| -> rusqlite::Result<KeiState> {
        let mut state = KeiState::default();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, version_size, filename, created_at, status, local_path, last_seen_at, \
             last_error, is_deleted, is_favorite, media_type, {zone} FROM assets \
             ORDER BY created_at, {zone}, id, version_size"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((
                KeiItem {
                    library: r.get(11)?,
                    id: r.get(0)?,
                    version: r.get(1)?,
                    media_type: r.get(10)?,
                    filename: r.get(2)?,
                    created_at: r.get(3)?,
                    status: r.get(4)?,
                    local_path: r.get::<_, Option<String>>(5)?.map(PathBuf::from),
                    last_seen_at: r.get(6)?,
                    last_error: r.get(7)?,
                    deleted: r.get::<_, i64>(8)? != 0,
                },
                r.get::<_, i64>(9)? != 0,
            ))
        })?;
        for row in rows {
            let (item, favorite) = row?;
            if favorite {
                state.favorites.insert(item.id.clone());
            }
            state.items.push(item);
        }
        state.last_complete = conn
            .query_row(
                "SELECT started_at, completed_at FROM sync_runs \
                 WHERE status = 'complete' AND completed_at IS NOT NULL ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        state.unfinished = conn
            .query_row(
                "SELECT started_at, status FROM sync_runs ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .ok()
            .filter(|(_, status)| status != "complete");
        let mut stmt = conn.prepare(
            "SELECT substr(key, 18), value FROM metadata WHERE key LIKE 'enum_in_progress:%' ORDER BY key",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            state.enumerating.push(row?);
        }
        let mut stmt =
            conn.prepare("SELECT asset_id, album_name FROM asset_albums ORDER BY rowid")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (id, album) = row?;
            state.albums.entry(id).or_default().push(album);
        }
        Ok(state)
    };
    query(&conn).map_err(|e| fail(e.to_string()))
}

/// The column names of `table` (none when it is not there).
fn columns_of(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT name FROM pragma_table_info(?1)")?
        .query_map([table], |r| r.get(0))?
        .collect()
}
