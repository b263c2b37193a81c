//! Finding files in an inbox: a walk that never follows symlinks, skips
//! partial downloads, and pairs sidecars with the photo or video they belong to.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Sidecar extensions: they travel with their media file instead of being
/// jobs of their own.
const SIDECAR_EXTS: &[&str] = &["xmp", "json", "aae"];

/// A file found in an inbox.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    /// Relative to the inbox root, as raw bytes.
    pub rel_path: Vec<u8>,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    /// Sidecar file names in the same folder.
    pub companions: Vec<String>,
    /// A sidecar with no media file beside it.
    pub orphan_sidecar: bool,
}

/// What a walk found, and what it could not read.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<Candidate>,
    /// Sidecars asked for by name that travel with a media file beside them
    /// (and so are not candidates of their own).
    pub folded: Vec<PathBuf>,
    pub ignored: usize,
    pub errors: Vec<String>,
}

/// A file's mtime in nanoseconds since the epoch, as the ledger keeps it
/// (saturating: a file dated in the year 2300 must not stop keepsake).
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Partial downloads and tool droppings that are never taken.
pub fn is_ignored(name: &[u8], extra_globs: &[String]) -> bool {
    name.first() == Some(&b'.')
        || name.starts_with(b"~$")
        || name.ends_with(b".part")
        || name.ends_with(b".partial")
        || name.ends_with(b".crdownload")
        || name.ends_with(b".tmp")
        || extra_globs
            .iter()
            .any(|glob| glob_match(glob.as_bytes(), name))
}

/// `*` and `?` globs over a file name.
pub fn glob_match(glob: &[u8], name: &[u8]) -> bool {
    match (glob.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&glob[1..], name) || (!name.is_empty() && glob_match(glob, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&glob[1..], &name[1..]),
        (Some(g), Some(n)) if g == n => glob_match(&glob[1..], &name[1..]),
        _ => false,
    }
}

/// Walk `root` (a folder or a single file).
pub fn walk(root: &Path, extra_globs: &[String]) -> Walk {
    let mut walk = Walk::default();
    match std::fs::symlink_metadata(root) {
        Ok(meta) if meta.is_file() => {
            let dir = root.parent().unwrap_or(Path::new("."));
            let name = root.file_name().map(OsString::from).unwrap_or_default();
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    // Regular files only: a symlinked sidecar is never read.
                    let siblings: Vec<OsString> = entries
                        .flatten()
                        .filter(|e| {
                            let regular = e.file_type().is_ok_and(|t| t.is_file());
                            if !regular && is_sidecar(e.file_name().as_bytes()) {
                                tracing::warn!(
                                    "{} is not a regular file (a symlink?); keepsake never follows links in an inbox, so it is ignored",
                                    e.path().display()
                                );
                            }
                            regular
                        })
                        .map(|e| e.file_name())
                        .collect();
                    let companions = companions_of(name.as_bytes(), &siblings);
                    walk.files.push(candidate(
                        root,
                        name.as_bytes().to_vec(),
                        &meta,
                        companions,
                        false,
                    ));
                }
                Err(e) => walk
                    .errors
                    .push(format!("cannot read folder {}: {e}", dir.display())),
            }
        }
        Ok(meta) if meta.is_dir() => walk_dir(root, &[], extra_globs, &mut walk),
        Ok(_) => walk.ignored += 1,
        Err(e) => walk
            .errors
            .push(format!("cannot read {}: {e}", root.display())),
    }
    walk
}

fn walk_dir(dir: &Path, rel: &[u8], extra_globs: &[String], walk: &mut Walk) {
    let Some((files, mut subdirs)) = list_dir(dir, extra_globs, walk) else {
        return;
    };
    emit_files(dir, rel, files, None, walk);
    subdirs.sort();
    for sub in subdirs {
        let rel_path = join_rel(rel, sub.as_bytes());
        walk_dir(&dir.join(&sub), &rel_path, extra_globs, walk);
    }
}

/// The files `names` of one folder of the inbox at `root`, paired with their
/// sidecars as a full walk would pair them (the folder is listed once). A
/// name that is a sidecar of a media file beside it yields nothing: it
/// travels with that file.
pub fn walk_names(
    root: &Path,
    dir: &Path,
    names: &std::collections::HashSet<OsString>,
    extra_globs: &[String],
) -> Walk {
    let mut walk = Walk::default();
    if crate::effects::fsops::through_symlink(root, dir) {
        walk.errors.push(format!(
            "{} is reached through a symlink; keepsake never follows links in an inbox",
            dir.display()
        ));
        return walk;
    }
    let rel = dir
        .strip_prefix(root)
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    if let Some((files, _)) = list_dir(dir, extra_globs, &mut walk) {
        emit_files(dir, &rel, files, Some(names), &mut walk);
    }
    walk
}

type Listing = (Vec<(OsString, std::fs::Metadata)>, Vec<OsString>);

/// A folder's regular files (not ignored) and subfolders; symlinks and
/// other special files count as ignored.
fn list_dir(dir: &Path, extra_globs: &[String], walk: &mut Walk) -> Option<Listing> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            walk.errors.push(format!(
                "cannot read folder {}: {e}; files in it were not taken (fix its permissions and run again)",
                dir.display()
            ));
            return None;
        }
    };
    let mut files: Vec<(OsString, std::fs::Metadata)> = Vec::new();
    let mut subdirs = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                walk.errors
                    .push(format!("cannot list {}: {e}", dir.display()));
                continue;
            }
        };
        let name = entry.file_name();
        if is_ignored(name.as_bytes(), extra_globs) {
            walk.ignored += 1;
            continue;
        }
        // symlink_metadata: a symlink is never followed, wherever it points.
        let meta = match std::fs::symlink_metadata(entry.path()) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                walk.errors
                    .push(format!("cannot stat {}: {e}", entry.path().display()));
                continue;
            }
        };
        if meta.is_dir() {
            subdirs.push(name);
        } else if meta.is_file() {
            files.push((name, meta));
        } else {
            if meta.file_type().is_symlink() {
                tracing::info!(
                    "{} is a symlink; keepsake never follows links in an inbox, so it is ignored",
                    entry.path().display()
                );
            }
            walk.ignored += 1;
        }
    }
    Some((files, subdirs))
}

/// Candidates for a folder's files (those in `only`, when given), sidecars
/// folded into the media file they belong to.
fn emit_files(
    dir: &Path,
    rel: &[u8],
    mut files: Vec<(OsString, std::fs::Metadata)>,
    only: Option<&std::collections::HashSet<OsString>>,
    walk: &mut Walk,
) {
    // By name, but a still before the video of the same stem: a Live Photo's
    // video is then decided after its still and placed beside it.
    files.sort_by_cached_key(|(name, _)| {
        let bytes = name.as_bytes();
        (
            stem(bytes).to_ascii_lowercase(),
            is_video(bytes),
            name.clone(),
        )
    });
    let names: Vec<OsString> = files.iter().map(|(n, _)| n.clone()).collect();
    let sidecar_owner = sidecar_owners(&names);
    for (i, (name, meta)) in files.iter().enumerate() {
        if only.is_some_and(|only| !only.contains(name)) {
            continue;
        }
        let is_sidecar = is_sidecar(name.as_bytes());
        if is_sidecar && sidecar_owner.contains_key(&i) {
            if only.is_some() {
                walk.folded.push(dir.join(name));
            }
            continue; // travels with its media file
        }
        let companions = if is_sidecar {
            Vec::new()
        } else {
            sidecar_owner
                .iter()
                .filter(|(_, owner)| **owner == i)
                .map(|(sidecar, _)| names[*sidecar].to_string_lossy().into_owned())
                .collect()
        };
        let rel_path = join_rel(rel, name.as_bytes());
        walk.files.push(candidate(
            &dir.join(name),
            rel_path,
            meta,
            companions,
            is_sidecar,
        ));
    }
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = rel.to_vec();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

fn candidate(
    path: &Path,
    rel_path: Vec<u8>,
    meta: &std::fs::Metadata,
    mut companions: Vec<String>,
    orphan_sidecar: bool,
) -> Candidate {
    companions.sort();
    Candidate {
        path: path.to_path_buf(),
        rel_path,
        size: meta.len(),
        mtime_ns: mtime_ns(meta),
        inode: meta.ino(),
        companions,
        orphan_sidecar,
    }
}

fn ext_lower(name: &[u8]) -> Option<String> {
    let dot = name.iter().rposition(|&b| b == b'.')?;
    Some(String::from_utf8_lossy(&name[dot + 1..]).to_ascii_lowercase())
}

pub fn is_sidecar(name: &[u8]) -> bool {
    ext_lower(name).is_some_and(|ext| SIDECAR_EXTS.contains(&ext.as_str()))
}

/// The name a sidecar describes: `IMG_1.jpg.xmp` → `IMG_1.jpg`,
/// `IMG_1.jpg.supplemental-metadata.json` → `IMG_1.jpg`, `IMG_1.AAE` → `IMG_1`.
pub fn sidecar_base(name: &[u8]) -> Vec<u8> {
    let lower = name.to_ascii_lowercase();
    let dot = lower
        .iter()
        .rposition(|&b| b == b'.')
        .unwrap_or(lower.len());
    let mut base = &name[..dot];
    for suffix in [
        &b".supplemental-metadata"[..],
        b".supplemental-metad",
        b".suppl",
    ] {
        if base.to_ascii_lowercase().ends_with(suffix) {
            base = &base[..base.len() - suffix.len()];
            break;
        }
    }
    base.to_vec()
}

/// Google Takeout names the sidecar of `IMG(1).jpg` `IMG.jpg(1).json`:
/// `img.jpg(1)` → `img(1).jpg`.
fn takeout_numbered(base: &[u8]) -> Option<Vec<u8>> {
    if base.last() != Some(&b')') {
        return None;
    }
    let open = base.iter().rposition(|&b| b == b'(')?;
    let number = &base[open + 1..base.len() - 1];
    if number.is_empty() || !number.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let name = &base[..open];
    let dot = name.iter().rposition(|&b| b == b'.')?;
    let mut out = name[..dot].to_vec();
    out.extend_from_slice(&base[open..]);
    out.extend_from_slice(&name[dot..]);
    Some(out)
}

fn is_video(name: &[u8]) -> bool {
    matches!(
        ext_lower(name).as_deref(),
        Some("mov" | "mp4" | "m4v" | "3gp" | "mts" | "m2ts" | "avi")
    )
}

pub fn stem(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => &name[..dot],
        _ => name,
    }
}

/// Map sidecar index → media index, for the sidecars whose media file is in
/// the same folder. `IMG_1.jpg.xmp` matches `IMG_1.jpg` exactly; `IMG_1.xmp`
/// matches the media file with stem `IMG_1` (a still before its Live Photo video).
fn sidecar_owners(names: &[OsString]) -> HashMap<usize, usize> {
    let mut by_name: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut by_stem: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let bytes = name.as_bytes();
        if is_sidecar(bytes) {
            continue;
        }
        by_name.insert(bytes.to_ascii_lowercase(), i);
        let key = stem(bytes).to_ascii_lowercase();
        match by_stem.get(&key) {
            Some(_) if is_video(bytes) => {}
            _ => {
                by_stem.insert(key, i);
            }
        }
    }
    let mut owners = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if !is_sidecar(name.as_bytes()) {
            continue;
        }
        let base = sidecar_base(name.as_bytes()).to_ascii_lowercase();
        let owner = by_name
            .get(&base)
            .or_else(|| by_stem.get(&base))
            .or_else(|| takeout_numbered(&base).and_then(|n| by_name.get(&n)));
        if let Some(&owner) = owner {
            owners.insert(i, owner);
        }
    }
    owners
}

/// Companions of one file among its siblings (for a file named on the command line).
fn companions_of(name: &[u8], siblings: &[OsString]) -> Vec<String> {
    let mut names: Vec<OsString> = siblings.to_vec();
    names.sort();
    let Some(me) = names.iter().position(|n| n.as_bytes() == name) else {
        return Vec::new();
    };
    sidecar_owners(&names)
        .into_iter()
        .filter(|(_, owner)| *owner == me)
        .map(|(sidecar, _)| names[sidecar].to_string_lossy().into_owned())
        .collect()
}

/// The library name of a companion, given where its media file went:
/// `IMG_1.HEIC.xmp` follows `IMG_1.HEIC` → `20240512_IMG_1.HEIC.xmp`;
/// `IMG_1.AAE` follows its stem → `20240512_IMG_1.AAE`.
pub fn companion_dest_name(companion: &str, media_name: &str, placed_name: &str) -> String {
    let lower = companion.to_ascii_lowercase();
    let media_lower = media_name.to_ascii_lowercase();
    if lower.starts_with(&format!("{media_lower}.")) {
        return format!("{placed_name}{}", &companion[media_name.len()..]);
    }
    let media_stem = String::from_utf8_lossy(stem(media_name.as_bytes())).into_owned();
    let placed_stem = String::from_utf8_lossy(stem(placed_name.as_bytes())).into_owned();
    if lower.starts_with(&format!("{}.", media_stem.to_ascii_lowercase())) {
        return format!("{placed_stem}{}", &companion[media_stem.len()..]);
    }
    // Takeout's `IMG.jpg(1).json` for `IMG(1).jpg`: keep only the extension.
    let ext = companion.rsplit('.').next().unwrap_or(companion);
    format!("{placed_name}.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_partial_downloads() {
        for name in [
            "IMG_1.JPG.part",
            ".syncthing.IMG_1.JPG.tmp",
            "~$doc",
            ".DS_Store",
        ] {
            assert!(is_ignored(name.as_bytes(), &[]), "{name}");
        }
        assert!(!is_ignored(b"IMG_1.JPG", &[]));
        assert!(is_ignored(b"sticker-1.webp", &["sticker-*.webp".into()]));
    }

    #[test]
    fn pairs_sidecars() {
        let names: Vec<OsString> = [
            "IMG_1.HEIC",
            "IMG_1.HEIC.xmp",
            "IMG_1.MOV",
            "IMG_1.AAE",
            "IMG_2.jpg",
            "IMG_2.jpg.supplemental-metadata.json",
            "lonely.xmp",
            "IMG_4179(1).jpeg",
            "IMG_4179.jpeg(1).json",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let owners = sidecar_owners(&names);
        assert_eq!(owners.get(&1), Some(&0));
        assert_eq!(
            owners.get(&3),
            Some(&0),
            "AAE goes with the still, not the video"
        );
        assert_eq!(owners.get(&5), Some(&4));
        assert_eq!(owners.get(&6), None);
        assert_eq!(
            owners.get(&8),
            Some(&7),
            "Takeout's IMG.jpg(1).json goes with IMG(1).jpg"
        );
        assert_eq!(
            companion_dest_name("IMG_1.HEIC.xmp", "IMG_1.HEIC", "x_IMG_1.HEIC"),
            "x_IMG_1.HEIC.xmp"
        );
        assert_eq!(
            companion_dest_name("IMG_1.AAE", "IMG_1.HEIC", "x_IMG_1.HEIC"),
            "x_IMG_1.AAE"
        );
    }
}
