//! Offsite push: the host copies every library file (and its sidecars) that
//! the `offsite` stage asked for to its targets, records each push in the
//! ledger, defers what a target cannot take now, and verifies on demand.

mod dir;
mod manifest;
mod pace;
mod rcd;
mod rclone;
mod s3;
pub mod seal;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use crate::config::Config;
use crate::ledger::{self, Ledger, PushOutcome, PushRow};
use store::{Attempt, Store, StoreError};

/// Uploads in flight at once.
const CONCURRENT: usize = 4;

/// What a round of pushing did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PushReport {
    pub pushed: usize,
    pub bytes: u64,
    pub deferred: usize,
    pub conflicts: usize,
    pub errors: Vec<String>,
}

/// A failed attempt waits 30 s, then twice as long each time, at most 1 h.
fn wake_after(attempts: u32) -> i64 {
    let doublings = attempts.min(7);
    (30i64 << doublings).min(3600)
}

fn outcome_of(error: &StoreError, attempts: u32) -> PushOutcome {
    match error {
        StoreError::Conflict(message) => PushOutcome::Conflict(message.clone()),
        other => PushOutcome::Deferred {
            error: other.to_string(),
            wake_at: ledger::now() + wake_after(attempts),
        },
    }
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Open and check every target: a target that is down or refuses is known
/// before any of its pushes is tried.
async fn open_targets(
    ledger: &Arc<Ledger>,
    config: &Config,
) -> HashMap<String, Result<Arc<Store>, StoreError>> {
    let mut stores = HashMap::new();
    for (name, target) in &config.offsite {
        let pushed_before = {
            let ledger = Arc::clone(ledger);
            let name = name.clone();
            blocking(move || ledger.read(|c| ledger::last_push(c, &name)))
                .await
                .ok()
                .flatten()
                .is_some()
        };
        let opened = match Store::open(target).await {
            Ok(store) => match store.check(pushed_before).await {
                Ok(()) => Ok(Arc::new(store)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        stores.insert(name.clone(), opened);
    }
    stores
}

/// Push everything due: pending pushes and deferred ones whose time came
/// (with `now_all`, every deferred one). Stops between rounds when keepsake
/// is stopping.
pub async fn push_due(ledger: Arc<Ledger>, config: &Config, now_all: bool) -> PushReport {
    let mut report = PushReport::default();
    if config.offsite.is_empty() {
        return report;
    }
    // One pusher per ledger: a second would abort the first one's uploads.
    let Some(_lock) = push_lock(config, &mut report) else {
        return report;
    };
    let stores = open_targets(&ledger, config).await;
    for (name, store) in &stores {
        if let Err(e) = store {
            tracing::warn!("offsite target {name} cannot take files now: {e}");
        }
    }
    let library = config.library_root.clone();
    let spool = config.state_dir.join("spool");
    clear_spool(&spool);
    let mut after = 0u64;
    loop {
        if crate::shutdown::requested() {
            break;
        }
        let rows = {
            let ledger = Arc::clone(&ledger);
            blocking(move || ledger.read(|c| ledger::due_pushes(c, after, 64, now_all))).await
        };
        let rows = match rows {
            Ok(rows) if rows.is_empty() => break,
            Ok(rows) => rows,
            Err(e) => {
                report.errors.push(e.to_string());
                break;
            }
        };
        after = rows.last().map_or(after, |r| r.id);
        let outcomes = push_rows(rows, &stores, &ledger, config, &library, &spool).await;
        tally(&mut report, &outcomes);
        if let Err(e) = record_outcomes(&ledger, outcomes).await {
            report.errors.push(e.to_string());
            break;
        }
    }
    if report.pushed + report.deferred + report.conflicts > 0 {
        tracing::info!(
            pushed = report.pushed,
            mib = report.bytes >> 20,
            deferred = report.deferred,
            conflicts = report.conflicts,
            "offsite push"
        );
    }
    report
}

/// The ledger's push lock; None, with why in the report, when another
/// process holds it or it cannot be taken.
fn push_lock(config: &Config, report: &mut PushReport) -> Option<ledger::StateLock> {
    match ledger::StateLock::acquire_push(&config.state_dir) {
        Ok(lock) => Some(lock),
        Err(ledger::LedgerError::Locked { .. }) => {
            report.errors.push(
                "another keepsake process (`keepsake run`?) is pushing now; it pushes what waits on its own".into(),
            );
            None
        }
        Err(e) => {
            report.errors.push(e.to_string());
            None
        }
    }
}

/// Push one round of rows, `CONCURRENT` at a time: each row with what
/// became of it (None: its target is no longer in the config).
async fn push_rows(
    rows: Vec<PushRow>,
    stores: &HashMap<String, Result<Arc<Store>, StoreError>>,
    ledger: &Arc<Ledger>,
    config: &Config,
    library: &std::path::Path,
    spool: &std::path::Path,
) -> Vec<(PushRow, Option<PushOutcome>)> {
    let archive = &config.archive.root;
    futures::stream::iter(rows)
        .map(|row| {
            let store = stores.get(&row.target).cloned();
            let target = config.offsite.get(&row.target);
            let ledger = Arc::clone(ledger);
            async move {
                let outcome = match (store, target) {
                    // A target no longer in the config: left as it is.
                    (None, _) | (_, None) => None,
                    (Some(Err(e)), _) => Some(outcome_of(&e, row.attempts)),
                    (Some(Ok(store)), Some(target)) => {
                        let pushed = push_one(
                            &store,
                            &ledger,
                            &row,
                            library,
                            archive.as_deref(),
                            spool,
                            &target.age_recipients,
                        )
                        .await;
                        Some(match pushed {
                            Ok(etag) => PushOutcome::Done { etag },
                            Err(e) => outcome_of(&e, row.attempts),
                        })
                    }
                };
                (row, outcome)
            }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await
}

/// Count a round's outcomes in the report; a conflict is logged too.
fn tally(report: &mut PushReport, outcomes: &[(PushRow, Option<PushOutcome>)]) {
    for (row, outcome) in outcomes {
        match outcome {
            Some(PushOutcome::Done { .. }) => {
                report.pushed += 1;
                report.bytes += row.size;
            }
            Some(PushOutcome::Deferred { error, .. }) => {
                report.deferred += 1;
                if !report.errors.contains(error) && report.errors.len() < 20 {
                    report.errors.push(error.clone());
                }
            }
            Some(PushOutcome::Conflict(message)) => {
                report.conflicts += 1;
                tracing::error!("{message}");
                report.errors.push(message.clone());
            }
            None => {}
        }
    }
}

/// Record a round's outcomes in the ledger, in one transaction.
async fn record_outcomes(
    ledger: &Arc<Ledger>,
    outcomes: Vec<(PushRow, Option<PushOutcome>)>,
) -> Result<(), ledger::LedgerError> {
    let ledger = Arc::clone(ledger);
    blocking(move || {
        ledger.write(|tx| {
            for (row, outcome) in &outcomes {
                if let Some(outcome) = outcome {
                    ledger::record_push(tx, row.id, outcome)?;
                }
            }
            Ok(())
        })
    })
    .await
}

/// Push one row: the library file itself, or (for an encrypted target) its
/// age ciphertext, spooled to the state folder and recorded in the ledger
/// before it is sent.
async fn push_one(
    store: &Store,
    ledger: &Arc<Ledger>,
    row: &PushRow,
    library: &std::path::Path,
    archive: Option<&std::path::Path>,
    spool: &std::path::Path,
    age_recipients: &[String],
) -> Result<Option<String>, StoreError> {
    let local = locate(library, archive, &row.file);
    let note = {
        let ledger = Arc::clone(ledger);
        let id = row.id;
        move |upload: Option<&str>| {
            ledger
                .write(|tx| ledger::set_upload_id(tx, id, upload))
                .map_err(|e| e.to_string())
        }
    };
    let attempt = Attempt {
        begun: row.upload_id.clone(),
        note: &note,
    };
    if age_recipients.is_empty() {
        if row.sealed.is_some() {
            // Encryption was turned off since an earlier try.
            let (ledger, id) = (Arc::clone(ledger), row.id);
            blocking(move || ledger.write(|tx| ledger::set_sealed(tx, id, None)))
                .await
                .map_err(|e| StoreError::Local(e.to_string()))?;
        }
        let key = store.key_for(&row.key, &local);
        return store
            .put(&local, &key, &row.blake3, row.size, &attempt)
            .await;
    }
    let key = format!("{}.age", row.key);
    // A crash may have come between the upload and its record: the
    // ciphertext noted before it was sent is recognised.
    if let Some((sealed_blake3, sealed_size)) = &row.sealed
        && let Some(remote) = store.head(&key).await?
        && remote.size == *sealed_size
        && store.hash(&key).await?.as_deref() == Some(sealed_blake3.as_str())
    {
        return Ok(remote.etag);
    }
    let recipients = seal::recipients(age_recipients).map_err(StoreError::Refused)?;
    let sealed = spool.join(format!("{}-{}.age", std::process::id(), row.id));
    let blake3 = row.blake3.clone();
    let (from, to) = (local.clone(), sealed.clone());
    let made = blocking(move || seal::seal(&from, &blake3, &to, &recipients)).await;
    let (sealed_blake3, sealed_size) = match made {
        Ok(made) => made,
        Err(e) => {
            let _ = crate::effects::fsops::remove_temp(&sealed);
            return Err(StoreError::Local(format!(
                "cannot encrypt {}: {e}",
                local.display()
            )));
        }
    };
    let noted = {
        let (ledger, id, hash) = (Arc::clone(ledger), row.id, sealed_blake3.clone());
        blocking(move || ledger.write(|tx| ledger::set_sealed(tx, id, Some((&hash, sealed_size)))))
            .await
    };
    let pushed = match noted {
        Ok(()) => {
            store
                .put(&sealed, &key, &sealed_blake3, sealed_size, &attempt)
                .await
        }
        Err(e) => Err(StoreError::Local(e.to_string())),
    };
    let _ = crate::effects::fsops::remove_temp(&sealed);
    pushed
}

/// Where a library-relative file is now: the library, or the archive root
/// once its year was archived (same relative path).
fn locate(
    library: &std::path::Path,
    archive: Option<&std::path::Path>,
    file: &str,
) -> std::path::PathBuf {
    let live = library.join(file);
    match archive.map(|a| a.join(file)) {
        Some(archived) if !live.exists() && archived.exists() => archived,
        _ => live,
    }
}

/// Remove ciphertexts an earlier keepsake process left in the spool.
fn clear_spool(spool: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_string_lossy()
            .split('-')
            .next()
            .unwrap_or("")
            .to_string();
        let ours = pid == std::process::id().to_string();
        let running = std::path::Path::new("/proc").join(&pid).exists();
        if !ours && !running {
            let _ = crate::effects::fsops::remove_temp(&entry.path());
        }
    }
}

/// What `offsite verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub ok: usize,
    /// (target, key)
    pub missing: Vec<(String, String)>,
    /// (target, key, what is wrong)
    pub damaged: Vec<(String, String, String)>,
    /// Targets or objects that could not be checked.
    pub errors: Vec<String>,
}

/// Compare what the ledger says was pushed with what the targets hold:
/// size (and the ETag recorded at upload) always; with `deep`, the content
/// itself (downloaded and hashed). `sample`: only that many, spread evenly.
pub async fn verify(
    ledger: Arc<Ledger>,
    config: &Config,
    target: Option<String>,
    deep: bool,
    sample: Option<usize>,
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let rows = {
        let ledger = Arc::clone(&ledger);
        let target = target.clone();
        blocking(move || ledger.read(|c| ledger::pushes_of(c, target.as_deref(), Some("done"))))
            .await
    };
    let mut rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    if let Some(n) = sample
        && n < rows.len()
    {
        let step = rows.len() as f64 / n.max(1) as f64;
        rows = (0..n)
            .filter_map(|i| rows.get((i as f64 * step) as usize).cloned())
            .collect();
    }
    let depth = if deep { Depth::Download } else { Depth::Size };
    let (results, down) = check_rows(&ledger, config, rows, &depth).await;
    report.errors.extend(down);
    for (row, result) in results {
        report.checked += 1;
        match result {
            Ok(Found::Content | Found::SizeOnly(_)) => report.ok += 1,
            Ok(Found::Problem(problem)) if problem == "missing" => {
                report.missing.push((row.target.clone(), row.remote_key()));
            }
            Ok(Found::Problem(problem)) => {
                report
                    .damaged
                    .push((row.target.clone(), row.remote_key(), problem))
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report.missing.sort();
    report.damaged.sort();
    report
}

type Checked = Vec<(PushRow, Result<Found, StoreError>)>;

/// How far a check of an offsite copy goes.
#[derive(Debug, Clone)]
pub enum Depth {
    /// Size (and the ETag recorded at upload).
    Size,
    /// The content wherever the target gives a hash without a download: a
    /// folder's copy is rehashed, an S3 server's stored SHA-256 and an
    /// rclone remote's SHA-256, SHA-1 or MD5 are compared with the digests
    /// of the local files (by their BLAKE3); elsewhere the size.
    Content(Arc<HashMap<String, crate::hashing::Digests>>),
    /// Every object downloaded and rehashed.
    Download,
}

/// What the check of one offsite copy found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The content is the bytes pushed.
    Content,
    /// Size (and ETag) right; the content could not be checked, and why.
    SizeOnly(String),
    /// What is wrong.
    Problem(String),
}

/// Check each row on its target (None: as pushed; Some: what is wrong).
/// Rows of a target that is down are left out, and the target's error is
/// returned instead: a target that is down is not every object missing.
async fn check_rows(
    ledger: &Arc<Ledger>,
    config: &Config,
    mut rows: Vec<PushRow>,
    depth: &Depth,
) -> (Checked, Vec<String>) {
    let mut down = Vec::new();
    let mut stores: HashMap<String, Arc<Store>> = HashMap::new();
    for (name, opened) in open_targets(ledger, config).await {
        match opened {
            Ok(store) => {
                stores.insert(name, store);
            }
            Err(e) => down.push(e.to_string()),
        }
    }
    rows.retain(|row| stores.contains_key(&row.target));
    let library = config.library_root.as_path();
    let archive = config.archive.root.as_deref();
    let results = futures::stream::iter(rows)
        .map(|row| {
            let store = stores.get(&row.target).cloned();
            async move {
                let Some(store) = store else {
                    let error = StoreError::Refused(format!(
                        "offsite target {} cannot be checked",
                        row.target
                    ));
                    return (row, Err(error));
                };
                let checked = check_one(&store, &row, library, archive, depth).await;
                (row, checked)
            }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    (results, down)
}

/// For `archive plan`: each done push row checked on its target, by id.
/// A row whose target is down maps to an error naming it.
pub async fn verify_rows(
    ledger: Arc<Ledger>,
    config: &Config,
    rows: Vec<PushRow>,
    depth: &Depth,
) -> HashMap<u64, Result<Found, String>> {
    let ids: Vec<(u64, String)> = rows.iter().map(|r| (r.id, r.target.clone())).collect();
    let (results, down) = check_rows(&ledger, config, rows, depth).await;
    let mut out: HashMap<u64, Result<Found, String>> = results
        .into_iter()
        .map(|(row, result)| (row.id, result.map_err(|e| e.to_string())))
        .collect();
    for (id, target) in ids {
        out.entry(id).or_insert_with(|| {
            Err(down
                .iter()
                .find(|e| e.contains(&format!("offsite target {target}")))
                .cloned()
                .unwrap_or_else(|| format!("offsite target {target} cannot be checked")))
        });
    }
    out
}

/// What one offsite copy is, checked as far as `depth` goes.
async fn check_one(
    store: &Store,
    row: &PushRow,
    library: &std::path::Path,
    archive: Option<&std::path::Path>,
    depth: &Depth,
) -> Result<Found, StoreError> {
    let key = store.key_for(&row.remote_key(), &locate(library, archive, &row.file));
    let (blake3, size) = row.remote_content();
    let Some(remote) = store.head(&key).await? else {
        return Ok(Found::Problem("missing".into()));
    };
    if remote.size != size {
        return Ok(Found::Problem(format!(
            "{} bytes, {size} expected",
            remote.size
        )));
    }
    if let (Some(pushed), Some(now)) = (&row.etag, &remote.etag)
        && pushed != now
    {
        return Ok(Found::Problem(format!("ETag {now}, {pushed} when pushed")));
    }
    let rehash = || async {
        Ok(match store.hash(&key).await? {
            Some(hash) if hash == blake3 => Found::Content,
            Some(_) => Found::Problem("content differs (BLAKE3)".into()),
            None => Found::Problem("missing".into()),
        })
    };
    match depth {
        Depth::Size => Ok(Found::SizeOnly("size checked".into())),
        Depth::Download => rehash().await,
        Depth::Content(local) => {
            if store.is_local() {
                return rehash().await;
            }
            if row.sealed.is_some() {
                return Ok(Found::SizeOnly(
                    "encrypted: the target can vouch only for the size of the ciphertext".into(),
                ));
            }
            let Some(expected) = local.get(&row.blake3) else {
                return Ok(Found::SizeOnly(
                    "the library file changed since it was pushed: size checked".into(),
                ));
            };
            match store.digest(&key).await? {
                Some((kind, theirs)) => match expected.of(kind) {
                    Some(ours) if ours == theirs => Ok(Found::Content),
                    Some(_) => Ok(Found::Problem(format!(
                        "content differs ({})",
                        match kind {
                            "sha256" => "SHA-256",
                            "sha1" => "SHA-1",
                            _ => "MD5",
                        }
                    ))),
                    None => Ok(Found::SizeOnly(format!(
                        "keepsake did not read the local file's {kind}: size checked"
                    ))),
                },
                None => Ok(Found::SizeOnly(
                    "the target keeps no SHA-256, SHA-1 or MD5 for it: size checked (`--deep` downloads it)"
                        .into(),
                )),
            }
        }
    }
}

/// What `offsite restore` did.
#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub restored: usize,
    pub bytes: u64,
    /// Restored files whose BLAKE3 matched the ledger's record.
    pub verified: usize,
    /// Files already in the destination: left as they are.
    pub skipped: Vec<String>,
    pub errors: Vec<String>,
}

/// Copy every object of `target` (under `prefix`) back into the folder
/// `to`, decrypting `.age` objects with the identities in `identity`. Works
/// without a ledger (after the house burned); with one, every restored file
/// is checked against the BLAKE3 recorded when it was pushed. Never
/// replaces a file in `to`.
pub async fn restore(
    config: &Config,
    ledger: Option<Arc<Ledger>>,
    target: &str,
    to: &std::path::Path,
    identity: Option<&std::path::Path>,
    prefix: Option<&str>,
) -> RestoreReport {
    let mut report = RestoreReport::default();
    let Some(settings) = config.offsite.get(target) else {
        report
            .errors
            .push(format!("no offsite target {target:?} in {}", config.origin));
        return report;
    };
    let store = match Store::open(settings).await {
        Ok(store) => store,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    let identities = match identity.map(seal::identities).transpose() {
        Ok(identities) => identities.map(Arc::new),
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    };
    let recorded: HashMap<String, String> = match &ledger {
        Some(ledger) => {
            let ledger = Arc::clone(ledger);
            let target = target.to_string();
            blocking(move || ledger.read(|c| ledger::pushes_of(c, Some(&target), Some("done"))))
                .await
                .map(|rows| {
                    rows.into_iter()
                        .map(|row| (row.remote_key(), row.blake3))
                        .collect()
                })
                .unwrap_or_default()
        }
        None => HashMap::new(),
    };
    let objects = match store.list().await {
        Ok(objects) => objects,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    if let Err(e) = crate::effects::fsops::create_dirs(to) {
        report
            .errors
            .push(format!("cannot create {}: {e}", to.display()));
        return report;
    }
    // Temps of an interrupted restore into the same folder.
    if let Ok(entries) = std::fs::read_dir(to) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".keepsake-restore-")
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                let _ = crate::effects::fsops::remove_temp(&entry.path());
            }
        }
    }
    let wanted = objects.into_iter().filter(|(key, _)| {
        prefix.is_none_or(|p| key.starts_with(p))
            && !key.split('/').any(|part| part == ".." || part.is_empty())
    });
    let results: Vec<(String, Restored)> = futures::stream::iter(wanted.enumerate())
        .map(|(n, (key, _))| {
            let (store, identities, recorded) = (&store, identities.clone(), &recorded);
            async move {
                let restored =
                    restore_one(store, &key, n, to, identities, recorded.get(&key)).await;
                (key, restored)
            }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    for (key, result) in results {
        match result {
            Ok(Some((bytes, verified))) => {
                report.restored += 1;
                report.bytes += bytes;
                report.verified += usize::from(verified);
            }
            Ok(None) => report.skipped.push(key),
            Err(e) => report.errors.push(format!("{key}: {e}")),
        }
    }
    report.skipped.sort();
    report.errors.sort();
    report
}

/// What restoring one object gave: Some((bytes, checked against the
/// ledger)), or None when the file was already there.
type Restored = Result<Option<(u64, bool)>, String>;

/// Some((bytes, checked against the ledger)), or None when the file is
/// already there.
async fn restore_one(
    store: &Store,
    key: &str,
    n: usize,
    to: &std::path::Path,
    identities: Option<Arc<Vec<Box<dyn age::Identity + Send + Sync>>>>,
    recorded: Option<&String>,
) -> Restored {
    use crate::effects::fsops;
    let plain_key = key.strip_suffix(".age").filter(|_| identities.is_some());
    if key.ends_with(".age") && identities.is_none() {
        return Err(
            "encrypted: pass --identity FILE (the key from `keepsake offsite keygen`)".into(),
        );
    }
    let dest = to.join(plain_key.unwrap_or(key));
    if dest.exists() {
        return Ok(None);
    }
    let temp = to.join(format!(".keepsake-restore-{}-{n}", std::process::id()));
    let fetched = to.join(format!(".keepsake-restore-{}-{n}.age", std::process::id()));
    let download_to = if identities.is_some() && plain_key.is_some() {
        &fetched
    } else {
        &temp
    };
    if let Err(e) = store.download(key, download_to).await {
        let _ = fsops::remove_temp(download_to);
        return Err(e.to_string());
    }
    let (temp2, fetched2, dest2) = (temp.clone(), fetched.clone(), dest.clone());
    let sealed = download_to == &fetched;
    let expected = recorded.cloned();
    blocking(move || {
        let finish = || -> Result<(u64, bool), String> {
            let hash = if let (true, Some(ids)) = (sealed, identities.as_deref()) {
                let hash = seal::open(&fetched2, &temp2, ids)
                    .map_err(|e| format!("cannot decrypt: {e}"))?;
                let _ = fsops::remove_temp(&fetched2);
                hash
            } else {
                crate::hashing::blake3_file(&temp2).map_err(|e| e.to_string())?
            };
            if let Some(expected) = &expected
                && *expected != hash
            {
                return Err("its BLAKE3 differs from the one recorded when it was pushed: the copy is damaged".into());
            }
            let size = std::fs::metadata(&temp2).map_err(|e| e.to_string())?.len();
            if let Some(dir) = dest2.parent() {
                fsops::create_dirs(dir).map_err(|e| e.to_string())?;
            }
            fsops::sync_files(&[temp2.as_path()]).map_err(|e| e.to_string())?;
            fsops::rename_no_replace(&temp2, &dest2).map_err(|e| e.to_string())?;
            Ok((size, expected.is_some()))
        };
        let result = finish();
        if result.is_err() {
            let _ = fsops::remove_temp(&temp2);
            let _ = fsops::remove_temp(&fetched2);
        }
        result.map(Some)
    })
    .await
}
