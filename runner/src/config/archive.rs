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
}

impl RawArchive {
    pub(super) fn validate(
        &self,
        base: &Path,
        library_root: &Path,
        inboxes: &[super::Inbox],
    ) -> Result<ArchiveConfig, (String, String)> {
        let root = self.root.as_ref().map(|p| super::resolve(base, p));
        if let Some(root) = &root
            && (root.starts_with(library_root) || library_root.starts_with(root))
        {
            return Err((
                "archive.root".into(),
                "must be outside the library (and not contain it)".into(),
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
            sweep_every: (self.sweep_hours > 0.0)
                .then(|| std::time::Duration::from_secs_f64(self.sweep_hours * 3600.0)),
            auto_run: self.auto_run,
            remove_icloud_copies: self.remove_icloud_copies,
        })
    }
}
