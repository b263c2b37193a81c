//! What kei (the Rust rewrite of icloudpd) knows of iCloud's items, as
//! keepsake uses it: the versions the archive's proof needs, and the
//! albums and favourites of each downloaded file, found by path, for the
//! ingest. Reading kei's database is `crate::ledger::kei`'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::ledger::kei::{KeiItem, KeiState, read};

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
    /// The rows of each asset, grouped by library zone and iCloud's id
    /// (the same id in two zones is two assets), in kei's order.
    pub fn assets(&self) -> Vec<(&str, Vec<&KeiItem>)> {
        let mut order: Vec<(&str, &str)> = Vec::new();
        let mut rows: HashMap<(&str, &str), Vec<&KeiItem>> = HashMap::new();
        for item in &self.items {
            let key = (item.library.as_str(), item.id.as_str());
            rows.entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push(item);
        }
        order
            .into_iter()
            .map(|key| (key.1, rows.remove(&key).unwrap_or_default()))
            .collect()
    }
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

/// kei's downloaded files by path.
pub type KeiFiles = PathIndex<KeiInfo>;

/// (size, mtime) of kei's database and of its write-ahead log: kei writes
/// in WAL mode, so a change may sit in the log only.
type KeiStamp = [Option<(u64, std::time::SystemTime)>; 2];

/// kei's files, read again only when its database (or its WAL) changed.
#[derive(Default)]
pub struct KeiCache {
    cached: Mutex<Option<(KeiStamp, Arc<KeiFiles>)>>,
}

impl KeiCache {
    /// kei's albums and favourites of the files it downloaded, when its
    /// state is configured: read again only when kei changed it (an
    /// unreadable one is logged and changes nothing).
    pub fn files(&self, kei_state: Option<&Path>) -> Arc<KeiFiles> {
        let Some(path) = kei_state else {
            return Default::default();
        };
        let stamp_of = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        };
        let mut wal = path.to_path_buf().into_os_string();
        wal.push("-wal");
        let stamp = [stamp_of(path), stamp_of(Path::new(&wal))];
        let mut cache = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, files)) = cache.as_ref()
            && *seen == stamp
        {
            return Arc::clone(files);
        }
        let files = match read(path) {
            Ok(state) => Arc::new(by_path(&state)),
            Err(e) => {
                tracing::warn!("{e}: kei's albums and favourites are not added");
                Default::default()
            }
        };
        *cache = Some((stamp, Arc::clone(&files)));
        files
    }
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
