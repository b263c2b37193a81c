//! Archival by year, and the proof that a year may leave iCloud.
//!
//! - `verify`: rehash every file the ledger holds (library and archive)
//!   and report bit rot, missing and unexpected files.
//! - `plan`: for every item of a year that came from iCloud: in the library
//!   (or archive)? bytes still right? a verified copy on every offsite
//!   target? The last line says whether the year is safe to delete from
//!   iCloud, or exactly which items block that.
//! - `run`: move a year's files and sidecars from the library root to the
//!   archive root, journaled in the `moves` table like every write:
//!   intent → (rename | copy, sync, verify, rename) → placed → source
//!   removed → done. `recover` finishes or rolls back what a crash left.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::discover::{is_ignored, is_sidecar};
use crate::effects::kept::{Kept, remove_unchanged_source};
use crate::effects::{fault_point, fsops};
use crate::hashing::blake3_file;
use crate::ledger::{self, JournalState, Ledger, LedgerError};

/// Which root a file lives under (`assets.root`).
pub use crate::ledger::Root;

impl Root {
    pub fn path(self, config: &Config) -> Option<&Path> {
        match self {
            Root::Library => Some(&config.library_root),
            Root::Archive => config.archive.root.as_deref(),
        }
    }
}

/// One asset as the ledger holds it.
#[derive(Debug, Clone)]
pub struct Held {
    pub asset_id: u64,
    pub job_id: u64,
    pub blake3: String,
    pub size: u64,
    pub rel: String,
    pub root: Root,
    pub capture_time: Option<String>,
    pub media_kind: String,
}

impl Held {
    pub fn year(&self) -> Option<i32> {
        year_of(self.capture_time.as_deref())
    }
}

fn year_of(capture_time: Option<&str>) -> Option<i32> {
    capture_time?.get(..4)?.parse().ok()
}

pub fn held(ledger: &Ledger) -> Result<Vec<Held>, LedgerError> {
    Ok(ledger
        .read(ledger::held_assets)?
        .into_iter()
        .map(|a| Held {
            asset_id: a.asset_id,
            job_id: a.job_id,
            // The copy's own hash: with embedded XMP it is not the original's.
            blake3: a.blake3,
            size: a.size,
            rel: a.library_path,
            root: a.root,
            capture_time: a.capture_time,
            media_kind: a.media_kind,
        })
        .collect())
}

// ---------------------------------------------------------------- verify

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub ok: usize,
    pub bytes: u64,
    /// `root:path` of files the ledger holds that are gone.
    pub missing: Vec<String>,
    /// `root:path` of files whose bytes changed (bit rot, an editor).
    pub damaged: Vec<String>,
    /// `root:path` of files no ledger row accounts for.
    pub unexpected: Vec<String>,
    pub errors: Vec<String>,
}

/// Rehash what the ledger holds (of `year`, under `root`) and walk the roots
/// for files it does not know (only when no year is given).
pub fn verify(
    config: &Config,
    ledger: &Ledger,
    year: Option<i32>,
    root: Option<Root>,
) -> Result<VerifyReport, LedgerError> {
    let mut report = VerifyReport::default();
    let all = held(ledger)?;
    let chosen: Vec<&Held> = all
        .iter()
        .filter(|h| year.is_none_or(|y| h.year() == Some(y)))
        .filter(|h| root.is_none_or(|r| h.root == r))
        .collect();
    if root == Some(Root::Archive) && config.archive.root.is_none() {
        report
            .errors
            .push("no [archive] root in the config: nothing is archived".into());
        return Ok(report);
    }
    let results = crate::par::map(&chosen, |h| {
        let Some(base) = h.root.path(config) else {
            return Err(format!(
                "{}: recorded as archived, but the config has no [archive] root",
                h.rel
            ));
        };
        let path = base.join(&h.rel);
        match blake3_file(&path) {
            Ok(hash) => Ok(Some(hash == h.blake3)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    });
    for (h, result) in chosen.iter().zip(results) {
        report.checked += 1;
        let name = format!("{}:{}", h.root.as_str(), h.rel);
        match result {
            Ok(Some(true)) => {
                report.ok += 1;
                report.bytes += h.size;
            }
            Ok(Some(false)) => report.damaged.push(name),
            Ok(None) => report.missing.push(name),
            Err(e) => report.errors.push(e),
        }
    }
    if year.is_none() {
        let known: HashSet<(Root, &str)> = all.iter().map(|h| (h.root, h.rel.as_str())).collect();
        for which in [Root::Library, Root::Archive] {
            if root.is_some_and(|r| r != which) {
                continue;
            }
            let Some(base) = which.path(config) else {
                continue;
            };
            for rel in walk(base, &config.state_dir, &mut report.errors) {
                if !known.contains(&(which, rel.as_str())) {
                    report.unexpected.push(format!("{}:{rel}", which.as_str()));
                }
            }
        }
    }
    Ok(report)
}

/// Relative paths of the media files under `base` (sidecars, keepsake's
/// state and temp files aside).
fn walk(base: &Path, state_dir: &Path, errors: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    if !base.is_dir() {
        return out;
    }
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(format!("cannot read folder {}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.starts_with(state_dir) || is_ignored(name.as_bytes(), &[]) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && !is_sidecar(name.as_bytes())
                && let Ok(rel) = path.strip_prefix(base)
            {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------- plan

pub(crate) use crate::kei;
mod plan;
pub use plan::{
    Basis, JUNK, Plan, PlanItem, PlanOptions, capture_years, folder_years, plan, plan_unwritten,
    record, verdict_years, void, void_fully, void_stale, years_of_job,
};

pub(super) fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let _ = fsops::remove_temp(&temp);
    fsops::write_temp(&temp, bytes)?;
    fsops::sync_files(&[temp.as_path()])?;
    fsops::rename_over(&temp, path)
}

/// The years `--older-than-years N` means: every year with items that is
/// more than N years before this one.
pub fn years_older_than(ledger: &Ledger, keep: u32) -> Result<Vec<i32>, LedgerError> {
    let this_year = i32::from(
        jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .datetime()
            .year(),
    );
    let keep = i32::try_from(keep).unwrap_or(i32::MAX);
    let mut years: Vec<i32> = held(ledger)?
        .iter()
        .filter_map(Held::year)
        .filter(|y| *y < this_year.saturating_sub(keep))
        .collect();
    years.sort();
    years.dedup();
    Ok(years)
}

// ---------------------------------------------------------------- run

#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub year: i32,
    pub dry_run: bool,
    /// Media files moved (or, with --dry-run, to move).
    pub moved: usize,
    pub sidecars: usize,
    pub bytes: u64,
    /// Already in the archive.
    pub already: usize,
    /// `rel` of each file moved (or to move).
    pub files: Vec<String>,
    pub errors: Vec<String>,
    /// Why the run stopped early (a full disk), if it did.
    pub stopped: Option<String>,
    /// Files removed from the icloudpd download tree
    /// (`remove_icloud_copies`), or why none were.
    pub icloud_removed: usize,
    pub icloud_kept: Option<String>,
}

struct Move {
    asset_id: Option<u64>,
    rel: String,
    blake3: String,
    size: u64,
}

/// Sidecars beside library files: `IMG_1.jpg.xmp`, `IMG_1.xmp`, `IMG_1.AAE`,
/// `IMG_1.jpg.json`, `IMG_1.jpg.supplemental-metadata.json`. Each folder is
/// listed once, however many files it holds.
#[derive(Default)]
pub struct SidecarIndex {
    folders: HashMap<PathBuf, Vec<String>>,
}

impl SidecarIndex {
    pub fn of(&mut self, path: &Path) -> Vec<PathBuf> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Vec::new();
        };
        let name = name.to_string_lossy();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let listed = self.folders.entry(dir.to_path_buf()).or_insert_with(|| {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name())
                        .filter(|n| is_sidecar(n.as_bytes()))
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        });
        let prefix = format!("{name}.");
        let mut out: Vec<PathBuf> = listed
            .iter()
            .filter(|other| {
                other.starts_with(&prefix) || other.rsplit_once('.').is_some_and(|(s, _)| s == stem)
            })
            .map(|other| dir.join(other))
            .collect();
        out.sort();
        out
    }
}

const BATCH: usize = 256;

/// Held by each ingest cycle of the service and by the archive sweep for
/// a whole year (its plan, its moves, the removal of iCloud copies): a
/// plan never reads a year while a cycle changes it, and a removal acts
/// only on the plan it just made.
pub static MOVING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Count a change to what a plan reads (jobs applied, sidecars written,
/// files moved, a copy that failed its check), in the ledger, before the
/// verdicts it touches are voided: a plan made meanwhile, by this process
/// or another (`archive plan` beside a running service), sees the count
/// move and keeps no verdict. Where the count cannot be written, every
/// verdict goes instead.
pub fn changed(config: &Config, ledger: &Ledger) {
    if let Err(e) = ledger.write(|tx| ledger::count_change(tx)) {
        tracing::error!("cannot count a change to the archive's verdicts ({e}): voiding them all");
        void(config, None, "a change could not be counted");
    }
}

/// How many changes the ledger has counted.
pub fn changes(ledger: &Ledger) -> Result<u64, LedgerError> {
    ledger.read(ledger::change_count)
}

/// The verdicts of these jobs' changes are voided (they leave `unvoided`).
pub fn settled(ledger: &Ledger, jobs: &[u64]) {
    if let Err(e) = ledger.write(|tx| ledger::clear_unvoided(tx, jobs)) {
        tracing::warn!(
            "cannot record that the archive's verdicts are voided ({e}): the next start voids them again"
        );
    }
}

/// Void the verdicts of every change committed and not voided yet (a stop
/// came between the two, or a run stopped on an error): the years of each
/// such job, as the plan counts them (every year where that cannot be
/// said, or where kei's creation times add years). Called at open and
/// after each archive run, whatever its outcome.
pub fn void_pending(config: &Config, ledger: &Ledger, why: &str) -> Result<(), LedgerError> {
    let jobs = ledger.read(ledger::unvoided_jobs)?;
    if jobs.is_empty() {
        return Ok(());
    }
    let mut years = BTreeSet::new();
    // With kei, a job's years include kei's creation time, not read here.
    let mut every = config.archive.kei_state.is_some() || jobs.contains(&ledger::EVERY_YEAR);
    let dir = config.state_dir.join("archive");
    let any = std::fs::read_dir(&dir).map_or_else(
        |e| e.kind() != std::io::ErrorKind::NotFound,
        |mut listing| listing.next().is_some(),
    );
    if any && !every {
        for id in &jobs {
            // A job the ledger does not have: its years cannot be told.
            match ledger.read(|c| ledger::job(c, *id))? {
                Some(job) => match verdict_years(ledger, &job) {
                    Some(of_job) => years.extend(of_job),
                    None => every = true,
                },
                None => every = true,
            }
            if every {
                break;
            }
        }
    }
    let voided = !any
        || if every {
            void_fully(config, None, why)
        } else {
            void_fully(config, Some(&years), why)
        };
    if voided {
        settled(ledger, &jobs);
    }
    Ok(())
}

/// A change that is no job's (a file that failed its check): counted, and
/// noted as every year's in `unvoided` in the same transaction, then the
/// verdicts of `years` go. Voiding every year settles that note; a stop in
/// between, or a void of some years only, leaves it for the next open.
pub fn void_changed(config: &Config, ledger: &Ledger, years: Option<&BTreeSet<i32>>, why: &str) {
    let noted = ledger.write(|tx| {
        ledger::count_change(tx)?;
        ledger::note_unvoided(tx, ledger::EVERY_YEAR)
    });
    if let Err(e) = noted {
        tracing::error!("cannot count a change to the archive's verdicts ({e}): voiding them all");
        void(config, None, "a change could not be counted");
        return;
    }
    if void_fully(config, years, why) && years.is_none() {
        settled(ledger, &[ledger::EVERY_YEAR]);
    }
}

/// Take the turn ([`MOVING`]); the archive commands and the sweep hold it.
pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    MOVING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Move `year` from the library root to the archive root.
pub fn run(
    config: &Config,
    ledger: &Arc<Ledger>,
    year: i32,
    dry_run: bool,
) -> Result<RunReport, LedgerError> {
    let moved = move_year(config, ledger, year, dry_run);
    // Moves committed before an error, and those its recovery settled (of
    // any year), void their years' verdicts whatever came after.
    let pending = void_pending(config, ledger, "files moved");
    let mut report = moved?;
    pending?;
    if !dry_run && (report.moved > 0 || report.sidecars > 0 || !report.errors.is_empty()) {
        // The year's files are somewhere else now: its proof is made again
        // (each move noted its job in `unvoided` as it committed).
        changed(config, ledger);
        void(
            config,
            Some(&BTreeSet::from([year])),
            "files of the year moved",
        );
    }
    if !dry_run {
        // `keepsake status` tells of a run that stopped (a full disk) until
        // one completes.
        let problem = report
            .stopped
            .clone()
            .or_else(|| report.errors.first().cloned())
            .map(|p| format!("{year}: {p}"))
            .unwrap_or_default();
        ledger.write(|tx| ledger::set_service_state(tx, "archive_problem", &problem))?;
    }
    if config.archive.remove_icloud_copies
        && !dry_run
        && report.errors.is_empty()
        && report.stopped.is_none()
    {
        remove_icloud_copies(config, ledger, year, &mut report)?;
    }
    Ok(report)
}

/// The year is in the archive: when every file of it verifies there and
/// the plan made now is safe, the iCloud downloads that plan proved kept go
/// (only files still as keepsake took them, each once its copy is verified
/// again).
fn remove_icloud_copies(
    config: &Config,
    ledger: &Arc<Ledger>,
    year: i32,
    report: &mut RunReport,
) -> Result<(), LedgerError> {
    let checked = verify(config, ledger, Some(year), None)?;
    if !(checked.missing.is_empty() && checked.damaged.is_empty() && checked.errors.is_empty()) {
        report.icloud_kept = Some(format!(
            "{year} does not verify ({} missing, {} damaged): the iCloud downloads stay",
            checked.missing.len(),
            checked.damaged.len()
        ));
        return Ok(());
    }
    let plan = plan(config, ledger, year, &PlanOptions::default())?;
    if !plan.safe {
        report.icloud_kept = Some(format!("the iCloud downloads stay: {}", plan.verdict()));
        return Ok(());
    }
    crate::effects::pause_point("icloud-copies-planned");
    for copy in &plan.removable {
        // A change since the plan (a copy that failed `offsite verify`, say)
        // voided it: what is left stays.
        if changes(ledger)? != plan.changes_seen {
            report.icloud_kept = Some(format!(
                "{year} changed after its plan: the iCloud downloads not removed yet stay; plan again"
            ));
            break;
        }
        match fsops::fingerprint(&copy.path) {
            Some((now_size, now_mtime, now_inode))
                if now_size == copy.size
                    && now_mtime == copy.mtime_ns
                    && now_inode == copy.inode =>
            {
                // Read again: a downloader may rewrite a file in place
                // (kei's XMP embedding) without changing its size or mtime.
                let kept =
                    Kept::verify_for(&copy.kept, &copy.kept_blake3, &copy.path, &copy.blake3);
                match kept.and_then(|kept| remove_unchanged_source(&copy.path, &copy.blake3, &kept))
                {
                    Ok(()) => report.icloud_removed += 1,
                    Err(e) => report
                        .errors
                        .push(format!("{} stays: {e}", copy.path.display())),
                }
            }
            // Gone already, or changed since the plan: left alone.
            _ => {}
        }
    }
    Ok(())
}

/// Add `paths` to every manifest target that does not list them yet; the
/// errors, if any.
fn list_in_manifests(config: &Config, paths: &[PathBuf]) -> Vec<String> {
    let mut errors = Vec::new();
    for target in config.offsite.values() {
        let crate::config::TargetKind::Manifest { path } = &target.kind else {
            continue;
        };
        let listed: HashSet<String> = std::fs::read_to_string(path)
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default();
        let lines: String = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|line| !line.contains(['\n', '\r']) && !listed.contains(line))
            .map(|line| line + "\n")
            .collect();
        if !lines.is_empty()
            && let Err(e) = fsops::append_durably(path, lines.as_bytes())
        {
            errors.push(format!(
                "cannot list the archived files in the manifest {}: {e}",
                path.display()
            ));
        }
    }
    errors
}

fn move_year(
    config: &Config,
    ledger: &Ledger,
    year: i32,
    dry_run: bool,
) -> Result<RunReport, LedgerError> {
    let mut report = RunReport {
        year,
        dry_run,
        ..Default::default()
    };
    let Some(archive) = config.archive.root.clone() else {
        report.errors.push(format!(
            "no archive root: add `[archive]` with `root = \"/mnt/archive/photos\"` to {}",
            config.origin
        ));
        return Ok(report);
    };
    recover(config, ledger)?;
    let all = held(ledger)?;
    // A Live Photo's still and video move together: each with the year of
    // either.
    let mut pairs: HashMap<(Root, String), Vec<&Held>> = HashMap::new();
    for h in &all {
        pairs.entry(plan::pair_key(h)).or_default().push(h);
    }
    let of_year: Vec<&Held> = all
        .iter()
        .filter(|h| {
            h.year() == Some(year)
                || pairs.get(&plan::pair_key(h)).is_some_and(|group| {
                    let video = h.media_kind == "video";
                    group
                        .iter()
                        .any(|o| (o.media_kind == "video") != video && o.year() == Some(year))
                })
        })
        .collect();
    report.already = of_year.iter().filter(|h| h.root == Root::Archive).count();
    let todo: Vec<&Held> = of_year
        .into_iter()
        .filter(|h| h.root == Root::Library)
        .collect();
    let mut sidecars = SidecarIndex::default();
    if dry_run {
        for h in &todo {
            report.moved += 1;
            report.bytes += h.size;
            report.sidecars += sidecars.of(&config.library_root.join(&h.rel)).len();
            report.files.push(h.rel.clone());
        }
        return Ok(report);
    }
    if let Err(why) = check_archive_root(&archive, ledger)? {
        report.errors.push(why);
        return Ok(report);
    }
    if let Err(why) = fsops::probe_no_replace(&archive) {
        report.errors.push(why);
        return Ok(report);
    }
    let mut queued: HashSet<PathBuf> = HashSet::new();
    // Sidecars a crash left behind in the library, of files already moved.
    let stragglers: Vec<String> = all
        .iter()
        .filter(|h| h.year() == Some(year) && h.root == Root::Archive)
        .map(|h| h.rel.clone())
        .collect();
    let moves = sidecar_moves(config, &stragglers, &mut sidecars, &mut queued, &mut report);
    move_batch(config, ledger, &archive, &moves, &mut report)?;
    for chunk in todo.chunks(BATCH) {
        if crate::shutdown::requested() {
            break;
        }
        let mut moves = Vec::new();
        for h in chunk {
            let source = config.library_root.join(&h.rel);
            if !source.exists() {
                report.errors.push(format!(
                    "{} is missing from the library (run `keepsake verify`)",
                    source.display()
                ));
                continue;
            }
            moves.push(Move {
                asset_id: Some(h.asset_id),
                rel: h.rel.clone(),
                blake3: h.blake3.clone(),
                size: h.size,
            });
        }
        // The files first; then the sidecars of those that moved, so a
        // sidecar never ends up in another root than its file.
        let before = report.files.len();
        let stopped = move_batch(config, ledger, &archive, &moves, &mut report)?;
        let placed = report.files[before..].to_vec();
        let moves = sidecar_moves(config, &placed, &mut sidecars, &mut queued, &mut report);
        let stopped = move_batch(config, ledger, &archive, &moves, &mut report)? || stopped;
        if stopped {
            break;
        }
    }
    Ok(report)
}

/// Marks an archive root keepsake has written to: a disk that is not
/// mounted leaves an empty mount point, which must be neither filled nor
/// taken as "the archive copies are gone".
const ARCHIVE_MARKER: &str = ".keepsake-archive";

fn has_marker(config: &Config) -> bool {
    config
        .archive
        .root
        .as_ref()
        .is_some_and(|root| root.join(ARCHIVE_MARKER).is_file())
}

/// Ok(Ok) when the archive root can take files: it carries the marker, or
/// nothing was ever archived and the marker is written now.
fn check_archive_root(archive: &Path, ledger: &Ledger) -> Result<Result<(), String>, LedgerError> {
    if archive.join(ARCHIVE_MARKER).is_file() {
        return Ok(Ok(()));
    }
    if !archive.is_dir() {
        return Ok(Err(format!(
            "archive root {} is missing (not mounted?); create it or mount the disk",
            archive.display()
        )));
    }
    if ledger.read(ledger::ever_archived)? {
        return Ok(Err(format!(
            "archive root {} has no {ARCHIVE_MARKER} although keepsake archived there before: is the disk mounted?",
            archive.display()
        )));
    }
    let marker = archive.join(ARCHIVE_MARKER);
    Ok(fsops::write_temp(&marker, b"keepsake archive root\n")
        .and_then(|_| fsops::sync_files(&[marker.as_path(), archive]))
        .map_err(|e| format!("cannot write {}: {e}", marker.display())))
}

/// Moves for the sidecars beside these library files that are still in the
/// library and not yet queued (a sidecar two files share moves once).
fn sidecar_moves(
    config: &Config,
    rels: &[String],
    sidecars: &mut SidecarIndex,
    queued: &mut HashSet<PathBuf>,
    report: &mut RunReport,
) -> Vec<Move> {
    let mut moves = Vec::new();
    for rel in rels {
        for sidecar in sidecars.of(&config.library_root.join(rel)) {
            if !sidecar.exists() || !queued.insert(sidecar.clone()) {
                continue;
            }
            let Ok(rel) = sidecar.strip_prefix(&config.library_root) else {
                continue;
            };
            match blake3_file(&sidecar) {
                Ok(blake3) => moves.push(Move {
                    asset_id: None,
                    rel: rel.to_string_lossy().into_owned(),
                    blake3,
                    size: sidecar.metadata().map(|m| m.len()).unwrap_or(0),
                }),
                Err(e) => report.errors.push(format!("{}: {e}", sidecar.display())),
            }
        }
    }
    moves
}

/// Journal, move, commit one batch. Returns true when the run must stop
/// (the archive disk is full).
fn move_batch(
    config: &Config,
    ledger: &Ledger,
    archive: &Path,
    moves: &[Move],
    report: &mut RunReport,
) -> Result<bool, LedgerError> {
    if moves.is_empty() {
        return Ok(false);
    }
    // 1. Intents, before anything is touched.
    let journaled = journal_moves(config, ledger, archive, moves)?;
    let ids: Vec<u64> = journaled.iter().map(|(id, _)| *id).collect();
    fault_point("archive: intents");
    // 2. Each file: a rename on the same filesystem; else a copy to a
    //    temp name, and then all temps synced at once, rehashed and renamed.
    let Placed { placed, dirs, full } = place_files(config, archive, moves, &journaled, report);
    // 3. Durable, then recorded: the asset now lives in the archive.
    let dirs: Vec<PathBuf> = dirs.into_iter().collect();
    let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    if let Err(e) = fsops::sync_files(&dir_refs) {
        // Not durable: nothing is recorded as moved and no library copy is
        // removed; the journal settles these at the next start.
        report.errors.push(format!(
            "cannot sync the moved files ({e}); they are settled at the next start"
        ));
        return Ok(true);
    }
    fault_point("archive: synced");
    ledger.write(|tx| {
        for (m, id) in &placed {
            ledger::mark_move_placed(tx, *id, m.asset_id)?;
        }
        let unplaced: Vec<u64> = ids
            .iter()
            .filter(|id| !placed.iter().any(|(_, p)| p == *id))
            .copied()
            .collect();
        for id in unplaced {
            ledger::mark_move_unplaced(tx, id)?;
        }
        Ok(())
    })?;
    fault_point("archive: placed");
    // Manifest targets (restic `--files-from`) list files by absolute path:
    // the archived ones are listed again at their archive paths before any
    // library copy goes, so the backup keeps covering them.
    let archived: Vec<PathBuf> = placed.iter().map(|(m, _)| archive.join(&m.rel)).collect();
    report.errors.extend(list_in_manifests(config, &archived));
    // 4. Sources left by a copy across filesystems go; then done.
    remove_moved_sources(config, archive, &placed, report);
    fault_point("archive: sources removed");

    ledger.write(|tx| {
        for (_, id) in &placed {
            ledger::mark_move_done(tx, *id)?;
        }
        Ok(())
    })?;
    for (m, _) in &placed {
        if m.asset_id.is_some() {
            report.moved += 1;
            report.bytes += m.size;
            report.files.push(m.rel.clone());
        } else {
            report.sidecars += 1;
        }
    }
    if let Some(why) = full {
        report.stopped = Some(why);
        return Ok(true);
    }
    Ok(false)
}

/// Step 1 of [`move_batch`]: one intent per move, with its journal id and temp name.
fn journal_moves(
    config: &Config,
    ledger: &Ledger,
    archive: &Path,
    moves: &[Move],
) -> Result<Vec<(u64, PathBuf)>, LedgerError> {
    ledger.write(|tx| {
        let mut journaled = Vec::new();
        for m in moves {
            let source = config.library_root.join(&m.rel);
            let dest = archive.join(&m.rel);
            journaled.push(ledger::insert_move(
                tx,
                &ledger::NewMove {
                    asset_id: m.asset_id,
                    rel_path: &m.rel,
                    source: &source,
                    dest: &dest,
                    blake3: &m.blake3,
                    size: m.size,
                },
            )?);
        }
        Ok(journaled)
    })
}

/// What step 2 of [`move_batch`] left: the moves in place (with their
/// journal ids), the folders to sync, and why the run stops (a full disk).
struct Placed<'a> {
    placed: Vec<(&'a Move, u64)>,
    dirs: HashSet<PathBuf>,
    full: Option<String>,
}

/// Step 2 of [`move_batch`]: renames each file into the archive, or copies it
/// to its temp name and then finishes the copies together.
fn place_files<'a>(
    config: &Config,
    archive: &Path,
    moves: &'a [Move],
    journaled: &[(u64, PathBuf)],
    report: &mut RunReport,
) -> Placed<'a> {
    let mut placed = Vec::new();
    let mut copied = Vec::new();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut full = None;
    for (m, (id, temp)) in moves.iter().zip(journaled) {
        let source = config.library_root.join(&m.rel);
        let dest = archive.join(&m.rel);
        let temp = temp.clone();
        match move_one(&source, &dest, &temp, &m.blake3) {
            Ok((gained, step)) => {
                dirs.extend(gained);
                if let Some(dir) = dest.parent() {
                    dirs.insert(dir.to_path_buf());
                }
                if let Some(dir) = source.parent() {
                    dirs.insert(dir.to_path_buf());
                }
                match step {
                    Step::Present => {
                        // Found there, maybe from a run that never synced it.
                        if let Err(e) = fsops::sync_files(&[dest.as_path()]) {
                            report.errors.push(format!("{}: {e}", dest.display()));
                            continue;
                        }
                        placed.push((m, *id));
                        fault_point("archive: moved");
                    }
                    Step::Done => {
                        placed.push((m, *id));
                        fault_point("archive: moved");
                    }
                    Step::Copied => copied.push((m, *id, temp, dest)),
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) =>
            {
                full = Some(format!(
                    "the archive disk is full ({} at {}): the files before it are moved, the rest stay in the library; free space and run again",
                    e,
                    dest.display(),
                ));
                break;
            }
            Err(e) => report.errors.push(format!("{}: {e}", source.display())),
        }
    }
    if !copied.is_empty() {
        finish_copies(config, &copied, &mut placed, report);
    }
    Placed { placed, dirs, full }
}

/// Syncs the temps copied across filesystems at once, then rehashes and
/// renames each into place; a failed one's temp goes.
fn finish_copies<'a>(
    config: &Config,
    copied: &[(&'a Move, u64, PathBuf, PathBuf)],
    placed: &mut Vec<(&'a Move, u64)>,
    report: &mut RunReport,
) {
    let temps: Vec<&Path> = copied.iter().map(|(_, _, t, _)| t.as_path()).collect();
    let synced = fsops::sync_files(&temps);
    let finished = crate::par::map(copied, |(m, _, temp, dest)| {
        synced
            .as_ref()
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
            .and_then(|()| finish_copy(temp, dest, &m.blake3))
    });
    for ((m, id, temp, _), result) in copied.iter().zip(finished) {
        match result {
            Ok(()) => {
                placed.push((*m, *id));
                fault_point("archive: moved");
            }
            Err(e) => {
                let _ = fsops::remove_temp(temp);
                report.errors.push(format!(
                    "{}: {e}",
                    config.library_root.join(&m.rel).display()
                ));
            }
        }
    }
}

/// Step 4 of [`move_batch`]: removes the library copies a copy across
/// filesystems left, each only once its archive copy verifies.
fn remove_moved_sources(
    config: &Config,
    archive: &Path,
    placed: &[(&Move, u64)],
    report: &mut RunReport,
) {
    for (m, _) in placed {
        let source = config.library_root.join(&m.rel);
        let dest = archive.join(&m.rel);
        if source.symlink_metadata().is_ok()
            && let Err(e) = Kept::verify(&dest, &m.blake3, &m.blake3)
                .and_then(|kept| remove_unchanged_source(&source, &m.blake3, &kept))
        {
            report.errors.push(format!(
                "{}: moved, but the library copy could not be removed: {e}",
                source.display()
            ));
        }
    }
}

/// Returns the folders that gained an entry.
enum Step {
    /// Renamed into place (same filesystem).
    Done,
    /// Already there with the same bytes.
    Present,
    /// Copied to its temp name (another filesystem): not yet synced,
    /// verified or renamed.
    Copied,
}

/// Returns the folders that gained an entry, and how far the move got.
fn move_one(
    source: &Path,
    dest: &Path,
    temp: &Path,
    blake3: &str,
) -> std::io::Result<(Vec<PathBuf>, Step)> {
    inject_full()?;
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let gained = fsops::create_dirs(dir)?;
    if dest.symlink_metadata().is_ok() {
        // Already there (an earlier run the journal lost track of): the
        // same bytes are fine, other bytes are never replaced.
        return if blake3_file(dest)? == blake3 {
            Ok((gained, Step::Present))
        } else {
            Err(std::io::Error::other(format!(
                "{} already holds other bytes; keepsake never replaces a file",
                dest.display()
            )))
        };
    }
    match fsops::rename_no_replace(source, dest) {
        Ok(()) => return Ok((gained, Step::Done)),
        Err(e)
            if e.kind() == std::io::ErrorKind::CrossesDevices || e.raw_os_error() == Some(18) => {}
        Err(e) => return Err(e),
    }
    if let Err(e) = fsops::copy_to_temp(source, temp) {
        let _ = fsops::remove_temp(temp);
        return Err(e);
    }
    Ok((gained, Step::Copied))
}

/// A synced temp copy: rehashed, then renamed into place (never over a
/// file).
fn finish_copy(temp: &Path, dest: &Path, blake3: &str) -> std::io::Result<()> {
    if blake3_file(temp)? != blake3 {
        return Err(std::io::Error::other(
            "the copy does not match the library file's recorded BLAKE3 (it changed, or the disk lies)",
        ));
    }
    fsops::rename_no_replace(temp, dest)
}

/// `KEEPSAKE_FAULT_FULL_AFTER=k`: the k-th copy to the archive finds the
/// disk full (tests where no small filesystem can be mounted).
fn inject_full() -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let Some(limit) = std::env::var("KEEPSAKE_FAULT_FULL_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(());
    };
    if COUNT.fetch_add(1, Ordering::SeqCst) + 1 >= limit {
        return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
    }
    Ok(())
}

/// Finish or roll back the moves a crash interrupted: afterwards every file
/// is in exactly one root and the ledger says which.
pub fn recover(config: &Config, ledger: &Ledger) -> Result<usize, LedgerError> {
    let open: Vec<ledger::OpenMove> = ledger.read(ledger::open_moves)?;
    if open.is_empty() {
        return Ok(0);
    }
    if !has_marker(config) {
        // The archive disk is not mounted (or no longer configured): its
        // copies cannot be judged now. The moves stay open until it is.
        tracing::warn!(
            moves = open.len(),
            "unfinished archive moves wait for the archive root (with its {ARCHIVE_MARKER}) to be mounted"
        );
        return Ok(0);
    }
    let mut finished = 0;
    for open in open {
        let ledger::OpenMove {
            source,
            dest,
            temp,
            blake3,
            ..
        } = &open;
        let _ = fsops::remove_temp(temp);
        // The archive copy there, verified and durable: the library copy goes.
        let kept = Kept::verify(dest, blake3, blake3);
        let outcome = if let Ok(kept) = kept {
            // Listed in manifest targets at its archive path before the
            // library copy goes (a crash may have come before the run did).
            for error in list_in_manifests(config, std::slice::from_ref(dest)) {
                tracing::error!("{error}");
            }
            let removed = remove_unchanged_source(source, blake3, &kept);
            if let Err(e) = removed {
                tracing::error!(
                    "archive move of {}: {e}; tried again at the next start",
                    source.display()
                );
                continue;
            }
            JournalState::Done
        } else if source.exists() {
            // Not (durably) in the archive: it stays in the library.
            JournalState::RolledBack
        } else {
            JournalState::Lost
        };
        ledger.write(|tx| ledger::settle_move(tx, &open, outcome))?;
        if outcome == JournalState::Lost {
            tracing::error!(
                "archive move of {} found neither a verified archive copy nor the library file; restore it from offsite",
                source.display()
            );
        }
        finished += 1;
    }
    Ok(finished)
}
