//! External libraries: the scan walks the import paths on the real disk.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use jiff::Timestamp;

use crate::state::{AssetRec, State, USER_ID};
use crate::{Asset, util};

/// The exclusion patterns Immich 2.4.1 gives a new library.
pub(crate) const DEFAULT_EXCLUSIONS: [&str; 6] = [
    "**/@eaDir/**",
    "**/._*",
    "**/#recycle/**",
    "**/#snapshot/**",
    "**/.stversions/**",
    "**/.stfolder/**",
];

/// A media file found under an import path.
pub(crate) struct Found {
    path: String,
    modified: Timestamp,
    size: u64,
    sidecar: Option<Vec<u8>>,
}

/// The two shapes of exclusion pattern Immich uses: `**/<dir>/**` and
/// `**/<prefix>*`. Other globs are ignored.
struct Exclusions {
    dirs: Vec<String>,
    prefixes: Vec<String>,
}

impl Exclusions {
    fn parse(patterns: &[String]) -> Self {
        let mut dirs = Vec::new();
        let mut prefixes = Vec::new();
        for pattern in patterns {
            let Some(rest) = pattern.strip_prefix("**/") else {
                continue;
            };
            if let Some(dir) = rest.strip_suffix("/**") {
                dirs.push(dir.to_owned());
            } else if let Some(prefix) = rest.strip_suffix('*') {
                prefixes.push(prefix.to_owned());
            }
        }
        Self { dirs, prefixes }
    }
}

/// Every image and video under the import paths, as Immich's crawl finds
/// them: hidden files and folders skipped, extensions case-insensitive,
/// symbolic links followed, with the sidecar Immich would discover
/// (`<file>.xmp` or `<name>.xmp` beside it).
pub(crate) fn walk(import_paths: &[String], exclusions: &[String]) -> Vec<Found> {
    let exclusions = Exclusions::parse(exclusions);
    let mut found = Vec::new();
    for root in import_paths {
        visit(Path::new(root), &exclusions, &mut found, 0);
    }
    found.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.size.cmp(&b.size)));
    found.dedup_by(|a, b| a.path == b.path);
    found
}

fn visit(dir: &Path, exclusions: &Exclusions, found: &mut Vec<Found>, depth: usize) {
    if depth > 64 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if !exclusions.dirs.contains(&name) {
                visit(&path, exclusions, found, depth + 1);
            }
            continue;
        }
        let excluded = exclusions
            .prefixes
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()));
        if !meta.is_file() || excluded || !util::is_asset_file(&name) {
            continue;
        }
        let Some(path_text) = path.to_str() else {
            continue;
        };
        let modified = meta
            .modified()
            .ok()
            .and_then(|time| Timestamp::try_from(time).ok())
            .map_or(Timestamp::UNIX_EPOCH, util::to_millis);
        found.push(Found {
            path: path_text.to_owned(),
            modified,
            size: meta.len(),
            sidecar: read_sidecar(&path),
        });
    }
}

fn read_sidecar(path: &Path) -> Option<Vec<u8>> {
    let mut beside = path.as_os_str().to_owned();
    beside.push(".xmp");
    std::fs::read(beside)
        .ok()
        .or_else(|| std::fs::read(path.with_extension("xmp")).ok())
}

/// The library sync jobs after a scan: known paths still on disk stay
/// (an offline one comes back online, a changed one is refreshed), known
/// paths gone from disk go offline and into the trash (`isOffline`,
/// `deletedAt`), and new paths become new assets. A moved file is a new
/// path, so a new asset with a new checksum; the old one goes offline.
pub(crate) fn apply_scan(state: &mut State, library_id: &str, found: &[Found]) {
    if !state.libraries.contains_key(library_id) {
        return;
    }
    let on_disk: HashMap<&str, &Found> = found
        .iter()
        .map(|file| (file.path.as_str(), file))
        .collect();
    let known: Vec<(String, String)> = state
        .assets
        .values()
        .filter(|r| r.asset.library_id.as_deref() == Some(library_id))
        .map(|r| (r.asset.id.clone(), r.asset.original_path.clone()))
        .collect();
    let mut known_paths = HashSet::new();
    for (id, path) in known {
        let now = state.now();
        let Some(record) = state.assets.get_mut(&id) else {
            continue;
        };
        let asset = &mut record.asset;
        match on_disk.get(path.as_str()) {
            Some(_) if asset.is_offline => {
                asset.is_offline = false;
                asset.deleted_at = None;
                asset.updated_at = now;
            }
            Some(file) if file.modified != asset.file_modified_at => {
                asset.file_modified_at = file.modified;
                asset.bytes_len = file.size;
                asset.updated_at = now;
            }
            None if !asset.is_offline => {
                asset.is_offline = true;
                asset.deleted_at = Some(now);
                asset.updated_at = now;
            }
            Some(_) | None => {}
        }
        known_paths.insert(path);
    }
    for file in found {
        if !known_paths.contains(&file.path) {
            create_asset(state, library_id, file);
        }
    }
    let now = state.now();
    if let Some(library) = state.libraries.get_mut(library_id) {
        library.refreshed_at = Some(now);
        library.updated_at = now;
    }
}

/// `LibraryService.processEntity`: the checksum of an external asset is the
/// SHA-1 of `path:<absolute path>`, not of its bytes.
fn create_asset(state: &mut State, library_id: &str, file: &Found) {
    let id = state.next_id();
    let now = state.now();
    let name = Path::new(&file.path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let raw = util::sha1_of(format!("path:{}", file.path).as_bytes());
    let xmp = file
        .sidecar
        .as_deref()
        .map(util::parse_xmp)
        .unwrap_or_default();
    let asset = Asset {
        id: id.clone(),
        owner_id: USER_ID.to_owned(),
        device_asset_id: name.split_whitespace().collect(),
        device_id: "Library Import".to_owned(),
        asset_type: util::asset_type(&name).to_owned(),
        original_path: file.path.clone(),
        original_file_name: name,
        checksum: util::to_base64(&raw),
        file_created_at: file.modified,
        file_modified_at: file.modified,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        is_favorite: false,
        visibility: "timeline".to_owned(),
        description: xmp.description.unwrap_or_default(),
        rating: xmp.rating,
        location: None,
        library_id: Some(library_id.to_owned()),
        is_offline: false,
        live_photo_video_id: None,
        duration: None,
        sidecar: file.sidecar.clone(),
        bytes_len: file.size,
    };
    state.assets.insert(id, AssetRec { asset, raw });
}
