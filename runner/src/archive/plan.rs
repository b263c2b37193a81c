//! The proof that a year may leave iCloud (`archive plan`).
//!
//! A family deletes a whole year in iCloud on the strength of this verdict,
//! so it is built from iCloud's side, not from what keepsake happened to
//! take:
//!
//! - every file in the iCloud inboxes now (partial downloads, files not
//!   scanned yet, ignored and skipped ones; only [`JUNK`] is exempt), every
//!   job those inboxes ever had, and, when given, an inventory of iCloud's
//!   own names (`--inventory`);
//! - each planned in every year it could belong to: its capture year in
//!   local time and in UTC, the year of the downloader's `YYYY/MM[/DD]`
//!   folders, and a Live Photo's video with its still;
//! - each needs its bytes (and its sidecars) verified in the library or the
//!   archive, and a checked copy on every target that is a real copy off
//!   this machine: not a manifest, not a folder on the library's disk;
//! - copies are compared by content wherever the target gives a hash
//!   without a download (a folder rehashed, S3's stored SHA-256, rclone's
//!   SHA-256); the plan names the objects it could check only by size.
//!
//! The verdict carries its time and its basis, and any later change to the
//! year removes it ([`void`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Held, Root, held};
use crate::config::{Config, TargetKind};
use crate::discover::{is_ignored, is_sidecar, sidecar_base};
use crate::effects::fsops;
use crate::ledger::{self, JobState, Ledger, LedgerError};
use crate::offsite::{Depth, Found};

/// Names that are never photos: folder litter of macOS, Windows and NAS
/// systems, the sync tools' own files, and keepsake's. Files with these
/// names, and everything in these folders, are outside the proof.
pub const JUNK: &[&str] = &[
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "desktop.ini",
    ".directory",
    ".stignore",
    ".keepsake-*",
    "@eaDir/",
    ".@__thumb/",
    ".stfolder/",
    ".Trashes/",
    ".Spotlight-V100/",
    ".fseventsd/",
    ".TemporaryItems/",
    "lost+found/",
];

fn is_junk(name: &[u8], is_dir: bool) -> bool {
    JUNK.iter().any(|pattern| {
        let (pattern, dir_only) = match pattern.strip_suffix('/') {
            Some(dir) => (dir, true),
            None => (*pattern, false),
        };
        dir_only == is_dir && crate::discover::glob_match(pattern.as_bytes(), name)
    })
}

/// What a plan is asked to take into account beyond the files.
#[derive(Debug, Default, Clone)]
pub struct PlanOptions {
    /// Download every offsite copy and rehash it.
    pub deep: bool,
    /// A list of iCloud's items: one file name and creation time per line.
    pub inventory: Option<PathBuf>,
}

/// One iCloud item of the year, and what stands between it and deletion.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct PlanItem {
    /// The name the family sees in iCloud (the downloader's file name).
    pub icloud_name: String,
    /// `inbox:relative path` of the file the downloader wrote, if any.
    pub inbox_path: Option<String>,
    /// iCloud's own id of the asset, where kei's state names it.
    pub icloud_id: Option<String>,
    pub capture_time: Option<String>,
    /// Every year it could belong to (none known: every year).
    pub years: Vec<i32>,
    /// `root:path`, when keepsake holds its bytes.
    pub held_at: Option<String>,
    pub bytes_verified: bool,
    /// `root:path` of its sidecars in the library or archive.
    pub sidecars: Vec<String>,
    /// Per offsite target: "verified", "size only: why", or what is wrong.
    pub offsite: BTreeMap<String, String>,
    pub blockers: Vec<String>,
}

/// What a plan rests on.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct Basis {
    /// Where the list of iCloud's items comes from: the files only, or a
    /// given inventory.
    pub items_from: String,
    /// What this level of proof cannot see.
    pub cannot_see: Vec<String>,
    /// Per offsite target: how its copies were checked, or why it does not
    /// count as a copy.
    pub targets: BTreeMap<String, String>,
    /// Per offsite target: a digest of its whole table (where, which
    /// bucket, which keys), so a target changed under its name voids it.
    #[serde(default)]
    pub target_ids: BTreeMap<String, String>,
    pub deep: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    pub year: i32,
    /// When the plan was made (RFC 3339, UTC).
    pub made_at: String,
    pub icloud_inboxes: Vec<String>,
    pub basis: Basis,
    pub items: Vec<PlanItem>,
    pub safe: bool,
    /// Blockers that concern no single item (no offsite target, ...).
    pub general: Vec<String>,
    /// Offsite copies checked by size only (no content hash without a
    /// download): `target: key (why)`.
    pub size_only: Vec<String>,
    /// Where the plan and the safe-to-delete list were written.
    pub plan_file: Option<PathBuf>,
    pub safe_list: Option<PathBuf>,
    /// The iCloud downloads this plan proved kept (for `remove_icloud_copies`).
    #[serde(skip)]
    pub(super) removable: Vec<Removable>,
    /// The ledger's change count the plan was made at: a removal stops
    /// once it moves.
    #[serde(skip)]
    pub(super) changes_seen: u64,
}

/// An iCloud download the plan proved kept, as it was when planned.
#[derive(Debug, Clone)]
pub(super) struct Removable {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub blake3: String,
    /// The copy that keeps its bytes, and that copy's BLAKE3.
    pub kept: PathBuf,
    pub kept_blake3: String,
}

impl Plan {
    pub fn blocked(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| !i.blockers.is_empty())
    }

    pub fn verdict(&self) -> String {
        let n = self.items.len();
        if self.safe {
            format!(
                "{}: {n} items, all verified — safe to delete from iCloud",
                self.year
            )
        } else {
            let blocked = self.blocked().count();
            let mut why = self.general.clone();
            if blocked > 0 {
                why.push(format!(
                    "{blocked} of {n} items are not proven safe (listed above)"
                ));
            }
            format!(
                "{}: {n} items — NOT safe to delete from iCloud: {}",
                self.year,
                why.join("; ")
            )
        }
    }
}

// ------------------------------------------------------------------ years

/// The years a capture time could mean: its own (local) year, and its year
/// in UTC. A time without an offset within 14 hours of New Year could be
/// either year anywhere on Earth.
pub fn capture_years(time: &str) -> BTreeSet<i32> {
    let mut years = BTreeSet::new();
    let Some(local) = time.get(..4).and_then(|y| y.parse::<i32>().ok()) else {
        return years;
    };
    years.insert(local);
    match time.parse::<jiff::Timestamp>() {
        // An offset is often UTC's (QuickTime, an mtime on a UTC host),
        // not the zone the family sees the photo in: every year the instant
        // is somewhere on Earth.
        Ok(instant) => years.extend(super::kei::years_of(instant.as_second())),
        Err(_) => {
            let month_day = time.get(5..10).unwrap_or("");
            let hour: u32 = time.get(11..13).and_then(|h| h.parse().ok()).unwrap_or(12);
            if month_day == "12-31" && hour >= 10 {
                years.insert(local + 1);
            } else if month_day == "01-01" && hour < 14 {
                years.insert(local - 1);
            }
        }
    }
    years
}

/// The years a downloader's folders give (`…/2019/12/31/IMG_1.HEIC`,
/// `2019/12/IMG_1.HEIC`, `2019/IMG_1.HEIC`, at any depth), with the next or
/// the previous year too where the folder's date is the year's last or
/// first day (or month, without a day): the downloader's clock and the
/// photo's zone may differ by up to 14 hours.
pub fn folder_years(rel: &[u8]) -> BTreeSet<i32> {
    let parts: Vec<&[u8]> = rel.split(|b| *b == b'/').collect();
    let folders = &parts[..parts.len().saturating_sub(1)];
    let number = |part: &[u8], len: usize| -> Option<u32> {
        (part.len() == len && part.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())
            .flatten()
    };
    let mut years = BTreeSet::new();
    for (i, part) in folders.iter().enumerate() {
        // `2019/12/31`, or one folder `2019-12-31`, `2019_12`, `2019-12`.
        let fields: Vec<&[u8]> = part.split(|b| *b == b'-' || *b == b'_').collect();
        let (year, month, day) = if fields.len() == 1 {
            (
                number(part, 4),
                folders.get(i + 1).and_then(|m| number(m, 2)),
                folders.get(i + 2).and_then(|d| number(d, 2)),
            )
        } else if (2..=3).contains(&fields.len()) {
            let Some(month) = number(fields[1], 2) else {
                continue;
            };
            (
                number(fields[0], 4),
                Some(month),
                fields.get(2).and_then(|d| number(d, 2)),
            )
        } else {
            continue;
        };
        let Some(year) = year.filter(|y| (1900..=2200).contains(y)) else {
            continue;
        };
        let year = year as i32;
        years.insert(year);
        let month = month.filter(|m| (1..=12).contains(m));
        let day = month.and(day).filter(|d| (1..=31).contains(d));
        match (month, day) {
            (Some(12), None | Some(31)) => {
                years.insert(year + 1);
            }
            (Some(1), None | Some(1)) => {
                years.insert(year - 1);
            }
            _ => {}
        }
    }
    years
}

// ------------------------------------------------------------------ plan

/// Why each offsite target counts as a copy off this machine, or does not.
fn target_basis(config: &Config, deep: bool) -> (BTreeMap<String, String>, Vec<String>) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let ours: HashSet<Disk> = [
        Some(config.library_root.as_path()),
        config.archive.root.as_deref(),
    ]
    .into_iter()
    .flatten()
    .flat_map(|path| disks(path, &mountinfo))
    .collect();
    let mut basis = BTreeMap::new();
    let mut counted = Vec::new();
    for (name, target) in &config.offsite {
        let how = match &target.kind {
            TargetKind::Manifest { path } => format!(
                "not a copy: a manifest ({}) only lists files for another tool (restic); it never makes a year safe",
                path.display()
            ),
            TargetKind::Dir { path }
                if !target.same_disk
                    && disks(path, &mountinfo).iter().any(|d| ours.contains(d)) =>
            {
                format!(
                    "not off this machine: {} is on the same disk as the library or archive; a copy there dies with it (say `same_disk = true` in [offsite.{name}] if it really is another disk)",
                    path.display()
                )
            }
            _ if deep => {
                counted.push(name.clone());
                "copy: every object downloaded and rehashed (--deep)".into()
            }
            TargetKind::Dir { .. } => {
                counted.push(name.clone());
                "copy: every file rehashed".into()
            }
            TargetKind::S3 { .. } => {
                counted.push(name.clone());
                "copy: the SHA-256 the server checked at upload (HEAD, checksum mode); size and ETag where it keeps none".into()
            }
            TargetKind::Rclone { .. } => {
                counted.push(name.clone());
                "copy: the remote's SHA-256, SHA-1 or MD5 where it keeps one; size elsewhere".into()
            }
        };
        basis.insert(name.clone(), how);
    }
    (basis, counted)
}

/// A digest of each offsite target's table.
fn target_ids(config: &Config) -> BTreeMap<String, String> {
    config
        .offsite
        .iter()
        .map(|(name, target)| {
            let digest = blake3::hash(format!("{target:?}").as_bytes()).to_hex();
            (name.clone(), digest[..16].to_string())
        })
        .collect()
}

/// The device of `path`, or of its nearest existing parent (a folder
/// target not created yet lives where it will be created).
fn nearest_device(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    path.ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev())
}

/// What a disk is known by: the device number a path reports, and the
/// block device or pool behind its mount. btrfs subvolumes (a Synology
/// share), ZFS datasets and bind mounts each report a device number of
/// their own, yet die with the one disk behind them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Disk {
    Number(u64),
    Backing(String),
}

fn disks(path: &Path, mountinfo: &str) -> Vec<Disk> {
    let mut found: Vec<Disk> = nearest_device(path).map(Disk::Number).into_iter().collect();
    let near = path.ancestors().find_map(|p| std::fs::canonicalize(p).ok());
    if let Some(backing) = near.and_then(|p| backing_of(mountinfo, &p)) {
        found.push(Disk::Backing(backing));
    }
    found
}

/// The block device (or ZFS pool) behind the mount that holds `path`, from
/// `/proc/self/mountinfo`: the longest mount point that is a prefix of it.
/// None for filesystems with no disk of their own (tmpfs, overlay, FUSE,
/// NFS, SMB): those are told apart by device number alone.
fn backing_of(mountinfo: &str, path: &Path) -> Option<String> {
    let unescape = |field: &str| -> String {
        // Spaces, tabs, newlines and backslashes are written `\ooo`.
        let bytes = field.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let octal = bytes
                .get(i + 1..i + 4)
                .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
            match octal {
                Some(d) => {
                    out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                    i += 4;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        let mount_point = PathBuf::from(unescape(mount_point));
        if !path.starts_with(&mount_point) {
            continue;
        }
        let depth = mount_point.components().count();
        let source = unescape(source);
        let backing = if *fstype == "zfs" {
            format!("zfs:{}", source.split('/').next().unwrap_or(&source))
        } else if source.starts_with("/dev/") {
            format!("block:{source}")
        } else {
            String::new()
        };
        // A later mount on the same point hides the earlier one.
        if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, backing));
        }
    }
    best.map(|(_, b)| b).filter(|b| !b.is_empty())
}

/// What no level of proof can see from the files alone.
const UNMOUNTED: &str = "downloads on an inbox disk that was never mounted when keepsake found files there (an inbox folder now on another device than its files were found on blocks, as does a missing one)";

/// A candidate item while the plan is built.
struct Entry {
    item: PlanItem,
    /// The inbox file it stands for, if any.
    file: Option<PathBuf>,
    /// Empty: no date, so every year.
    years: BTreeSet<i32>,
    held: Option<Held>,
    /// (root, library-relative path) of its sidecars.
    sidecars: Vec<(Root, String)>,
    removable: Option<Removable>,
}

impl Entry {
    fn new(icloud_name: String, inbox_path: Option<String>) -> Entry {
        Entry {
            item: PlanItem {
                icloud_name,
                inbox_path,
                icloud_id: None,
                capture_time: None,
                years: Vec::new(),
                held_at: None,
                bytes_verified: false,
                sidecars: Vec::new(),
                offsite: BTreeMap::new(),
                blockers: Vec::new(),
            },
            file: None,
            years: BTreeSet::new(),
            held: None,
            sidecars: Vec::new(),
            removable: None,
        }
    }

    fn of_year(&self, year: i32) -> bool {
        self.years.is_empty() || self.years.contains(&year)
    }
}

fn name_of(rel: &[u8]) -> String {
    let name = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
    String::from_utf8_lossy(name).into_owned()
}

fn display(inbox: &str, rel: &[u8]) -> String {
    format!("{inbox}:{}", String::from_utf8_lossy(rel))
}

/// A file under an inbox now: (inbox-relative path, size, mtime in ns,
/// inode, a regular file (false: a link or a special file)).
type FileNow = (Vec<u8>, u64, i64, u64, bool);

/// Every file under an inbox now, junk aside, links listed, never followed.
fn files_now(root: &Path, errors: &mut Vec<String>) -> Vec<FileNow> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<u8>::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(format!(
                    "cannot read the iCloud folder {}: {e}; its photos cannot be proven kept",
                    dir.display()
                ));
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            if is_junk(name.as_bytes(), meta.is_dir()) {
                continue;
            }
            if meta.is_dir() {
                stack.push((entry.path(), child));
            } else {
                let regular = meta.is_file();
                out.push((
                    child,
                    meta.len(),
                    crate::discover::mtime_ns(&meta),
                    meta.ino(),
                    regular,
                ));
            }
        }
    }
    out.sort();
    out
}

/// Why a file in an iCloud inbox has no job yet.
fn why_not_taken(name: &[u8], ignore: &[String]) -> String {
    let lower = name.to_ascii_lowercase();
    let partial = [".part", ".partial", ".crdownload", ".download", ".tmp"]
        .iter()
        .any(|ext| lower.ends_with(ext.as_bytes()));
    if partial {
        "still downloading (a partial file): let the downloader finish, then `keepsake ingest`"
            .into()
    } else if name.first() == Some(&b'.') {
        "a hidden file (a copy in progress?) that keepsake does not take: finish or remove it"
            .into()
    } else if is_ignored(name, ignore) {
        "ignored by this inbox's `ignore` globs, so never taken: take it out of `ignore`, or move it out of the iCloud folder".into()
    } else {
        "not taken yet (new, or waiting for its files to settle): run `keepsake ingest`".into()
    }
}

/// Prove (or not) that `year` is safe to delete from iCloud.
pub fn plan(
    config: &Config,
    ledger: &Arc<Ledger>,
    year: i32,
    options: &PlanOptions,
) -> Result<Plan, LedgerError> {
    // Another process (a running service) may take photos of the year
    // while it is planned: the plan is written, then kept only if no change
    // was counted since it began. A change counted after this check voids
    // it itself, as each change is counted before its verdicts are voided.
    let mut tries = 0;
    loop {
        tries += 1;
        let seen = super::changes(ledger)?;
        let mut plan = plan_unwritten(config, ledger, year, options)?;
        crate::effects::pause_point("archive-plan-made");
        record(config, &mut plan)?;
        match super::changes(ledger) {
            Ok(now) if now == seen => {
                plan.changes_seen = seen;
                return Ok(plan);
            }
            Ok(_) => {}
            Err(e) => {
                // Whether a change came cannot be told: what was written
                // does not stand.
                void(
                    config,
                    Some(&BTreeSet::from([year])),
                    "the ledger could not be read again",
                );
                return Err(e);
            }
        }
        void(
            config,
            Some(&BTreeSet::from([year])),
            "the year changed while it was planned",
        );
        if tries == 3 {
            plan.safe = false;
            plan.safe_list = None;
            plan.plan_file = None;
            plan.general.push(CHANGING.into());
            return Ok(plan);
        }
    }
}

/// Why a plan made three times, each time while the year changed, is not
/// kept.
const CHANGING: &str = "the year changed while it was planned, three times (a running service is taking its photos): plan again when it is idle";

/// Write a plan made by [`plan_unwritten`]: its file and, when safe, its
/// safe-to-delete list (replacing the year's old verdict).
pub fn record(config: &Config, plan: &mut Plan) -> Result<(), LedgerError> {
    write_plan(config, plan).map_err(|source| LedgerError::Io {
        path: config.state_dir.join("archive"),
        source,
    })
}

/// Make the plan of `year` without writing it.
pub fn plan_unwritten(
    config: &Config,
    ledger: &Arc<Ledger>,
    year: i32,
    options: &PlanOptions,
) -> Result<Plan, LedgerError> {
    let inboxes = config.archive.icloud_inboxes.clone();
    let (mut general, counted, mut basis) = plan_basis(config, &inboxes, options);
    // The files the jobs took, read before the jobs: a job made meanwhile
    // (by a running service) then finds its file "not taken yet", never
    // answered for by a job this plan did not read.
    let mut taken: HashMap<String, HashMap<Vec<u8>, ledger::Fingerprint>> = HashMap::new();
    for inbox in &inboxes {
        taken.insert(
            inbox.clone(),
            ledger.read(|c| ledger::fingerprints_of(c, inbox))?,
        );
    }
    let assets: HashMap<u64, Held> = held(ledger)?.into_iter().map(|h| (h.job_id, h)).collect();
    let jobs: Vec<ledger::JobRecord> = ledger.read(|c| ledger::jobs_of_inboxes(c, &inboxes))?;
    let companions: Vec<ledger::DoneWrite> =
        ledger.read(|c| ledger::done_writes(c, ledger::Action::Companion))?;
    let mut companions_of: HashMap<u64, Vec<&ledger::DoneWrite>> = HashMap::new();
    // Inbox sidecars kept whole: (source, the BLAKE3 it had).
    let mut kept_sidecars: HashSet<(PathBuf, String)> = HashSet::new();
    for write in &companions {
        companions_of.entry(write.job_id).or_default().push(write);
        if !write.keeps.is_empty() {
            kept_sidecars.insert((write.source.clone(), write.keeps.clone()));
        }
    }

    // 1. Every job of an iCloud inbox.
    // The jobs of each inbox file, by (inbox, relative path): its years.
    let mut years_of_file: HashMap<(String, Vec<u8>), BTreeSet<i32>> = HashMap::new();
    let mut entries = entries_of_jobs(config, &jobs, &assets, &companions_of, &mut years_of_file);

    // 2. Every file in the iCloud inboxes now: a file no job took as it is
    // now (new, partial, ignored, settling) blocks the years it could be
    // of; a sidecar no job kept whole blocks its photo's years.
    let service_state = ledger.read(ledger::service_state)?;
    let now = InboxesNow {
        taken: &taken,
        kept_sidecars: &kept_sidecars,
        years_of_file: &years_of_file,
        service_state: &service_state,
    };
    with_files_now(config, &inboxes, &now, &mut entries, &mut general);

    // 3. kei's inventory: every iCloud asset it has seen of the year, each
    // downloaded into an iCloud inbox and taken.
    if let Some(path) = &config.archive.kei_state {
        match super::kei::read(path) {
            Ok(state) => with_kei(&state, path, year, &mut entries, &mut basis, &mut general),
            Err(e) => general.push(e),
        }
    }

    // 4. A Live Photo's still and video are planned together: each is in
    // every year either could be of.
    plan_pairs_together(&mut entries);

    // 5. An inventory of iCloud's own items: each must be one of the items.
    if let Some(path) = &options.inventory {
        with_inventory(path, year, &mut entries, &mut basis, &mut general);
    }

    entries.retain(|e| e.of_year(year));
    check_entries(
        config,
        ledger,
        &mut entries,
        &counted,
        options.deep,
        &mut general,
    )?;

    Ok(finish_plan(year, inboxes, basis, entries, general))
}

/// The general blockers known before any item, the counted offsite
/// targets, and the basis a plan starts from: (general, counted, basis).
fn plan_basis(
    config: &Config,
    inboxes: &[String],
    options: &PlanOptions,
) -> (Vec<String>, Vec<String>, Basis) {
    let mut general = Vec::new();
    if inboxes.is_empty() {
        general.push(
            "no iCloud inbox: name it in [archive] icloud_inboxes (or give an inbox a name with \"icloud\")"
                .to_string(),
        );
    }
    let (targets, counted) = target_basis(config, options.deep);
    if counted.is_empty() {
        general.push(
            "no offsite target that is a real copy off this machine: a year is safe to delete only with a verified copy elsewhere ([offsite.NAME] of type s3, rclone, or a dir on another disk)"
                .to_string(),
        );
    }
    let basis = Basis {
        items_from: "the files: the iCloud inboxes now, and every job they had".into(),
        cannot_see: vec![
            "items the downloader never fetched (give an inventory of iCloud's items with `--inventory FILE`)".into(),
            UNMOUNTED.into(),
        ],
        targets,
        target_ids: target_ids(config),
        deep: options.deep,
    };
    (general, counted, basis)
}

/// An entry for every job of an iCloud inbox (a skipped job superseded by a
/// newer one of its file aside), noting each file's years in `years_of_file`.
fn entries_of_jobs(
    config: &Config,
    jobs: &[ledger::JobRecord],
    assets: &HashMap<u64, Held>,
    companions_of: &HashMap<u64, Vec<&ledger::DoneWrite>>,
    years_of_file: &mut HashMap<(String, Vec<u8>), BTreeSet<i32>>,
) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    // The newest job of each inbox file: an older one that stood down for
    // it ("job N takes it") answers for nothing.
    let mut newest: HashMap<(&str, &[u8]), u64> = HashMap::new();
    for job in jobs {
        let id = newest.entry((&job.inbox, &job.rel_path)).or_insert(job.id);
        *id = (*id).max(job.id);
    }
    for job in jobs {
        let superseded = newest
            .get(&(job.inbox.as_str(), job.rel_path.as_slice()))
            .is_some_and(|n| *n > job.id);
        if superseded && job.state == JobState::Skipped {
            continue;
        }
        let keeper = match job.state {
            JobState::Done => assets.get(&job.id),
            JobState::Duplicate => job.duplicate_of.and_then(|d| assets.get(&d)),
            _ => None,
        };
        let mut entry = dated_entry(job, keeper);
        years_of_file
            .entry((job.inbox.clone(), job.rel_path.clone()))
            .or_default()
            .extend(entry.years.iter().copied());
        match keeper {
            None => {
                let why = job.last_error.clone().or(job.reason.clone());
                entry.item.blockers.push(format!(
                    "not in the library: its job ({}) is {}{}",
                    job.id,
                    job.state.as_str(),
                    why.map(|e| format!(" ({e})")).unwrap_or_default()
                ));
            }
            Some(kept) => held_entry(config, &mut entry, job, kept, companions_of),
        }
        if entry.years.is_empty() {
            entry.item.blockers.push(
                "no date: keepsake cannot tell its year, so it blocks every year (date it, e.g. with an XMP sidecar, and ingest again)"
                    .into(),
            );
        }
        entries.push(entry);
    }
    entries
}

/// A job's entry with its capture time and the years it could be of.
fn dated_entry(job: &ledger::JobRecord, keeper: Option<&Held>) -> Entry {
    let mut entry = Entry::new(
        name_of(&job.rel_path),
        Some(display(&job.inbox, &job.rel_path)),
    );
    entry.file = Some(job.source_path.clone());
    // Its own date first (a duplicate's is its own since 0.x; older
    // ones fall back to the original's), then the original's, then
    // the downloader's folders.
    let own = job.capture_time.clone();
    let time = own
        .clone()
        .or_else(|| keeper.and_then(|k| k.capture_time.clone()));
    entry.item.capture_time = time.clone();
    if let Some(time) = &own {
        entry.years.extend(capture_years(time));
    }
    if let Some(kept) = keeper.and_then(|k| k.capture_time.as_deref()) {
        entry.years.extend(capture_years(kept));
    }
    entry.years.extend(folder_years(&job.rel_path));
    entry
}

/// A job's entry whose bytes keepsake holds: where, its sidecars, and the
/// iCloud download it may make removable.
fn held_entry(
    config: &Config,
    entry: &mut Entry,
    job: &ledger::JobRecord,
    kept: &Held,
    companions_of: &HashMap<u64, Vec<&ledger::DoneWrite>>,
) {
    let root_of = |root: Root| root.path(config).map(Path::to_path_buf);
    entry.held = Some(kept.clone());
    entry.item.held_at = Some(format!("{}:{}", kept.root.as_str(), kept.rel));
    // Sidecars written for it (a duplicate's come with its
    // original, which has its own entry if it is from iCloud).
    for write in companions_of.get(&job.id).into_iter().flatten() {
        if let Ok(rel) = write.dest.strip_prefix(&config.library_root) {
            entry
                .sidecars
                .push((kept.root, rel.to_string_lossy().into_owned()));
        }
    }
    if let (Some(blake3), Some(base)) = (&job.blake3, root_of(kept.root)) {
        entry.removable = Some(Removable {
            path: job.source_path.clone(),
            size: job.size,
            mtime_ns: job.mtime_ns,
            inode: job.inode,
            blake3: blake3.clone(),
            kept: base.join(&kept.rel),
            kept_blake3: kept.blake3.clone(),
        });
    }
}

/// The plan of the checked entries: its size-only copies, its items in
/// order, its verdict, and the downloads it proved kept.
fn finish_plan(
    year: i32,
    inboxes: Vec<String>,
    basis: Basis,
    entries: Vec<Entry>,
    mut general: Vec<String>,
) -> Plan {
    let mut size_only = Vec::new();
    for entry in &entries {
        for (target, state) in &entry.item.offsite {
            if let Some(why) = state.strip_prefix("size only: ") {
                size_only.push(format!(
                    "{target}: {} ({why})",
                    entry
                        .item
                        .held_at
                        .as_deref()
                        .unwrap_or(&entry.item.icloud_name)
                ));
            }
        }
    }
    let mut items: Vec<(PlanItem, Option<Removable>)> = entries
        .into_iter()
        .map(|mut e| {
            e.item.years = e.years.iter().copied().collect();
            let removable = e.removable.filter(|_| e.item.blockers.is_empty());
            (e.item, removable)
        })
        .collect();
    items.sort_by(|(a, _), (b, _)| {
        a.capture_time
            .cmp(&b.capture_time)
            .then(a.icloud_name.cmp(&b.icloud_name))
            .then(a.inbox_path.cmp(&b.inbox_path))
    });
    if items.is_empty() && general.is_empty() {
        general.push(format!(
            "no iCloud item of {year} is known to keepsake, so nothing proves iCloud's copies are kept"
        ));
    }
    let safe = general.is_empty() && items.iter().all(|(i, _)| i.blockers.is_empty());
    let (items, removable): (Vec<PlanItem>, Vec<Option<Removable>>) = items.into_iter().unzip();
    Plan {
        year,
        made_at: jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string()),
        icloud_inboxes: inboxes,
        basis,
        items,
        safe,
        general,
        size_only,
        plan_file: None,
        safe_list: None,
        removable: removable.into_iter().flatten().collect(),
        changes_seen: 0,
    }
}

/// What the ledger says of the iCloud inboxes' files, for [`with_files_now`].
struct InboxesNow<'a> {
    /// The files the jobs took, by inbox and relative path.
    taken: &'a HashMap<String, HashMap<Vec<u8>, ledger::Fingerprint>>,
    /// Inbox sidecars kept whole: (source, the BLAKE3 it had).
    kept_sidecars: &'a HashSet<(PathBuf, String)>,
    /// The years of each job's file, by (inbox, relative path).
    years_of_file: &'a HashMap<(String, Vec<u8>), BTreeSet<i32>>,
    /// What the ledger's `service_state` says (the inboxes' devices).
    service_state: &'a BTreeMap<String, String>,
}

/// Why an inbox folder is not where its files were found: it is on another
/// device than at the last scan that found files (an unmounted disk leaves
/// its empty mount point, on the disk above).
fn not_mounted(
    inbox: &crate::config::Inbox,
    service_state: &BTreeMap<String, String>,
) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let was: u64 = service_state
        .get(&ledger::inbox_device_key(&inbox.name))?
        .parse()
        .ok()?;
    let now = std::fs::metadata(&inbox.path).ok()?.dev();
    (now != was).then(|| {
        format!(
            "inbox {} ({}) is not on the disk its files were found on (device {now:#x}, was {was:#x}): is that disk mounted? Mount it and run `keepsake ingest` (a running service scans it too), then plan again",
            inbox.name,
            inbox.path.display()
        )
    })
}

/// Every file in the iCloud inboxes now that no job answers for becomes an
/// entry that blocks the years it could be of.
fn with_files_now(
    config: &Config,
    inboxes: &[String],
    now: &InboxesNow<'_>,
    entries: &mut Vec<Entry>,
    general: &mut Vec<String>,
) {
    let (taken, kept_sidecars, years_of_file) = (now.taken, now.kept_sidecars, now.years_of_file);
    let mut unreadable = Vec::new();
    for inbox in config.inboxes.iter().filter(|i| inboxes.contains(&i.name)) {
        if let Some(why) = not_mounted(inbox, now.service_state) {
            general.push(why);
        }
        for (rel, size, mtime_ns, inode, regular) in files_now(&inbox.path, &mut unreadable) {
            let name = rel.rsplit(|b| *b == b'/').next().unwrap_or(&rel).to_vec();
            let path = inbox.path.join(std::ffi::OsStr::from_bytes(&rel));
            if !regular {
                let mut entry = Entry::new(name_of(&rel), Some(display(&inbox.name, &rel)));
                entry.years = folder_years(&rel);
                entry.item.blockers.push(
                    "a link (or special file), which keepsake never follows or takes: put the file itself there, then `keepsake ingest`".into(),
                );
                entries.push(entry);
                continue;
            }
            if is_sidecar(&name) && !name.starts_with(b".") {
                let hash = crate::hashing::blake3_file(&path).unwrap_or_default();
                if kept_sidecars.contains(&(path.clone(), hash)) {
                    continue;
                }
                // Its photo's years: the photo beside it with its base name.
                let base = sidecar_base(&name);
                let dir_len = rel.len() - name.len();
                let owner_years: BTreeSet<i32> = years_of_file
                    .iter()
                    .filter(|((i, r), _)| {
                        *i == inbox.name
                            && r.len() > dir_len
                            && r[..dir_len] == rel[..dir_len]
                            && crate::discover::stem(&r[dir_len..])
                                .eq_ignore_ascii_case(crate::discover::stem(&base))
                    })
                    .flat_map(|(_, years)| years.iter().copied())
                    .collect();
                let mut entry = Entry::new(name_of(&rel), Some(display(&inbox.name, &rel)));
                entry.years = owner_years;
                entry.years.extend(folder_years(&rel));
                entry.item.blockers.push(
                    "an iCloud sidecar keepsake has not kept whole (taken with no photo, changed since, or merged with changes): run `keepsake ingest`, or copy its values into the library's sidecar".into(),
                );
                entries.push(entry);
                continue;
            }
            let seen = taken.get(&inbox.name).and_then(|t| t.get(&rel));
            if seen.is_some_and(|f| f.size == size && f.mtime_ns == mtime_ns && f.inode == inode) {
                // Its job (above) answers for it.
                continue;
            }
            let mut entry = Entry::new(name_of(&rel), Some(display(&inbox.name, &rel)));
            entry.file = Some(path.clone());
            entry.years = folder_years(&rel);
            entry
                .item
                .blockers
                .push(why_not_taken(&name, &inbox.ignore));
            entries.push(entry);
        }
    }
    general.extend(unreadable);
}

/// A Live Photo's still and video: each is planned in every year either
/// could be of.
fn plan_pairs_together(entries: &mut [Entry]) {
    let mut pairs: HashMap<(Root, String), Vec<usize>> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if let Some(held) = &entry.held {
            pairs.entry(pair_key(held)).or_default().push(i);
        }
    }
    for members in pairs.values() {
        let kinds: HashSet<bool> = members
            .iter()
            .filter_map(|i| entries[*i].held.as_ref())
            .map(|h| h.media_kind == "video")
            .collect();
        if kinds.len() < 2 {
            continue;
        }
        let union: BTreeSet<i32> = members
            .iter()
            .flat_map(|i| entries[*i].years.iter().copied())
            .collect();
        for i in members {
            entries[*i].years.extend(union.iter().copied());
        }
    }
}

/// Each item of an inventory of iCloud's own items of the year must be one
/// of the entries (one entry answers for one line).
fn with_inventory(
    path: &Path,
    year: i32,
    entries: &mut Vec<Entry>,
    basis: &mut Basis,
    general: &mut Vec<String>,
) {
    basis.items_from = format!("an inventory of iCloud's items ({})", path.display());
    basis.cannot_see = vec![
        "items the inventory does not list (it is only as complete as the tool that made it)"
            .into(),
    ];
    match read_inventory(path) {
        Ok(listed) => {
            let mut answered = HashSet::new();
            for (name, created) in listed {
                let years = capture_years(&created);
                if !(years.is_empty() || years.contains(&year)) {
                    continue;
                }
                // Each file answers for one line: two iCloud items of
                // one name need two files.
                let found = entries.iter().enumerate().position(|(i, e)| {
                    !answered.contains(&i)
                        && e.of_year(year)
                        && e.item.icloud_name.eq_ignore_ascii_case(&name)
                });
                if let Some(i) = found {
                    answered.insert(i);
                } else {
                    let mut entry = Entry::new(name.clone(), None);
                    entry.years = years;
                    entry.item.capture_time = Some(created);
                    entry.item.blockers.push(format!(
                        "in iCloud's inventory ({}), but keepsake has no file of that name from this year: download it (icloudpd, kei), then `keepsake ingest`",
                        path.display()
                    ));
                    entries.push(entry);
                }
            }
        }
        Err(e) => general.push(e),
    }
}

/// Every asset kei has seen of `year` must be one of the entries, whole:
/// downloaded, seen since kei's last complete sync, and taken by keepsake.
fn with_kei(
    state: &super::kei::KeiState,
    path: &Path,
    year: i32,
    entries: &mut Vec<Entry>,
    basis: &mut Basis,
    general: &mut Vec<String>,
) {
    use super::kei::rfc3339;
    basis.items_from = match state.last_complete {
        Some((_, done)) => format!(
            "kei's state ({}): every iCloud asset kei has seen; its last complete sync ended {}",
            path.display(),
            rfc3339(done)
        ),
        None => format!(
            "kei's state ({}), which has no complete sync run",
            path.display()
        ),
    };
    basis.cannot_see = vec![
        "assets added to iCloud after kei's last complete sync".into(),
        "assets kei's own filters leave out (an album, `--recent`, skipped videos): kei does not record them"
            .into(),
    ];
    if let Some((began, status)) = &state.unfinished {
        general.push(format!(
            "kei's last sync run (begun {}) is {status}, not complete, so it may not have seen every iCloud item: let `kei sync` finish, then plan again",
            rfc3339(*began)
        ));
    }
    for (zone, began) in &state.enumerating {
        let began = began
            .trim()
            .parse::<i64>()
            .map_or_else(|_| began.clone(), rfc3339);
        general.push(format!(
            "kei began listing every item of iCloud's {zone} ({began}) and has not finished: let `kei sync` finish, then plan again"
        ));
    }
    let Some((started, _)) = state.last_complete else {
        general.push(
            "kei has no complete sync run, so its list of iCloud's items may be partial: let `kei sync` finish once, then plan again"
                .into(),
        );
        return;
    };
    let mut by_file = super::kei::PathIndex::default();
    for (i, entry) in entries.iter().enumerate() {
        if let Some(file) = &entry.file {
            by_file.insert(file, i);
        }
    }
    let check = KeiCheck {
        year,
        started,
        by_file: &by_file,
    };
    for (id, rows) in state.assets() {
        with_kei_asset(&check, id, rows, entries);
    }
}

/// What [`with_kei`] checks each of kei's assets against.
struct KeiCheck<'a> {
    year: i32,
    /// When kei's last complete sync began (Unix seconds).
    started: i64,
    /// The index of the entry of each inbox file, by its path.
    by_file: &'a super::kei::PathIndex<usize>,
}

/// One asset kei has seen (its rows, by iCloud's `id`): if it is of the
/// year, its original and a Live Photo's video must each be an entry.
fn with_kei_asset(
    check: &KeiCheck<'_>,
    id: &str,
    rows: Vec<&super::kei::KeiItem>,
    entries: &mut Vec<Entry>,
) {
    use super::kei::{rfc3339, years_of};
    let rows: Vec<_> = rows.into_iter().filter(|a| !a.deleted).collect();
    let Some(first) = rows.first() else {
        return; // deleted in iCloud
    };
    let years = years_of(first.created_at);
    if !years.contains(&check.year) {
        return;
    }
    let original = rows.iter().copied().find(|a| super::kei::is_original(a));
    let name = original.unwrap_or(first).filename.clone();
    let sizes = || {
        rows.iter()
            .map(|a| a.version.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut missing = Vec::new();
    if original.is_none() {
        missing.push((
            name.clone(),
            format!(
                "kei keeps only its {} size, not iCloud's original: set kei's size to original, run `kei sync`, then plan again",
                sizes()
            ),
        ));
    }
    let live = rows
        .iter()
        .copied()
        .find(|a| super::kei::is_live_original(a));
    if live.is_none() && rows.iter().any(|a| super::kei::is_live(a)) {
        missing.push((
            format!("{name} (its Live Photo video)"),
            format!(
                "kei has not got the Live Photo's video at its original size (it keeps: {}): let kei download Live Photo videos at original size, run `kei sync`, then plan again",
                sizes()
            ),
        ));
    }
    for (what, why) in missing {
        let mut entry = Entry::new(what, None);
        entry.item.icloud_id = Some(id.to_string());
        entry.item.capture_time = Some(rfc3339(first.created_at));
        entry.years = years.clone();
        entry.item.blockers.push(why);
        entries.push(entry);
    }
    for asset in original.into_iter().chain(live) {
        let what = if super::kei::is_live_original(asset) {
            format!("{} (its Live Photo video)", asset.filename)
        } else {
            name.clone()
        };
        with_kei_version(check, id, asset, what, &years, entries);
    }
}

/// One version kei has of an asset (its original, or a Live Photo's
/// video): downloaded, seen since kei's last complete sync, and the file of
/// an entry, which it then dates; otherwise an entry that blocks it.
fn with_kei_version(
    check: &KeiCheck<'_>,
    id: &str,
    asset: &super::kei::KeiItem,
    what: String,
    years: &BTreeSet<i32>,
    entries: &mut Vec<Entry>,
) {
    use super::kei::rfc3339;
    let mut problem = None;
    if asset.status != "downloaded" {
        problem = Some(format!(
            "kei has it as {} in iCloud, not downloaded{}: run `kei sync` until it is",
            asset.status,
            asset
                .last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    } else if asset.last_seen_at < check.started {
        problem = Some(format!(
            "kei has not seen it in iCloud since its last complete sync began ({}): deleted there, or missed; run `kei sync` and plan again",
            rfc3339(check.started)
        ));
    }
    let found = asset
        .local_path
        .as_ref()
        .and_then(|p| check.by_file.get(p).copied());
    match (problem, found) {
        (None, Some(i)) => {
            let entry = &mut entries[i];
            entry.years.extend(years.iter().copied());
            entry.item.icloud_id = Some(id.to_string());
            entry.item.icloud_name = asset.filename.clone();
        }
        (problem, _) => {
            let mut entry = Entry::new(what, None);
            entry.item.icloud_id = Some(id.to_string());
            entry.item.capture_time = Some(rfc3339(asset.created_at));
            entry.years = years.clone();
            entry.item.blockers.push(problem.unwrap_or_else(|| {
                format!(
                    "kei downloaded it to {}, but keepsake has no job for that file: is it inside an iCloud inbox? (`keepsake ingest`)",
                    asset
                        .local_path
                        .as_deref()
                        .map_or("nowhere".into(), |p| p.display().to_string())
                )
            }));
            entries.push(entry);
        }
    }
}

/// A Live Photo's still and video sit side by side with one stem.
pub(super) fn pair_key(held: &Held) -> (Root, String) {
    let stem = match held.rel.rfind('.') {
        Some(dot) if dot > held.rel.rfind('/').map_or(0, |s| s + 1) => &held.rel[..dot],
        _ => held.rel.as_str(),
    };
    (held.root, stem.to_ascii_lowercase())
}

/// `name<TAB or spaces>creation time` per line; `#` comments.
fn read_inventory(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the inventory {}: {e}; give a file with one iCloud file name and creation time per line",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let split = line
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace() || *c == '\t')
            .map(|(i, _)| i);
        // The time is the last field; a name may hold spaces.
        let (name, time) = match split {
            Some(i) if time_like(line[i..].trim()) => (line[..i].trim(), line[i..].trim()),
            _ => {
                // "NAME 2019-05-01 10:00:00": date and time as two fields.
                let mut fields: Vec<&str> = line.split_whitespace().collect();
                let clock = fields.pop();
                let date = fields.pop();
                match (date, clock) {
                    (Some(d), Some(c)) if time_like(d) && !fields.is_empty() => {
                        let at = line
                            .rfind(c)
                            .and_then(|end| line[..end].rfind(d))
                            .unwrap_or(0);
                        (line[..at].trim(), &line[at..])
                    }
                    _ => {
                        return Err(format!(
                            "{} line {}: {line:?} is not `FILE NAME<TAB>CREATION TIME` (like `IMG_0001.HEIC\t2019-05-01T10:00:00Z`)",
                            path.display(),
                            n + 1
                        ));
                    }
                }
            }
        };
        out.push((name.to_string(), time.replace(' ', "T")));
    }
    Ok(out)
}

fn time_like(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[7] == b'-'
}

/// Rehash every held file and sidecar; check every copy on every counted
/// target, by content where the target gives a hash.
fn check_entries(
    config: &Config,
    ledger: &Arc<Ledger>,
    entries: &mut [Entry],
    counted: &[String],
    deep: bool,
    general: &mut Vec<String>,
) -> Result<(), LedgerError> {
    // The digests the counted targets keep of their objects.
    let kinds = |f: fn(&TargetKind) -> bool| {
        !deep
            && counted
                .iter()
                .any(|t| config.offsite.get(t).is_some_and(|t| f(&t.kind)))
    };
    let want = crate::hashing::Want {
        sha256: kinds(|k| matches!(k, TargetKind::S3 { .. } | TargetKind::Rclone { .. })),
        sha1_md5: kinds(|k| matches!(k, TargetKind::Rclone { .. })),
    };
    // (root, rel) → (BLAKE3, digests) of the file now, or None: missing.
    let now = hash_now(config, entries, want);
    let digests: HashMap<String, crate::hashing::Digests> = now.values().cloned().collect();

    // Every push of these files (any version of a sidecar).
    let wanted: HashSet<&str> = now.keys().map(|(_, rel)| rel.as_str()).collect();
    let rows: Vec<ledger::PushRow> = ledger
        .read(|c| ledger::pushes_of(c, None, None))?
        .into_iter()
        .filter(|row| counted.contains(&row.target) && wanted.contains(row.file.as_str()))
        .collect();
    let offsite = offsite_states(config, ledger, &rows, deep, digests)?;
    let mut down = HashSet::new();
    for entry in entries.iter_mut() {
        check_entry(entry, counted, &now, &offsite, &mut down);
    }
    for target in down {
        general.push(format!(
            "offsite target {target} could not be checked; try again when it is reachable"
        ));
    }
    Ok(())
}

/// (root, rel) → (BLAKE3, digests) of each file now; a missing one is absent.
type HashedNow = HashMap<(Root, String), (String, crate::hashing::Digests)>;

/// Rehash every held file and sidecar of the entries (with the digests in
/// `want`).
fn hash_now(config: &Config, entries: &[Entry], want: crate::hashing::Want) -> HashedNow {
    let mut files: BTreeSet<(Root, String)> = BTreeSet::new();
    for entry in entries {
        if let Some(held) = &entry.held {
            files.insert((held.root, held.rel.clone()));
        }
        files.extend(entry.sidecars.iter().cloned());
    }
    let files: Vec<(Root, String)> = files.into_iter().collect();
    let hashed = crate::par::map(&files, |(root, rel)| {
        let path = root.path(config)?.join(rel);
        crate::hashing::blake3_and_digests(&path, want)
    });
    files
        .into_iter()
        .zip(hashed)
        .filter_map(|(k, h)| Some((k, h?)))
        .collect()
}

/// The best state of the pushes of each file on each counted target.
struct OffsiteStates {
    /// (target, file, BLAKE3) → the best state of any of its pushes.
    by_version: HashMap<(String, String, String), String>,
    /// (target, file) → the best state of any push of any version of it.
    any_version: HashMap<(String, String), String>,
}

/// Check the done pushes among `rows` on their targets (by content where
/// `digests` give the hash, or by download when `deep`), and rank them all.
fn offsite_states(
    config: &Config,
    ledger: &Arc<Ledger>,
    rows: &[ledger::PushRow],
    deep: bool,
    digests: HashMap<String, crate::hashing::Digests>,
) -> Result<OffsiteStates, LedgerError> {
    let done: Vec<ledger::PushRow> = rows.iter().filter(|r| r.state == "done").cloned().collect();
    let depth = if deep {
        Depth::Download
    } else {
        Depth::Content(Arc::new(digests))
    };
    let checked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LedgerError::Io {
            path: config.state_dir.clone(),
            source: e,
        })?
        .block_on(crate::offsite::verify_rows(
            Arc::clone(ledger),
            config,
            done,
            &depth,
        ));
    // (target, file) → the best state of any of its pushes.
    let mut offsite: HashMap<(String, String, String), String> = HashMap::new();
    let mut any_version: HashMap<(String, String), String> = HashMap::new();
    for row in rows {
        let state = match row.state.as_str() {
            "done" => match checked.get(&row.id) {
                Some(Ok(Found::Content)) => "verified".to_string(),
                Some(Ok(Found::SizeOnly(why))) => format!("size only: {why}"),
                Some(Ok(Found::Problem(problem))) => problem.clone(),
                Some(Err(e)) => format!("cannot check: {e}"),
                None => "not checked".to_string(),
            },
            "deferred" => format!(
                "not pushed yet: {}",
                row.last_error.clone().unwrap_or_default()
            ),
            other => format!("not pushed ({other})"),
        };
        let better = |old: &String| rank(&state) < rank(old);
        let key = (row.target.clone(), row.file.clone(), row.blake3.clone());
        if offsite.get(&key).is_none_or(better) {
            offsite.insert(key, state.clone());
        }
        let key = (row.target.clone(), row.file.clone());
        if any_version.get(&key).is_none_or(better) {
            any_version.insert(key, state);
        }
    }
    Ok(OffsiteStates {
        by_version: offsite,
        any_version,
    })
}

/// Check one entry's bytes and its copies on every counted target; a
/// target that could not be checked goes into `down`.
fn check_entry(
    entry: &mut Entry,
    counted: &[String],
    now: &HashedNow,
    offsite: &OffsiteStates,
    down: &mut HashSet<String>,
) {
    let Some(held) = entry.held.clone() else {
        return;
    };
    let here = now.get(&(held.root, held.rel.clone()));
    entry.item.bytes_verified = here.is_some_and(|(b, _)| *b == held.blake3);
    if !entry.item.bytes_verified {
        entry.item.blockers.push(format!(
            "{}:{} is missing or its bytes changed (run `keepsake verify`)",
            held.root.as_str(),
            held.rel
        ));
    }
    for target in counted {
        let state = offsite
            .by_version
            .get(&(target.clone(), held.rel.clone(), held.blake3.clone()))
            .cloned()
            .unwrap_or_else(|| {
                "never pushed (add \"offsite\" to this inbox's pipeline, then `keepsake offsite push`)".into()
            });
        if !is_kept(&state) {
            if state.starts_with("cannot check") {
                down.insert(target.clone());
            }
            entry
                .item
                .blockers
                .push(format!("offsite {target}: {state}"));
        }
        entry.item.offsite.insert(target.clone(), state);
    }
    check_sidecars(entry, counted, now, offsite);
}

/// Check that each of a held entry's sidecars is there and, as it is now,
/// on every counted target.
fn check_sidecars(entry: &mut Entry, counted: &[String], now: &HashedNow, offsite: &OffsiteStates) {
    for (root, rel) in entry.sidecars.clone() {
        let at = format!("{}:{rel}", root.as_str());
        let Some((current, _)) = now.get(&(root, rel.clone())) else {
            entry.item.blockers.push(format!(
                "its sidecar {at} is missing (run `keepsake verify`)"
            ));
            continue;
        };
        // The sidecar as it is now must be the one offsite: an older
        // version there lacks what changed since (or the library's
        // copy is the one damaged).
        for target in counted {
            let state = match (
                offsite
                    .by_version
                    .get(&(target.clone(), rel.clone(), current.clone())),
                offsite.any_version.get(&(target.clone(), rel.clone())),
            ) {
                (Some(state), _) => state.clone(),
                (None, Some(_)) => "only another version of it is offsite, not its bytes now (changed since it was pushed, or damaged here: `keepsake verify`, then `keepsake offsite push`)".into(),
                (None, None) => "never pushed".into(),
            };
            if !is_kept(&state) {
                entry
                    .item
                    .blockers
                    .push(format!("its sidecar {at} on offsite {target}: {state}"));
            }
        }
        entry.item.sidecars.push(at);
    }
}

/// Copies that keep an item: verified by content, or by size where the
/// target gives no hash (named in the plan).
fn is_kept(state: &str) -> bool {
    state == "verified" || state.starts_with("size only: ")
}

/// Which of two states of one file's pushes tells the most.
fn rank(state: &str) -> u8 {
    if state == "verified" {
        0
    } else if state.starts_with("size only") {
        1
    } else {
        2
    }
}

// --------------------------------------------------------------- verdicts

fn plan_file(config: &Config, year: i32) -> PathBuf {
    config
        .state_dir
        .join("archive")
        .join(format!("plan-{year}.json"))
}

fn safe_list(config: &Config, year: i32) -> PathBuf {
    config
        .state_dir
        .join("archive")
        .join(format!("safe-to-delete-{year}.txt"))
}

/// `state_dir/archive/plan-YEAR.json` and, when the year is safe,
/// `safe-to-delete-YEAR.txt` (iCloud's names with capture times), each
/// with the time it was made and what it rests on.
fn write_plan(config: &Config, plan: &mut Plan) -> std::io::Result<()> {
    let dir = config.state_dir.join("archive");
    std::fs::create_dir_all(&dir)?;
    let list = safe_list(config, plan.year);
    // A list from an earlier, safe plan must not outlive the proof.
    fsops::remove_temp(&list)?;
    let file = plan_file(config, plan.year);
    let json = serde_json::to_vec_pretty(&plan).map_err(std::io::Error::other)?;
    super::write_replacing(&file, &json)?;
    plan.plan_file = Some(file);
    if plan.safe {
        let mut text = format!(
            "# {}\n# made {} from {}\n",
            plan.verdict(),
            plan.made_at,
            plan.basis.items_from
        );
        for (target, how) in &plan.basis.targets {
            text.push_str(&format!("# offsite {target}: {how}\n"));
        }
        for blind in &plan.basis.cannot_see {
            text.push_str(&format!("# cannot see: {blind}\n"));
        }
        text.push_str(&format!(
            "# void once anything of {} changes (a new photo, a move, a failed check, a changed target): plan again before you delete\n# iCloud name\tcapture time\tiCloud id\n",
            plan.year
        ));
        for item in &plan.items {
            text.push_str(&format!(
                "{}\t{}\t{}\n",
                item.icloud_name,
                item.capture_time.as_deref().unwrap_or(""),
                item.icloud_id.as_deref().unwrap_or("")
            ));
        }
        super::write_replacing(&list, text.as_bytes())?;
        plan.safe_list = Some(list);
    }
    Ok(())
}

/// The year of a verdict file's name, and whether it is the plan (else
/// the safe-to-delete list): the names [`plan_file`] and [`safe_list`] give.
fn verdict_of(name: &str) -> Option<(i32, bool)> {
    let plan = name
        .strip_prefix("plan-")
        .and_then(|n| n.strip_suffix(".json"));
    let list = name
        .strip_prefix("safe-to-delete-")
        .and_then(|n| n.strip_suffix(".txt"));
    let year = plan.or(list)?.parse().ok()?;
    Some((year, plan.is_some()))
}

/// Remove the verdicts of `years` (None: every year): something of those
/// years changed, so no earlier proof stands. Returns the years voided.
pub fn void(config: &Config, years: Option<&BTreeSet<i32>>, why: &str) -> Vec<i32> {
    voiding(config, years, why).0
}

/// [`void`], saying whether every verdict of those years is gone (a
/// folder that cannot be read, or a file that cannot be removed, is not).
pub fn void_fully(config: &Config, years: Option<&BTreeSet<i32>>, why: &str) -> bool {
    voiding(config, years, why).1
}

fn voiding(config: &Config, years: Option<&BTreeSet<i32>>, why: &str) -> (Vec<i32>, bool) {
    let dir = config.state_dir.join("archive");
    let listing = match std::fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), true),
        Err(e) => {
            tracing::error!("cannot read {} to void its verdicts: {e}", dir.display());
            return (Vec::new(), false);
        }
    };
    let mut voided = Vec::new();
    let mut fully = true;
    for entry in listing {
        let Ok(entry) = entry else {
            fully = false;
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((year, _)) = verdict_of(&name) else {
            continue;
        };
        if years.is_some_and(|ys| !ys.contains(&year)) {
            continue;
        }
        match fsops::remove_temp(&entry.path()) {
            Ok(()) => {
                if !voided.contains(&year) {
                    voided.push(year);
                }
            }
            Err(e) => {
                tracing::error!("cannot void the verdict {}: {e}", entry.path().display());
                fully = false;
            }
        }
    }
    if !voided.is_empty() {
        tracing::info!(
            years = ?voided,
            "archive verdicts voided: {why}; `keepsake archive plan` makes them again"
        );
    }
    (voided, fully)
}

/// Void the verdicts that rest on another set of offsite targets than the
/// config now has.
pub fn void_stale(config: &Config) {
    let dir = config.state_dir.join("archive");
    let Ok(listing) = std::fs::read_dir(&dir) else {
        return;
    };
    let (now, _) = target_basis(config, false);
    let ids = target_ids(config);
    let mut stale = BTreeSet::new();
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((year, true)) = verdict_of(&name) else {
            continue;
        };
        let Ok(text) = std::fs::read(entry.path()) else {
            continue;
        };
        let same = serde_json::from_slice::<Plan>(&text).is_ok_and(|plan| {
            let was: BTreeSet<&String> = plan.basis.targets.keys().collect();
            let is: BTreeSet<&String> = now.keys().collect();
            was == is
                && plan.basis.target_ids == ids
                && plan.basis.targets.iter().all(|(name, how)| {
                    // A deep plan's basis says so; the target is the same.
                    now.get(name).is_some_and(|n| {
                        n == how || (how.contains("--deep") && n.starts_with("copy"))
                    })
                })
        });
        if !same {
            stale.insert(year);
        }
    }
    if !stale.is_empty() {
        void(config, Some(&stale), "the offsite targets changed");
    }
}

/// The years whose verdicts a change to `job` voids, as the plan counts
/// them: its own ([`years_of_job`]), its keeper's for a duplicate (the plan
/// dates a duplicate by its original too), and those of the other half of
/// a Live Photo pair (planned in the union of both). None: every year (no
/// date, or the ledger cannot say).
pub fn verdict_years(ledger: &Ledger, job: &ledger::JobRecord) -> Option<BTreeSet<i32>> {
    let mut years = years_of_job(job)?;
    if let Some(keeper) = job.duplicate_of {
        let keeper = ledger.read(|c| ledger::job(c, keeper)).ok()??;
        years.extend(years_of_job(&keeper)?);
    }
    let pair = ledger
        .read(|c| ledger::pair_of_job(c, job.duplicate_of.unwrap_or(job.id)))
        .ok()?;
    for (other, time) in pair {
        if let Some(time) = time {
            years.extend(capture_years(&time));
        }
        if let Ok(Some(other)) = ledger.read(|c| ledger::job(c, other)) {
            years.extend(years_of_job(&other).unwrap_or_default());
        }
    }
    Some(years)
}

/// The years of a job, for voiding: where its verdict may change.
pub fn years_of_job(job: &ledger::JobRecord) -> Option<BTreeSet<i32>> {
    let mut years = folder_years(&job.rel_path);
    if let Some(time) = &job.capture_time {
        years.extend(capture_years(time));
    }
    (!years.is_empty()).then_some(years)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_btrfs_subvolumes_or_zfs_datasets_of_one_disk_are_one_disk() {
        // A Synology volume: shares are btrfs subvolumes of /dev/md2, each
        // with its own device number.
        let mountinfo = "\
22 1 0:20 / / rw - ext4 /dev/sda1 rw
30 22 0:45 /@syno/photo /volume1/photo rw - btrfs /dev/md2 rw,subvol=/@syno/photo
31 22 0:46 /@syno/backup /volume1/backup rw - btrfs /dev/md2 rw,subvol=/@syno/backup
32 22 0:47 / /tank/photos rw - zfs tank/photos rw
33 22 0:48 / /tank/backup rw - zfs tank/backup rw
34 22 0:49 / /mnt/usb\\040disk rw - ext4 /dev/sdb1 rw
35 22 0:50 / /tmp/a rw - tmpfs tmpfs rw
36 22 0:51 / /tmp/b rw - tmpfs tmpfs rw
";
        let of = |p: &str| backing_of(mountinfo, Path::new(p));
        assert_eq!(
            of("/volume1/photo/2019/a.jpg"),
            of("/volume1/backup/keepsake")
        );
        assert_eq!(of("/volume1/photo"), Some("block:/dev/md2".into()));
        assert_eq!(of("/tank/photos/x"), Some("zfs:tank".into()));
        assert_eq!(of("/tank/photos/x"), of("/tank/backup"));
        assert_eq!(of("/mnt/usb disk/keepsake"), Some("block:/dev/sdb1".into()));
        assert_ne!(of("/mnt/usb disk/keepsake"), of("/volume1/photo"));
        assert_eq!(of("/srv/library"), Some("block:/dev/sda1".into()));
        // No disk of their own: told apart by device number only.
        assert_eq!(of("/tmp/a/x"), None);
        assert_eq!(of("/tmp/b"), None);
    }

    #[test]
    fn a_capture_time_means_its_local_and_its_utc_year() {
        assert_eq!(
            capture_years("2019-12-31T23:59:59-05:00"),
            BTreeSet::from([2019, 2020])
        );
        assert_eq!(
            capture_years("2019-06-01T10:00:00+02:00"),
            BTreeSet::from([2019])
        );
        assert_eq!(
            capture_years("2020-01-01T05:00:00"),
            BTreeSet::from([2019, 2020])
        );
        assert_eq!(capture_years("2020-06-01T05:00:00"), BTreeSet::from([2020]));
        assert!(capture_years("").is_empty());
    }

    #[test]
    fn a_downloaders_folders_give_years() {
        assert_eq!(
            folder_years(b"2019/05/01/IMG_3.HEIC"),
            BTreeSet::from([2019])
        );
        assert_eq!(
            folder_years(b"Family/2019/12/IMG_0001.PNG"),
            BTreeSet::from([2019, 2020])
        );
        assert_eq!(
            folder_years(b"2020/01/01/IMG_1.HEIC"),
            BTreeSet::from([2019, 2020])
        );
        assert_eq!(folder_years(b"2019/IMG_1.HEIC"), BTreeSet::from([2019]));
        assert_eq!(
            folder_years(b"2019-12-31/IMG_1.HEIC"),
            BTreeSet::from([2019, 2020])
        );
        assert_eq!(folder_years(b"2019_06/IMG_1.HEIC"), BTreeSet::from([2019]));
        assert!(folder_years(b"Trip-2019/IMG_1.HEIC").is_empty());
        assert!(folder_years(b"IMG_2019.HEIC").is_empty());
        assert!(folder_years(b"1234/IMG.HEIC").is_empty());
    }

    #[test]
    fn junk_is_only_the_documented_litter() {
        assert!(is_junk(b".DS_Store", false));
        assert!(is_junk(b"._IMG_1.HEIC", false));
        assert!(is_junk(b"@eaDir", true));
        assert!(!is_junk(b"@eaDir", false));
        assert!(!is_junk(b"IMG_1.HEIC.part", false));
        assert!(!is_junk(b".IMG_1.HEIC.x8Yz3", false));
    }

    #[test]
    fn an_inventory_line_is_a_name_and_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.txt");
        std::fs::write(
            &path,
            "# iCloud\nIMG_0001.HEIC\t2019-05-01T10:00:00Z\nMy photo.JPG 2019-05-02 11:00:00\n\n",
        )
        .unwrap();
        assert_eq!(
            read_inventory(&path).unwrap(),
            vec![
                ("IMG_0001.HEIC".into(), "2019-05-01T10:00:00Z".into()),
                ("My photo.JPG".into(), "2019-05-02T11:00:00".into()),
            ]
        );
        std::fs::write(&path, "IMG_0001.HEIC\n").unwrap();
        assert!(read_inventory(&path).unwrap_err().contains("line 1"));
    }
}
