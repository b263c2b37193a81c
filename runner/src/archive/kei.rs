//! kei's state database, read-only: the inventory of iCloud's own items.
//!
//! kei (the Rust rewrite of icloudpd) keeps a SQLite database of every
//! iCloud asset it has seen: one row per version it downloads (`original`,
//! `medium`, `adjusted`…, and a Live Photo's `live_original` video under the
//! same id), its status
//! (`pending`, `downloaded`, `failed`), its creation time and where it was
//! written; and one row per sync run. keepsake knows schema version 7
//! (`PRAGMA user_version`) and refuses any other, since a column that means
//! something else would make the proof wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// The schema version of kei's state database keepsake reads.
pub const KNOWN_VERSION: i64 = 7;

/// One version of an iCloud asset kei must download.
#[derive(Debug, Clone)]
pub struct KeiItem {
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

/// The version the proof needs of every asset: iCloud's original.
pub fn is_original(item: &KeiItem) -> bool {
    item.version == "original"
}

/// The version the proof needs of a Live Photo: its video, at its original size.
pub fn is_live_original(item: &KeiItem) -> bool {
    matches!(item.version.as_str(), "live_original" | "liveoriginal")
}

/// Whether the asset is a Live Photo (its still, or any of its video's sizes).
pub fn is_live(item: &KeiItem) -> bool {
    item.media_type.starts_with("live_photo") || item.version.starts_with("live")
}

impl KeiState {
    /// The rows of each asset, grouped by iCloud's id, in kei's order.
    pub fn assets(&self) -> Vec<(&str, Vec<&KeiItem>)> {
        let mut order: Vec<&str> = Vec::new();
        let mut rows: HashMap<&str, Vec<&KeiItem>> = HashMap::new();
        for item in &self.items {
            rows.entry(&item.id)
                .or_insert_with(|| {
                    order.push(&item.id);
                    Vec::new()
                })
                .push(item);
        }
        order
            .into_iter()
            .map(|id| (id, rows.remove(id).unwrap_or_default()))
            .collect()
    }
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
    if version != KNOWN_VERSION {
        return Err(fail(format!(
            "schema version {version}, and this keepsake knows only version {KNOWN_VERSION}: a column that means something else would make the proof wrong. Use a kei and a keepsake of the same time, or give `--inventory FILE` instead"
        )));
    }
    let query = |conn: &Connection| -> rusqlite::Result<KeiState> {
        let mut state = KeiState::default();
        let mut stmt = conn.prepare(
            "SELECT id, version_size, filename, created_at, status, local_path, last_seen_at, \
             last_error, is_deleted, is_favorite, media_type FROM assets \
             ORDER BY created_at, id, version_size",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                KeiItem {
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

/// What kei knows of one downloaded file, for the stages: iCloud's id, its
/// albums, whether it is a favourite.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeiInfo {
    pub id: String,
    /// iCloud's creation time, Unix seconds.
    pub created_at: i64,
    pub albums: Vec<String>,
    pub favorite: bool,
}

/// kei's downloaded files by path: what ingest adds to their sidecars.
pub fn by_path(state: &KeiState) -> PathIndex<KeiInfo> {
    let mut index = PathIndex::default();
    for item in state
        .items
        .iter()
        .filter(|item| item.status == "downloaded")
    {
        if let Some(path) = &item.local_path {
            index.insert(
                path,
                KeiInfo {
                    id: item.id.clone(),
                    created_at: item.created_at,
                    albums: state.albums.get(&item.id).cloned().unwrap_or_default(),
                    favorite: state.favorites.contains(&item.id),
                },
            );
        }
    }
    index
}

/// How many trailing components identify a download: kei's and icloudpd's
/// `YYYY/MM/DD/NAME`.
const TAIL: usize = 4;

/// Files by path, where kei's paths and keepsake's may start differently
/// (kei in another container with another mount point, a folder reached
/// through a link): a path is found whole, or else by its last components
/// (at least its folder and name) when no other file has the same.
#[derive(Debug)]
pub struct PathIndex<T> {
    whole: HashMap<PathBuf, T>,
    /// None: more than one file ends this way.
    tails: HashMap<PathBuf, Option<T>>,
}

impl<T> Default for PathIndex<T> {
    fn default() -> Self {
        PathIndex {
            whole: HashMap::new(),
            tails: HashMap::new(),
        }
    }
}

fn tails(path: &Path) -> Vec<PathBuf> {
    let parts: Vec<_> = path.components().collect();
    // Its whole `YYYY/MM/DD/NAME`: a shorter tail (a day and a name) would
    // match another year's photo of the same name.
    if parts.len() < TAIL {
        return Vec::new();
    }
    vec![parts[parts.len() - TAIL..].iter().collect()]
}

impl<T: Clone> PathIndex<T> {
    pub fn insert(&mut self, path: &Path, value: T) {
        self.whole.insert(path.to_path_buf(), value.clone());
        for tail in tails(path) {
            self.tails
                .entry(tail)
                .and_modify(|v| *v = None)
                .or_insert_with(|| Some(value.clone()));
        }
    }

    pub fn get(&self, path: &Path) -> Option<&T> {
        if let Some(found) = self.whole.get(path) {
            return Some(found);
        }
        // The longest unique tail both paths share.
        tails(path)
            .iter()
            .rev()
            .find_map(|tail| self.tails.get(tail).and_then(Option::as_ref))
    }

    pub fn is_empty(&self) -> bool {
        self.whole.is_empty()
    }
}

/// The years an instant could be of, anywhere on Earth (±14 hours).
pub fn years_of(unix: i64) -> std::collections::BTreeSet<i32> {
    [-14 * 3600, 0, 14 * 3600]
        .into_iter()
        .filter_map(|shift| jiff::Timestamp::from_second(unix.checked_add(shift)?).ok())
        .map(|t| {
            i32::from(
                t.to_zoned_datetime(jiff::tz::TimeZone::UTC)
                    .datetime()
                    .year(),
            )
        })
        .collect()
}

/// RFC 3339 of Unix seconds.
pub fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(|_| unix.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_is_found_under_another_mount_point_when_its_tail_is_unique() {
        let mut index = PathIndex::default();
        index.insert(Path::new("/data/2019/05/01/IMG_1.HEIC"), 1);
        index.insert(Path::new("/data/2019/05/02/IMG_1.HEIC"), 2);
        index.insert(Path::new("/a/2018/05/01/IMG_2.HEIC"), 3);
        index.insert(Path::new("/b/2018/05/01/IMG_2.HEIC"), 4);
        assert_eq!(
            index.get(Path::new("/data/2019/05/01/IMG_1.HEIC")),
            Some(&1)
        );
        assert_eq!(
            index.get(Path::new("/photos/icloud/2019/05/02/IMG_1.HEIC")),
            Some(&2)
        );
        // Two files end the same way: neither is taken for a third.
        assert_eq!(index.get(Path::new("/c/2018/05/01/IMG_2.HEIC")), None);
        // A day and a name in common: not the same file.
        assert_eq!(index.get(Path::new("/photos/2017/05/01/IMG_1.HEIC")), None);
        assert_eq!(index.get(Path::new("/IMG_2.HEIC")), None);
    }

    #[test]
    fn an_instant_near_new_year_is_of_both_years() {
        // 2019-12-31T20:00:00Z: 2020 already east of UTC+4.
        assert_eq!(
            years_of(1_577_822_400),
            std::collections::BTreeSet::from([2019, 2020])
        );
        // 2019-06-01: one year.
        assert_eq!(
            years_of(1_559_390_400),
            std::collections::BTreeSet::from([2019])
        );
    }
}
