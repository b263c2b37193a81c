//! The stability window: a file is taken only once its size, mtime and inode
//! have stayed the same for the window, so nothing is read while a phone, a
//! sync tool or a slow copy is still writing it. The window is measured on
//! keepsake's own monotonic clock between two looks, never as the file's
//! mtime against local time: an NFS or SMB server whose clock is minutes
//! behind makes a file that is still growing look old.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a file looked when last checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

/// A file found stable, and how it looked then: registration takes it only
/// if it still looks the same.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stable {
    pub inbox: usize,
    pub path: PathBuf,
    pub look: (u64, i64, u64),
}

impl Look {
    fn of(path: &Path) -> Option<Look> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        meta.is_file().then(|| Look {
            size: meta.len(),
            mtime_ns: crate::discover::mtime_ns(&meta),
            inode: meta.ino(),
        })
    }
}

#[derive(Debug)]
struct Tracked {
    inbox: usize,
    look: Look,
    /// When `look` was first seen as it is now.
    since: Instant,
    /// Moved into the inbox whole (a rename): taken at the next check.
    whole: bool,
    /// When to check again.
    due: Instant,
    /// Found stable, but waiting for a sibling that is not yet.
    settled: bool,
}

/// Files seen but not yet stable.
#[derive(Debug)]
pub struct Tracker {
    window: Duration,
    files: HashMap<PathBuf, Tracked>,
    /// Files that disappeared before they were stable.
    pub vanished: u64,
}

/// A short second look for files that need no full window: renamed into
/// place (a finished download or sync). Long enough for a downloader
/// to write the sidecar it writes right after the photo (icloudpd
/// `--xmp-sidecar`), which then holds the photo back until it is stable.
const SECOND_LOOK: Duration = Duration::from_millis(500);

impl Tracker {
    pub fn new(window: Duration) -> Tracker {
        Tracker {
            window,
            files: HashMap::new(),
            vanished: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Something happened to `path` (created, written, renamed in, or found
    /// by a rescan). `whole`: it was renamed into place, so it is complete.
    pub fn observe(&mut self, inbox: usize, path: PathBuf, whole: bool, now: Instant) {
        let Some(look) = Look::of(&path) else {
            if self.files.remove(&path).is_some() {
                self.vanished += 1;
            }
            return;
        };
        let due = now + if whole { SECOND_LOOK } else { self.window };
        match self.files.get_mut(&path) {
            Some(tracked) if tracked.look == look => {
                tracked.whole |= whole;
                tracked.due = tracked.due.min(due);
            }
            // New, or changed since it was last seen: its window starts now.
            _ => {
                self.files.insert(
                    path,
                    Tracked {
                        inbox,
                        look,
                        since: now,
                        whole,
                        due,
                        settled: false,
                    },
                );
            }
        }
    }

    /// Forget a path (removed or renamed away) and everything under it.
    pub fn forget(&mut self, path: &Path) {
        self.files.retain(|p, _| !p.starts_with(path));
    }

    /// When the next file is due for a check.
    pub fn next_due(&self) -> Option<Instant> {
        self.files.values().map(|t| t.due).min()
    }

    /// Check the files that are due: return those now stable (and stop
    /// tracking them); a file that changed starts its window again.
    pub fn take_stable(&mut self, now: Instant) -> Vec<Stable> {
        let due: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(_, t)| t.due <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            let Some(tracked) = self.files.get_mut(&path) else {
                continue;
            };
            match Look::of(&path) {
                None => {
                    self.files.remove(&path);
                    self.vanished += 1;
                }
                Some(look) if look != tracked.look => {
                    // Still being written: the window starts again.
                    tracked.look = look;
                    tracked.since = now;
                    tracked.whole = false;
                    tracked.settled = false;
                    tracked.due = now + self.window;
                }
                Some(_) => {
                    let quiet = now.duration_since(tracked.since) >= self.window;
                    if quiet || tracked.whole {
                        tracked.settled = true;
                        // Looked at again while it waits for a sibling.
                        tracked.due = now + self.window;
                    } else {
                        tracked.due = tracked.since + self.window;
                    }
                }
            }
        }
        self.release_settled()
    }

    /// Settled files leave together with their siblings: a photo waits for
    /// the sidecar still being written (`IMG_1.HEIC.xmp`), a Live Photo's
    /// still for its video (`IMG_1.MOV`), so each group is registered in one
    /// go and paired as a full walk pairs them.
    fn release_settled(&mut self) -> Vec<Stable> {
        if !self.files.values().any(|t| t.settled) {
            return Vec::new();
        }
        let unsettled: HashSet<(PathBuf, Vec<u8>)> = self
            .files
            .iter()
            .filter(|(_, t)| !t.settled)
            .filter_map(|(path, _)| sibling_key(path))
            .collect();
        // A settled file waits for its siblings at most a few windows: a
        // sibling that keeps changing must not hold it forever.
        let now = Instant::now();
        let patience = self.window * 3;
        let release: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(path, t)| {
                t.settled
                    && (sibling_key(path).is_none_or(|key| !unsettled.contains(&key))
                        || now.duration_since(t.since) >= patience + self.window)
            })
            .map(|(path, _)| path.clone())
            .collect();
        release
            .into_iter()
            .filter_map(|path| {
                let tracked = self.files.remove(&path)?;
                Some(Stable {
                    inbox: tracked.inbox,
                    path,
                    look: (tracked.look.size, tracked.look.mtime_ns, tracked.look.inode),
                })
            })
            .collect()
    }
}

/// (folder, lower-case stem of the media name): `IMG_1.HEIC`, `IMG_1.MOV`,
/// `IMG_1.HEIC.xmp` and `IMG_1.AAE` share one.
fn sibling_key(path: &Path) -> Option<(PathBuf, Vec<u8>)> {
    let name = path.file_name()?.as_bytes();
    let base = if crate::discover::is_sidecar(name) {
        crate::discover::sidecar_base(name)
    } else {
        name.to_vec()
    };
    let stem = crate::discover::stem(&base.to_ascii_lowercase()).to_vec();
    Some((path.parent()?.to_path_buf(), stem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(stable: Vec<Stable>) -> Vec<(usize, PathBuf)> {
        stable.into_iter().map(|s| (s.inbox, s.path)).collect()
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // test scratch files
    fn a_growing_file_waits_for_a_quiet_window() {
        let dir = std::env::temp_dir().join(format!("keepsake-tracker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.jpg");
        std::fs::write(&file, b"one").unwrap();
        // Long enough that the real clock never makes the file look old.
        let window = Duration::from_secs(30);
        let mut tracker = Tracker::new(window);
        let start = Instant::now();
        tracker.observe(0, file.clone(), false, start);
        assert!(
            tracker
                .take_stable(start + Duration::from_secs(15))
                .is_empty()
        );
        std::fs::write(&file, b"one two").unwrap();
        // Changed: the window starts again from this check.
        let t1 = start + Duration::from_secs(31);
        assert!(tracker.take_stable(t1).is_empty());
        assert!(tracker.take_stable(t1 + Duration::from_secs(20)).is_empty());
        assert_eq!(
            paths(tracker.take_stable(t1 + window)),
            vec![(0, file.clone())]
        );
        assert!(tracker.is_empty());

        // Renamed in: taken at the next look, without the window.
        tracker.observe(1, file.clone(), true, t1);
        assert_eq!(
            paths(tracker.take_stable(t1 + SECOND_LOOK)),
            vec![(1, file.clone())]
        );

        // Deleted before it was stable: forgotten, counted.
        tracker.observe(0, file.clone(), false, t1);
        std::fs::remove_file(&file).unwrap();
        assert!(tracker.take_stable(t1 + window).is_empty());
        assert_eq!(tracker.vanished, 1);

        // A photo waits for its sidecar that is still being written.
        let sidecar = dir.join("a.jpg.xmp");
        std::fs::write(&file, b"photo").unwrap();
        std::fs::write(&sidecar, b"<x:xmpmeta/>").unwrap();
        let t2 = t1 + window * 2;
        tracker.observe(0, file.clone(), true, t2);
        tracker.observe(0, sidecar.clone(), false, t2);
        assert!(tracker.take_stable(t2 + SECOND_LOOK).is_empty());
        let mut both = paths(tracker.take_stable(t2 + window));
        both.sort();
        assert_eq!(both, vec![(0, file.clone()), (0, sidecar.clone())]);

        // A Live Photo's still waits for its video.
        let video = dir.join("a.mov");
        std::fs::remove_file(&sidecar).unwrap();
        std::fs::write(&video, b"video").unwrap();
        let t3 = t2 + window * 2;
        tracker.observe(0, file.clone(), true, t3);
        tracker.observe(0, video.clone(), false, t3);
        assert!(tracker.take_stable(t3 + SECOND_LOOK).is_empty());
        assert_eq!(tracker.take_stable(t3 + window).len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
