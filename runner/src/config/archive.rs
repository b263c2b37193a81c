//! `[archive]`: where old years go, and the rolling iCloud archive.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArchive {
    /// The archive root (another disk or folder).
    root: Option<PathBuf>,
    /// The inboxes icloudpd downloads into (default: every inbox whose name
    /// contains "icloud").
    icloud_inboxes: Option<Vec<String>>,
    /// The rolling policy: years older than this many stay in iCloud and the
    /// live library no more (`archive plan --older-than-years`, the sweep).
    keep_years: Option<u32>,
    /// Hours between sweeps of `keepsake run` that write the plan of every
    /// year older than `keep_years` (0: no sweep).
    #[serde(default)]
    sweep_hours: f64,
    /// Let the sweep also move a year that its plan proves safe.
    #[serde(default)]
    auto_run: bool,
    /// After a year is archived and verified (and its plan is safe), remove
    /// its files from the icloudpd download tree (copy-mode inboxes).
    #[serde(default)]
    remove_icloud_copies: bool,
    /// kei's state database (`~/.config/kei/…/USER.db`): its inventory of
    /// iCloud's items makes the proof see what the downloader never fetched.
    kei_state: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveConfig {
    pub root: Option<PathBuf>,
    pub icloud_inboxes: Vec<String>,
    pub keep_years: u32,
    /// Between sweeps (None: no sweep).
    pub sweep_every: Option<std::time::Duration>,
    pub auto_run: bool,
    pub remove_icloud_copies: bool,
    pub kei_state: Option<PathBuf>,
}

impl RawArchive {
    pub(super) fn validate(
        &self,
        base: &Path,
        library_root: &Path,
        state_dir: &Path,
        inboxes: &[super::Inbox],
        offsite_dirs: &[(String, PathBuf)],
    ) -> Result<ArchiveConfig, (String, String)> {
        let root = self.root.as_ref().map(|p| super::resolve(base, p));
        let overlaps = |other: &Path| {
            root.as_ref()
                .is_some_and(|root| super::overlaps(root, other))
        };
        if overlaps(library_root) || overlaps(state_dir) {
            return Err((
                "archive.root".into(),
                "must be outside the library and its state folder (and not contain them)".into(),
            ));
        }
        // An archive inside an inbox would be taken in again (and, in move
        // mode, removed from there): never.
        if let Some(inbox) = inboxes.iter().find(|i| overlaps(&i.path)) {
            return Err((
                "archive.root".into(),
                format!(
                    "must be outside inbox {:?} (and not contain it)",
                    inbox.name
                ),
            ));
        }
        if let Some(name) = offsite_dirs
            .iter()
            .find(|(_, path)| overlaps(path))
            .map(|(n, _)| n)
        {
            return Err((
                "archive.root".into(),
                format!(
                    "must be outside offsite target {name:?} (an offsite copy on the same disk protects nothing)"
                ),
            ));
        }
        let icloud_inboxes = match &self.icloud_inboxes {
            Some(names) => {
                for name in names {
                    if !inboxes.iter().any(|i| &i.name == name) {
                        return Err((
                            "archive.icloud_inboxes".into(),
                            format!("{name:?} is not an [[inbox]] name"),
                        ));
                    }
                }
                names.clone()
            }
            None => inboxes
                .iter()
                .filter(|i| i.name.to_lowercase().contains("icloud"))
                .map(|i| i.name.clone())
                .collect(),
        };
        if self.auto_run && root.is_none() {
            return Err((
                "archive.auto_run".into(),
                "needs `root`: where the archived years go".into(),
            ));
        }
        if !(self.sweep_hours.is_finite() && self.sweep_hours >= 0.0) {
            return Err((
                "archive.sweep_hours".into(),
                "hours between sweeps: 0 (none) or more".into(),
            ));
        }
        // At most a year between sweeps; a fraction of an hour is fine.
        let sweep_every = if self.sweep_hours > 0.0 {
            match std::time::Duration::try_from_secs_f64(self.sweep_hours * 3600.0) {
                Ok(every) if self.sweep_hours <= 24.0 * 366.0 => Some(every),
                _ => {
                    return Err(("archive.sweep_hours".into(), "at most 8784 (a year)".into()));
                }
            }
        } else {
            None
        };
        if self.keep_years.is_some_and(|k| k > 200) {
            return Err(("archive.keep_years".into(), "at most 200".into()));
        }
        if self.sweep_hours > 0.0 && self.keep_years.is_none() {
            return Err((
                "archive.sweep_hours".into(),
                "needs `keep_years`: which years the sweep looks at".into(),
            ));
        }
        Ok(ArchiveConfig {
            root,
            icloud_inboxes,
            keep_years: self.keep_years.unwrap_or(2),
            sweep_every,
            auto_run: self.auto_run,
            remove_icloud_copies: self.remove_icloud_copies,
            kei_state: self.kei_state.as_ref().map(|p| super::resolve(base, p)),
        })
    }
}
