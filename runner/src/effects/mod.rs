//! Applying decisions to the disk, journaled so a crash at any instant leaves
//! nothing lost, nothing duplicated and no temp file behind after recovery.
//!
//! For a batch of jobs, in this order:
//! 1. one transaction records an *intent* for every file to write (source,
//!    destination, temp name, expected BLAKE3, and the job's outcome);
//! 2. each file is copied to its temp name in the destination folder;
//! 3. the temps are made durable (`syncfs`/`fsync`) and re-hashed;
//! 4. each temp is renamed to its destination, never replacing a file;
//! 5. the destination folders are fsynced;
//! 6. one transaction marks the intents done, records the assets and
//!    finishes the jobs.
//!
//! [`recover`] replays what a crash left: it removes temps, and finishes a job
//! whose files all reached their destination with the right bytes, or puts
//! it back in the queue. It never deletes a file outside keepsake's temps.

pub mod fsops;
pub mod kept;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::ledger::{self, Action, JobState, JournalState, Ledger, LedgerError, Outcome};
use kept::Kept;

/// `KEEPSAKE_FAULT_AFTER=k` aborts the process at the k-th fault point: the
/// crash-safety tests sweep k over every step of a run.
pub fn fault_point(label: &str) {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var("KEEPSAKE_FAULT_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(limit) = *limit {
        let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
        if n == limit {
            eprintln!("keepsake: fault injection: aborting at step {n} ({label})");
            std::process::abort();
        }
    }
}

/// `KEEPSAKE_PAUSE_AT=label` with `KEEPSAKE_PAUSE_FILE=path`: the first time
/// the process reaches the `label` point it creates `path.reached` and
/// waits (two minutes at most) until `path` exists, so that a race test can
/// make another process act at that instant. Without the variables, a
/// lookup and nothing else.
pub fn pause_point(label: &str) {
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if std::env::var_os("KEEPSAKE_PAUSE_AT").is_none_or(|at| at != label)
        || PAUSED.swap(true, Ordering::SeqCst)
    {
        return;
    }
    let Some(gate) = std::env::var_os("KEEPSAKE_PAUSE_FILE").map(std::path::PathBuf::from) else {
        return;
    };
    let mut reached = gate.clone().into_os_string();
    reached.push(".reached");
    if let Err(e) = std::fs::write(&reached, label) {
        eprintln!("keepsake: pause point {label}: {e}");
        return;
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !gate.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Set by a copy that found its disk full.
static DISK_FULL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the asset row will say.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssetInfo {
    pub blake3: String,
    pub sha1: String,
    pub size: u64,
    pub media_kind: String,
    pub capture_time: Option<String>,
    pub capture_source: Option<String>,
    /// The library copy's own BLAKE3, when it is not the original's bytes
    /// (embedded XMP).
    #[serde(default)]
    pub library_blake3: Option<String>,
}

/// How a job ends once its files are in place; stored with each intent so
/// recovery can finish the job exactly as the run would have.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finish {
    pub state: String,
    pub reason: Option<String>,
    pub capture_time: Option<String>,
    pub capture_source: Option<String>,
    pub capture_confidence: Option<String>,
    pub dest_path: Option<String>,
    pub duplicate_of: Option<u64>,
    pub facts: String,
    /// Set when the main file goes into the library.
    pub asset: Option<AssetInfo>,
    /// Deferred: when the job runs again (Unix seconds).
    #[serde(default)]
    pub wake_at: Option<i64>,
    /// Offsite pushes, recorded when the job is done.
    #[serde(default)]
    pub pushes: Vec<ledger::NewPush>,
    /// A duplicate of a file still being placed: (target, key template with
    /// `{path}`) of the pushes to make on its behalf once its original is
    /// committed, of that original's copy.
    #[serde(default)]
    pub pushes_on_behalf: Vec<(String, String)>,
}

impl Finish {
    fn outcome(&self) -> Outcome {
        Outcome {
            reason: self.reason.clone(),
            capture_time: self.capture_time.clone(),
            capture_source: self.capture_source.clone(),
            capture_confidence: self.capture_confidence.clone(),
            dest_path: self.dest_path.clone(),
            duplicate_of: self.duplicate_of,
            facts: self.facts.clone(),
            wake_at: self.wake_at,
        }
    }

    fn state(&self) -> JobState {
        JobState::parse(&self.state).unwrap_or(JobState::Done)
    }
}

/// One file to write for a job.
#[derive(Debug, Clone)]
pub struct FileWrite {
    pub action: Action,
    pub source: PathBuf,
    pub dest: PathBuf,
    pub blake3: String,
    pub size: u64,
    /// `dest` already holds these bytes (an interrupted earlier attempt):
    /// nothing is copied, the file is verified and recorded.
    pub adopt: bool,
    /// Bytes keepsake made (a merged XMP sidecar) instead of a copy of
    /// `source`.
    pub content: Option<std::sync::Arc<Vec<u8>>>,
    /// A copy of `source` made while it was hashed, to move into place
    /// instead of copying again.
    pub staged: Option<PathBuf>,
    /// The BLAKE3 of `source` whose bytes this write keeps: `blake3` for a
    /// copy, the original's for a copy with embedded XMP or a sidecar
    /// keepsake merged its properties into (every property of the source
    /// is carried over). Empty when there is no source.
    pub keeps: String,
}

/// Where a duplicate's bytes are kept: its original's library copy, checked
/// again (hashed, fsynced) before a move-mode duplicate leaves the inbox.
#[derive(Debug, Clone)]
pub struct Keeper {
    pub path: PathBuf,
    /// The BLAKE3 of the copy's own bytes.
    pub copy_blake3: String,
    /// The BLAKE3 of the original it keeps (the duplicate's).
    pub source_blake3: String,
}

/// A job after its stages ran: what to write and how it ends.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub job_id: u64,
    pub finish: Finish,
    /// The first is the job's own file; companions follow.
    pub writes: Vec<FileWrite>,
    /// Inbox files to remove once the job is committed (move mode): the
    /// job's file, and the companions that were copied.
    pub remove_sources: Vec<PathBuf>,
    /// The job's own inbox file as it was read (size, mtime, inode): in move
    /// mode it is removed only if it still is exactly that file.
    pub source_as_read: Option<(u64, i64, u64)>,
    /// A duplicate of a job still being placed: it is finished only if that
    /// job's file is committed, so a duplicate never points at nothing.
    pub depends_on: Option<u64>,
    /// A duplicate of a committed asset: where its bytes are kept.
    pub keeper: Option<Keeper>,
    /// The BLAKE3 of the job's own file as it was read.
    pub source_blake3: String,
}

/// What happened to a job in [`apply`].
#[derive(Debug, Clone)]
pub enum Applied {
    Finished(JobState),
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Apply a batch of plans; a job whose files cannot be written fails alone.
pub fn apply(ledger: &Ledger, plans: Vec<JobPlan>) -> Result<Vec<(u64, Applied)>, ApplyError> {
    let started = std::time::Instant::now();
    let mut results: BTreeMap<u64, Applied> = BTreeMap::new();

    // 1. Intents (and jobs that need no file written) in one transaction.
    let (entries, extras) = record_intents(ledger, &plans)?;
    fault_point("intents committed");
    let intents = started.elapsed();
    // Proofs that a source's bytes are durable, by journal entry.
    let mut kept: HashMap<u64, Kept> = HashMap::new();
    let plans_by_id = settle_unwritten(ledger, plans, &mut results)?;
    let mut failed: HashMap<u64, String> = HashMap::new();

    // 2. Copy to temps: folders first (serially, each once), then the files
    // on every core.
    let (to_copy, gained_entries) = prepare_copies(&entries, &extras, &mut kept, &mut failed);
    let copies = crate::par::map(&to_copy, |entry| copy_one(entry, &extras));
    if DISK_FULL.swap(false, Ordering::Relaxed) {
        record_disk_full(ledger, &entries, &failed);
    }
    let mut written: Vec<&ledger::JournalEntry> = Vec::new();
    for (entry, copied) in to_copy.into_iter().zip(copies) {
        match copied {
            Ok(_) => written.push(entry),
            Err(message) => {
                failed.insert(entry.job_id, message);
            }
        }
    }

    let copied = started.elapsed();
    // 3. Durable, then verified.
    sync_temps(&written, &gained_entries, &mut failed);
    fault_point("temps synced");
    let synced = started.elapsed();
    verify_temps(&written, &mut failed);
    fault_point("temps verified");

    // 4. Into place.
    let dirs = rename_into_place(&written, &mut failed);
    sync_folders(&dirs, &gained_entries, &written, &mut failed);
    for entry in &written {
        if !failed.contains_key(&entry.job_id) {
            let keeps = extras.keeps.get(&entry.id).map_or("", String::as_str);
            kept.insert(entry.id, Kept::written(&entry.dest, keeps));
        }
    }
    fault_point("folders synced");

    // Temps of failed jobs go away; files already renamed stay (never delete
    // a library file): a retry adopts them as they are identical.
    for entry in &entries {
        if failed.contains_key(&entry.job_id) {
            let _ = fsops::remove_temp(&entry.temp);
        }
    }

    // 6. Done.
    let any_placed = written.iter().any(|e| !failed.contains_key(&e.job_id));
    commit_done(ledger, &entries, &plans_by_id, &mut failed, any_placed)?;
    fault_point("done committed");
    tracing::debug!(
        intents_ms = intents.as_millis() as u64,
        copy_ms = (copied - intents).as_millis() as u64,
        sync_ms = (synced - copied).as_millis() as u64,
        rest_ms = (started.elapsed() - synced).as_millis() as u64,
        "effects applied"
    );

    let proofs_by_job = collect_proofs(&entries, kept, &plans_by_id, &failed);
    finish_results(ledger, plans_by_id, failed, proofs_by_job, &mut results)?;
    Ok(results.into_iter().collect())
}

/// What step 1 of [`apply`] noted beside the intents, by journal entry.
#[derive(Default)]
struct IntentExtras {
    /// Entries whose destination already holds their bytes.
    adopted: std::collections::HashSet<u64>,
    /// Bytes keepsake made, to write instead of a copy.
    generated: HashMap<u64, std::sync::Arc<Vec<u8>>>,
    /// Copies made while hashing, to move into place.
    staged_copies: HashMap<u64, PathBuf>,
    /// The BLAKE3 of the source whose bytes each write keeps.
    keeps: HashMap<u64, String>,
}

/// Step 1 of [`apply`]: the intents, and the jobs that need no file written, in one transaction.
fn record_intents(
    ledger: &Ledger,
    plans: &[JobPlan],
) -> Result<(Vec<ledger::JournalEntry>, IntentExtras), LedgerError> {
    let mut extras = IntentExtras::default();
    let entries = ledger.write(|tx| {
        let mut entries: Vec<ledger::JournalEntry> = Vec::new();
        for plan in plans {
            if plan.writes.is_empty() {
                if plan.depends_on.is_none() {
                    finish_job(tx, plan.job_id, &plan.finish)?;
                }
                continue;
            }
            let outcome_json = serde_json::to_string(&plan.finish).unwrap_or_default();
            for write in &plan.writes {
                let entry = ledger::insert_intent(
                    tx,
                    &ledger::Intent {
                        job_id: plan.job_id,
                        action: write.action,
                        source: &write.source,
                        dest: &write.dest,
                        blake3: &write.blake3,
                        size: write.size,
                        outcome_json: &outcome_json,
                        keeps: &write.keeps,
                    },
                )?;
                if write.adopt {
                    extras.adopted.insert(entry.id);
                }
                extras.keeps.insert(entry.id, write.keeps.clone());
                if let Some(content) = &write.content {
                    extras
                        .generated
                        .insert(entry.id, std::sync::Arc::clone(content));
                }
                if let Some(staged) = &write.staged {
                    extras.staged_copies.insert(entry.id, staged.clone());
                }
                entries.push(entry);
            }
        }
        Ok(entries)
    })?;
    Ok((entries, extras))
}

/// Settles the jobs committed in step 1 without a file, and returns the others by id.
fn settle_unwritten(
    ledger: &Ledger,
    plans: Vec<JobPlan>,
    results: &mut BTreeMap<u64, Applied>,
) -> Result<BTreeMap<u64, JobPlan>, ApplyError> {
    let mut plans_by_id: BTreeMap<u64, JobPlan> = BTreeMap::new();
    for plan in plans {
        if plan.writes.is_empty() && plan.depends_on.is_none() {
            // Committed above: a move-mode duplicate may leave the inbox
            // once its original's copy is verified again.
            let outcome = match remove_sources(&plan, &[]) {
                Some(unkept) => fail_unkept(ledger, plan.job_id, unkept)?,
                None => Applied::Finished(plan.finish.state()),
            };
            results.insert(plan.job_id, outcome);
        } else {
            plans_by_id.insert(plan.job_id, plan);
        }
    }
    Ok(plans_by_id)
}

/// Adopts earlier attempts' copies and creates the destination folders;
/// returns the entries to copy and the folders' new entries.
fn prepare_copies<'a>(
    entries: &'a [ledger::JournalEntry],
    extras: &IntentExtras,
    kept: &mut HashMap<u64, Kept>,
    failed: &mut HashMap<u64, String>,
) -> (Vec<&'a ledger::JournalEntry>, BTreeSet<PathBuf>) {
    let mut to_copy: Vec<&ledger::JournalEntry> = Vec::new();
    let mut made_dirs: HashMap<PathBuf, Result<(), String>> = HashMap::new();
    let mut gained_entries: BTreeSet<PathBuf> = BTreeSet::new();
    for entry in entries {
        if failed.contains_key(&entry.job_id) {
            continue;
        }
        if extras.adopted.contains(&entry.id) {
            // Written by an earlier attempt: hashed and made durable again.
            let keeps = extras.keeps.get(&entry.id).map_or("", String::as_str);
            match Kept::verify(&entry.dest, &entry.blake3, keeps) {
                Ok(proof) => {
                    kept.insert(entry.id, proof);
                }
                Err(e) => {
                    failed.insert(
                        entry.job_id,
                        format!("adopting an earlier attempt's copy: {e}; retry the job"),
                    );
                }
            }
            continue;
        }
        let dir = entry.dest.parent().unwrap_or(Path::new("."));
        let made = made_dirs.entry(dir.to_path_buf()).or_insert_with(|| {
            fsops::create_dirs(dir)
                .map(|gained| gained_entries.extend(gained))
                .map_err(|e| format!("cannot create folder {}: {e}", dir.display()))
        });
        match made {
            Ok(()) => to_copy.push(entry),
            Err(message) => {
                failed.insert(entry.job_id, message.clone());
            }
        }
    }
    (to_copy, gained_entries)
}

/// Writes one entry's temp: bytes keepsake made, its staged copy, or a copy of its source.
fn copy_one(entry: &ledger::JournalEntry, extras: &IntentExtras) -> Result<u64, String> {
    let written = match (
        extras.generated.get(&entry.id),
        extras.staged_copies.get(&entry.id),
    ) {
        (Some(content), _) => fsops::write_temp(&entry.temp, content),
        // Moved, not copied again; across filesystems, copied.
        (None, Some(staged)) => fsops::take_staged(staged, &entry.temp, &entry.source)
            .map(|()| entry.size)
            .or_else(|_| fsops::copy_to_temp(&entry.source, &entry.temp)),
        (None, None) => fsops::copy_to_temp(&entry.source, &entry.temp),
    };
    fault_point("temp written");
    written.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::StorageFull => {
                DISK_FULL.store(true, Ordering::Relaxed);
                "; the disk is full: free space on it, then `keepsake retry --failed`"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; fix the permissions, then `keepsake retry --failed`"
            }
            _ => "",
        };
        format!(
            "cannot copy {} to {}: {e}{hint}",
            entry.source.display(),
            entry.temp.display()
        )
    })
}

/// Records that a disk is full, with the ledger's reserve freed first.
fn record_disk_full(
    ledger: &Ledger,
    entries: &[ledger::JournalEntry],
    failed: &HashMap<u64, String>,
) {
    // The ledger shares the disk, most often: what it records next
    // (these failures, then the stop) must still fit.
    ledger.release_reserve();
    let root = entries
        .iter()
        .find(|e| failed.contains_key(&e.job_id))
        .and_then(|e| e.dest.parent())
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let _ = ledger.write(|tx| {
        ledger::set_service_state(
            tx,
            "disk_full",
            &format!(
                "{root} (at {}): free space on that disk, then `keepsake retry --failed`",
                ledger::now()
            ),
        )
    });
}

/// Makes the written temps durable, with the new folders' entries.
fn sync_temps(
    written: &[&ledger::JournalEntry],
    gained_entries: &BTreeSet<PathBuf>,
    failed: &mut HashMap<u64, String>,
) {
    // New folders with them, so the temps' names are durable too.
    let temps: Vec<&Path> = (written.iter().map(|e| e.temp.as_path()))
        .chain(gained_entries.iter().map(PathBuf::as_path))
        .collect();
    if let Err(e) = fsops::sync_files(&temps) {
        for entry in written {
            failed
                .entry(entry.job_id)
                .or_insert_with(|| format!("cannot sync {}: {e}", entry.temp.display()));
        }
    }
}

/// Rehashes the temps of the jobs still standing against their expected BLAKE3.
fn verify_temps(written: &[&ledger::JournalEntry], failed: &mut HashMap<u64, String>) {
    let to_verify: Vec<&ledger::JournalEntry> = written
        .iter()
        .copied()
        .filter(|entry| !failed.contains_key(&entry.job_id))
        .collect();
    let hashes = crate::par::map(&to_verify, |entry| crate::hashing::blake3_file(&entry.temp));
    for (entry, hash) in to_verify.into_iter().zip(hashes) {
        match hash {
            Ok(hash) if hash == entry.blake3 => {}
            Ok(_) => {
                failed.insert(
                    entry.job_id,
                    format!(
                        "{} changed while it was being copied; it will be taken again on the next run",
                        entry.source.display()
                    ),
                );
            }
            Err(e) => {
                failed.insert(
                    entry.job_id,
                    format!("cannot verify {}: {e}", entry.temp.display()),
                );
            }
        }
    }
}

/// Step 4 of [`apply`]: renames each standing temp to its destination, never
/// replacing a file; returns the folders that received files.
fn rename_into_place(
    written: &[&ledger::JournalEntry],
    failed: &mut HashMap<u64, String>,
) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for entry in written {
        if failed.contains_key(&entry.job_id) {
            continue;
        }
        match fsops::rename_no_replace(&entry.temp, &entry.dest) {
            Ok(()) => {
                if let Some(dir) = entry.dest.parent() {
                    dirs.insert(dir.to_path_buf());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                failed.insert(
                    entry.job_id,
                    format!(
                        "{} appeared while keepsake was writing it; the job will pick another name when retried",
                        entry.dest.display()
                    ),
                );
            }
            Err(e) => {
                failed.insert(
                    entry.job_id,
                    format!("cannot rename into {}: {e}", entry.dest.display()),
                );
            }
        }
        fault_point("renamed");
    }
    dirs
}

/// Step 5 of [`apply`]: makes the destination folders durable; a job whose
/// folder cannot be synced fails.
fn sync_folders(
    dirs: &BTreeSet<PathBuf>,
    gained_entries: &BTreeSet<PathBuf>,
    written: &[&ledger::JournalEntry],
    failed: &mut HashMap<u64, String>,
) {
    // The folders that received files, and again the parents of new folders:
    // cheap when the temps' sync covered them, and what makes them durable
    // when it could not. A folder that cannot be synced holds back every
    // job written into it: its sources stay, and a retry adopts its files.
    let dir_list: Vec<&Path> = (dirs.iter().chain(gained_entries))
        .map(PathBuf::as_path)
        .collect();
    if let Err(e) = fsops::sync_files(&dir_list) {
        let mut unsynced: BTreeSet<&Path> = BTreeSet::new();
        for dir in &dir_list {
            if let Err(e) = fsops::fsync_dir(dir) {
                tracing::warn!("cannot sync folder {}: {e}", dir.display());
                unsynced.insert(dir);
            }
        }
        if unsynced.is_empty() {
            // Each on its own went through: the batch's error was elsewhere.
            tracing::warn!("syncing the library folders failed once: {e}");
        }
        for entry in written {
            let dir = entry.dest.parent().unwrap_or(Path::new("."));
            // Its own folder, or a new folder on its way up.
            if entry
                .dest
                .ancestors()
                .skip(1)
                .any(|up| unsynced.contains(up))
            {
                failed.entry(entry.job_id).or_insert_with(|| {
                    format!(
                        "cannot sync folder {}: {e}; its file is in place and the source stays until a retry makes it durable",
                        dir.display()
                    )
                });
            }
        }
    }
}

/// Step 6 of [`apply`]: one transaction marks the intents, finishes or fails
/// the jobs and records the pushes made on duplicates' behalf.
fn commit_done(
    ledger: &Ledger,
    entries: &[ledger::JournalEntry],
    plans_by_id: &BTreeMap<u64, JobPlan>,
    failed: &mut HashMap<u64, String>,
    any_placed: bool,
) -> Result<(), LedgerError> {
    ledger.write(|tx| {
        if any_placed {
            // Files land again: a disk that was full has room now.
            if ledger::clear_service_state(tx, "disk_full")? {
                // Take the reserve again for the next time a disk fills.
                ledger.hold_reserve();
            }
        }
        for entry in entries {
            let state = if failed.contains_key(&entry.job_id) {
                JournalState::RolledBack
            } else {
                JournalState::Done
            };
            ledger::mark(tx, entry.id, state)?;
        }
        for (job_id, plan) in plans_by_id {
            if let Some(original) = plan.depends_on {
                let placed = match plans_by_id.get(&original) {
                    Some(_) => !failed.contains_key(&original),
                    None => ledger::job(tx, original)?.is_some_and(|j| j.state == JobState::Done),
                };
                if !placed {
                    failed.insert(
                        *job_id,
                        format!(
                            "same bytes as job {original}, which could not be placed; `keepsake retry --failed` retries both"
                        ),
                    );
                }
            }
            match failed.get(job_id) {
                Some(message) => ledger::fail_job(tx, *job_id, message)?,
                None => finish_job(tx, *job_id, &plan.finish)?,
            }
        }
        push_on_behalf(tx, plans_by_id, failed)
    })
}

/// Duplicates of files this batch (or one just before) placed: their
/// inbox's targets get the original's copy on their behalf, now that
/// it has a place.
fn push_on_behalf(
    tx: &rusqlite::Transaction<'_>,
    plans_by_id: &BTreeMap<u64, JobPlan>,
    failed: &HashMap<u64, String>,
) -> rusqlite::Result<()> {
    for (job_id, plan) in plans_by_id {
        if let Some(original) = plan.depends_on
            && !failed.contains_key(job_id)
            && plan.finish.pushes.is_empty()
            && !plan.finish.pushes_on_behalf.is_empty()
            && let Some(keeper) = committed_copy(tx, original, &plan.source_blake3)?
            && let Some(asset) = ledger::asset_by_job(tx, original)?
        {
            let size = std::fs::symlink_metadata(&keeper.path).map_or(0, |m| m.len());
            for (target, template) in &plan.finish.pushes_on_behalf {
                let push = ledger::NewPush {
                    target: target.clone(),
                    key: template.replace("{path}", &asset.library_path),
                    file: asset.library_path.clone(),
                    blake3: keeper.copy_blake3.clone(),
                    size,
                };
                ledger::insert_push(tx, *job_id, &push)?;
            }
        }
    }
    Ok(())
}

/// The proofs of each job's files, and of each job's own file (a
/// duplicate in this batch is kept where its original went).
fn collect_proofs(
    entries: &[ledger::JournalEntry],
    mut kept: HashMap<u64, Kept>,
    plans_by_id: &BTreeMap<u64, JobPlan>,
    failed: &HashMap<u64, String>,
) -> HashMap<u64, Vec<(PathBuf, Kept)>> {
    let mut proofs_by_job: HashMap<u64, Vec<(PathBuf, Kept)>> = HashMap::new();
    for entry in entries {
        if let Some(proof) = kept.remove(&entry.id) {
            proofs_by_job
                .entry(entry.job_id)
                .or_default()
                .push((entry.source.clone(), proof));
        }
    }
    for (job_id, plan) in plans_by_id {
        if failed.contains_key(job_id) {
            continue;
        }
        if let Some(original) = plan.depends_on
            && let Some(place) = plans_by_id.get(&original).and_then(|p| p.writes.first())
            && let Some(proof) = proofs_by_job
                .get(&original)
                .and_then(|proofs| proofs.iter().find(|(source, _)| *source == place.source))
                .map(|(_, proof)| proof.clone())
        {
            proofs_by_job.entry(*job_id).or_default().push((
                plan.remove_sources.last().cloned().unwrap_or_default(),
                proof,
            ));
        }
    }
    proofs_by_job
}

/// Each job's result; a committed job's inbox files go (move mode).
fn finish_results(
    ledger: &Ledger,
    plans_by_id: BTreeMap<u64, JobPlan>,
    mut failed: HashMap<u64, String>,
    mut proofs_by_job: HashMap<u64, Vec<(PathBuf, Kept)>>,
    results: &mut BTreeMap<u64, Applied>,
) -> Result<(), ApplyError> {
    for (job_id, mut plan) in plans_by_id {
        match failed.remove(&job_id) {
            Some(message) => {
                results.insert(job_id, Applied::Failed(message));
            }
            None => {
                let proofs = proofs_by_job.remove(&job_id).unwrap_or_default();
                // A duplicate of a job an earlier batch committed meanwhile:
                // kept where that job's file went (checked again below).
                if let Some(original) = plan.depends_on
                    && plan.keeper.is_none()
                    && proofs.is_empty()
                {
                    plan.keeper = ledger
                        .read(|c| committed_copy(c, original, &plan.source_blake3))
                        .ok()
                        .flatten();
                }
                let outcome = match remove_sources(&plan, &proofs) {
                    Some(unkept) => fail_unkept(ledger, job_id, unkept)?,
                    None => Applied::Finished(plan.finish.state()),
                };
                results.insert(job_id, outcome);
            }
        }
    }
    Ok(())
}

/// A duplicate whose original's library copy no longer verifies is no
/// duplicate of anything kept: it fails, so `status` shows it and a rescan
/// does not hash it again and again; its inbox file stays.
fn fail_unkept(ledger: &Ledger, job_id: u64, message: String) -> Result<Applied, ApplyError> {
    ledger.write(|tx| ledger::fail_job(tx, job_id, &message))?;
    Ok(Applied::Failed(message))
}

/// Move mode: the job is committed, its inbox files may go, each only with
/// a proof that its bytes are kept (`proofs`: by source path; a duplicate's
/// own file without one is kept by its original's copy, verified now).
/// `Some(why)` when the job is a duplicate whose original's copy does not
/// verify: the job's own file stays, and the job is to fail with `why`.
#[must_use]
fn remove_sources(plan: &JobPlan, proofs: &[(PathBuf, Kept)]) -> Option<String> {
    if !matches!(
        plan.finish.state(),
        JobState::Done | JobState::Duplicate | JobState::Quarantined
    ) || plan.remove_sources.is_empty()
    {
        return None;
    }
    // The job's own file comes last in the list; if it changed since it was
    // read (rewritten in place), neither it nor its companions go: the newer
    // version is taken by a new job.
    if let (Some(main), Some(expected)) = (plan.remove_sources.last(), plan.source_as_read) {
        let now = fsops::fingerprint(main);
        if now.is_some_and(|now| now != expected) {
            tracing::warn!(
                job = plan.job_id,
                "{} changed after keepsake read it; it stays in the inbox and is taken again",
                main.display()
            );
            return None;
        }
    }
    let mut unkept = None;
    let keeper = plan.keeper.as_ref().and_then(|keeper| {
        let source = plan.remove_sources.last()?;
        match Kept::verify_for(
            &keeper.path,
            &keeper.copy_blake3,
            source,
            &keeper.source_blake3,
        ) {
            Ok(proof) => Some(proof),
            Err(e) => {
                let why = format!(
                    "a duplicate, but its original's copy does not verify ({e}); {} stays in the inbox. Run `keepsake verify`, restore that copy (from this file or offsite), then `keepsake retry --failed`",
                    source.display()
                );
                tracing::warn!(job = plan.job_id, "{why}");
                if plan.finish.state() == JobState::Duplicate {
                    unkept = Some(why);
                }
                None
            }
        }
    });
    let main = plan.remove_sources.last();
    for source in &plan.remove_sources {
        let proof = proofs
            .iter()
            .find(|(from, _)| from == source)
            .map(|(_, proof)| proof)
            .or(keeper.as_ref().filter(|_| Some(source) == main));
        let Some(proof) = proof else {
            tracing::warn!(
                job = plan.job_id,
                "{} stays in the inbox: keepsake has no verified copy of it",
                source.display()
            );
            if Some(source) == main && plan.finish.state() == JobState::Duplicate {
                unkept.get_or_insert_with(|| {
                    format!(
                        "a duplicate, but keepsake found no verified copy of its bytes; {} stays in the inbox. Run `keepsake verify`, then `keepsake retry --failed`",
                        source.display()
                    )
                });
            }
            continue;
        };
        // The job's own file was hashed when read; a companion's hash is
        // the one its copy was verified against.
        let hash = if Some(source) == main {
            plan.source_blake3.as_str()
        } else {
            plan.writes
                .iter()
                .find(|w| w.source == *source)
                .map_or("", |w| w.keeps.as_str())
        };
        if hash.is_empty() {
            // Nothing keeps all of it (a sidecar whose values the stages
            // replaced): it stays.
            continue;
        }
        // A companion is small: read again, so an edit made since it was
        // copied is never lost with it.
        if Some(source) != main && !crate::hashing::blake3_file(source).is_ok_and(|now| now == hash)
        {
            tracing::warn!(
                job = plan.job_id,
                "{} changed after keepsake copied it; it stays in the inbox",
                source.display()
            );
            continue;
        }
        if let Err(e) = kept::remove_source(source, hash, proof) {
            tracing::warn!(job = plan.job_id, "{e}");
        }
    }
    unkept
}

/// Where job `original` placed bytes with the BLAKE3 `source_blake3`.
fn committed_copy(
    conn: &rusqlite::Connection,
    original: u64,
    source_blake3: &str,
) -> rusqlite::Result<Option<Keeper>> {
    if ledger::asset_by_job(conn, original)?.is_none_or(|asset| asset.blake3 != source_blake3) {
        return Ok(None);
    }
    let copy = ledger::last_done_write(conn, original, Action::Place)?;
    Ok(copy.map(|(path, copy_blake3)| Keeper {
        path,
        copy_blake3,
        source_blake3: source_blake3.to_string(),
    }))
}

fn finish_job(
    tx: &rusqlite::Transaction<'_>,
    job_id: u64,
    finish: &Finish,
) -> rusqlite::Result<()> {
    if let (Some(asset), Some(path)) = (&finish.asset, &finish.dest_path)
        && ledger::asset_by_hash(tx, &asset.blake3)?.is_none()
        && ledger::asset_by_path(tx, path)?.is_none()
    {
        ledger::insert_asset(
            tx,
            &ledger::NewAsset {
                job_id,
                blake3: &asset.blake3,
                sha1: &asset.sha1,
                size: asset.size,
                media_kind: &asset.media_kind,
                capture_time: asset.capture_time.as_deref(),
                capture_source: asset.capture_source.as_deref(),
                library_path: path,
                library_blake3: asset.library_blake3.as_deref(),
            },
        )?;
    }
    if matches!(finish.state(), JobState::Done | JobState::Duplicate) {
        for push in &finish.pushes {
            ledger::insert_push(tx, job_id, push)?;
        }
    }
    // What a plan reads changed, in the same transaction: a plan made
    // meanwhile sees it, and if this process stops before voiding the
    // verdicts of the job's years, the next open does. (A job deferred or
    // queued again answers for nothing yet.)
    if !matches!(finish.state(), JobState::Deferred | JobState::Pending) {
        ledger::count_change(tx)?;
        ledger::note_unvoided(tx, job_id)?;
    }
    match finish.state() {
        JobState::Failed => {
            ledger::fail_job(tx, job_id, finish.reason.as_deref().unwrap_or("failed"))
        }
        state => ledger::finish_job(tx, job_id, state, &finish.outcome()),
    }
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovery {
    pub finished: usize,
    pub requeued: usize,
    pub temps_removed: usize,
}

/// Replay the journal after a crash. Runs before anything new is taken.
pub fn recover(ledger: &Ledger) -> Result<Recovery, LedgerError> {
    let open = ledger.read(ledger::open_intents)?;
    let mut recovery = Recovery::default();
    let mut by_job: BTreeMap<u64, Vec<ledger::JournalEntry>> = BTreeMap::new();
    for entry in open {
        by_job.entry(entry.job_id).or_default().push(entry);
    }
    for (job_id, entries) in by_job {
        let mut complete = true;
        for entry in &entries {
            if entry.temp.symlink_metadata().is_ok() {
                match fsops::remove_temp(&entry.temp) {
                    Ok(()) => {
                        recovery.temps_removed += 1;
                        if let Some(dir) = entry.temp.parent() {
                            let _ = fsops::fsync_dir(dir);
                        }
                    }
                    Err(e) => tracing::warn!(
                        job = job_id,
                        "cannot remove temp {}: {e}",
                        entry.temp.display()
                    ),
                }
            }
            // Arrived with the right bytes, and durable before anything
            // (a leftover inbox file) may be removed on its account.
            let arrived = Kept::verify(&entry.dest, &entry.blake3, "").is_ok();
            complete &= arrived;
        }
        let finish: Option<Finish> = serde_json::from_str(&entries[0].outcome_json).ok();
        ledger.write(|tx| {
            match (&finish, complete) {
                (Some(finish), true) => {
                    for entry in &entries {
                        ledger::mark(tx, entry.id, JournalState::Done)?;
                    }
                    finish_job(tx, job_id, finish)?;
                }
                _ => {
                    for entry in &entries {
                        ledger::mark(tx, entry.id, JournalState::RolledBack)?;
                    }
                    ledger::requeue_job(tx, job_id)?;
                }
            }
            Ok(())
        })?;
        if complete && finish.is_some() {
            recovery.finished += 1;
        } else {
            recovery.requeued += 1;
        }
        fault_point("recovered a job");
    }
    Ok(recovery)
}
