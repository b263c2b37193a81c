//! Finding new inbox files while `keepsake run` runs: inotify events (through
//! notify), a full rescan at start and every `rescan_secs` (events are lost
//! on network shares, on queue overflow and while keepsake is stopped), and
//! the stability window of [`tracker`].

pub mod tracker;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};

use crate::config::Config;
use crate::discover;

/// An inbox as the watcher sees it.
#[derive(Debug, Clone)]
pub struct WatchedInbox {
    pub name: String,
    pub root: PathBuf,
    pub ignore: Vec<String>,
    pub watch: bool,
}

impl WatchedInbox {
    pub fn all(config: &Config) -> Vec<WatchedInbox> {
        config
            .inboxes
            .iter()
            .map(|inbox| WatchedInbox {
                name: inbox.name.clone(),
                root: inbox.path.clone(),
                ignore: inbox.ignore.clone(),
                watch: inbox.watch,
            })
            .collect()
    }
}

/// The inbox `path` belongs to, unless it (or a folder on the way to it) is
/// a partial download, a dotfile or matches the inbox's ignore globs.
pub fn inbox_of(inboxes: &[WatchedInbox], path: &Path) -> Option<usize> {
    let (i, inbox) = inboxes
        .iter()
        .enumerate()
        .find(|(_, inbox)| path.starts_with(&inbox.root))?;
    let rel = path.strip_prefix(&inbox.root).ok()?;
    // inotify watches follow links into the folders they point at: an event
    // from there (or about a link itself) is never taken.
    if crate::effects::fsops::through_symlink(&inbox.root, path) {
        return None;
    }
    let ignored = rel
        .components()
        .any(|c| discover::is_ignored(c.as_os_str().as_bytes(), &inbox.ignore));
    (!ignored && !rel.as_os_str().is_empty()).then_some(i)
}

/// What an event means for the tracker.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Created or written (`whole`: renamed into place, so complete). A
    /// folder stands for every file in it.
    Touched { path: PathBuf, whole: bool },
    /// Removed or renamed away.
    Gone(PathBuf),
    /// The kernel dropped events: only a rescan knows what changed.
    Lost,
}

pub fn changes(event: Event) -> Vec<Change> {
    if event.need_rescan() {
        return vec![Change::Lost];
    }
    let mut paths = event.paths.into_iter();
    let touched = |path, whole| Change::Touched { path, whole };
    match event.kind {
        EventKind::Create(CreateKind::File | CreateKind::Folder | CreateKind::Any)
        | EventKind::Create(CreateKind::Other)
        | EventKind::Modify(
            ModifyKind::Data(_) | ModifyKind::Metadata(_) | ModifyKind::Any | ModifyKind::Other,
        )
        | EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            paths.map(|p| touched(p, false)).collect()
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            paths.map(|p| touched(p, true)).collect()
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            let from = paths.next();
            let to = paths.next();
            from.map(Change::Gone)
                .into_iter()
                .chain(to.map(|p| touched(p, true)))
                .collect()
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
            paths.map(Change::Gone).collect()
        }
        EventKind::Modify(ModifyKind::Name(_)) => paths
            .map(|p| {
                if p.symlink_metadata().is_ok() {
                    touched(p, true)
                } else {
                    Change::Gone(p)
                }
            })
            .collect(),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => Vec::new(),
    }
}

/// Watch every inbox that allows it; events go to `send`. An inbox that
/// cannot be watched (too many folders for the inotify limit, a filesystem
/// without events) is returned with the reason: the rescan alone serves it.
pub fn start_watcher(
    inboxes: &[WatchedInbox],
    send: impl Fn(notify::Result<Event>) + Send + 'static,
) -> notify::Result<(notify::RecommendedWatcher, Vec<(String, notify::Error)>)> {
    let mut watcher = notify::recommended_watcher(send)?;
    let mut unwatched = Vec::new();
    for inbox in inboxes.iter().filter(|i| i.watch) {
        if let Err(e) = watcher.watch(&inbox.root, RecursiveMode::Recursive) {
            // A partial recursive watch would miss some folders silently.
            let _ = watcher.unwatch(&inbox.root);
            unwatched.push((inbox.name.clone(), e));
        }
    }
    Ok((watcher, unwatched))
}

/// Every file under `dir` a walk would take (for a folder created or moved
/// into an inbox: files may land in it before its watch exists).
pub fn files_under(dir: &Path, ignore: &[String]) -> Vec<PathBuf> {
    discover::walk(dir, ignore)
        .files
        .into_iter()
        .map(|c| c.path)
        .collect()
}

/// Stable files grouped by (inbox, folder): each folder is listed once to
/// pair sidecars. Each name keeps the look it was found stable with.
pub fn by_folder(ready: Vec<tracker::Stable>) -> Vec<(usize, PathBuf, Folder)> {
    let mut groups: BTreeMap<(usize, PathBuf), Folder> = BTreeMap::new();
    for stable in ready {
        let (Some(dir), Some(name)) = (stable.path.parent(), stable.path.file_name()) else {
            continue;
        };
        groups
            .entry((stable.inbox, dir.to_path_buf()))
            .or_default()
            .insert(name.to_os_string(), stable.look);
    }
    groups
        .into_iter()
        .map(|((inbox, dir), names)| (inbox, dir, names))
        .collect()
}

/// Names in one folder, with (size, mtime, inode) as found stable.
pub type Folder = HashMap<OsString, (u64, i64, u64)>;
