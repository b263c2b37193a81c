//! Offsite push: the host copies every library file (and its sidecars) that
//! the `offsite` stage asked for to its targets, records each push in the
//! ledger, defers what a target cannot take now, and verifies on demand.

pub mod store;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use crate::config::Config;
use crate::ledger::{self, Ledger, PushOutcome, PushRow};
use store::{Store, StoreError};

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
        let opened = match Store::open(target) {
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
    let stores = open_targets(&ledger, config).await;
    for (name, store) in &stores {
        if let Err(e) = store {
            tracing::warn!("offsite target {name} cannot take files now: {e}");
        }
    }
    let library = config.library_root.clone();
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
        let outcomes: Vec<(PushRow, Option<PushOutcome>)> = futures::stream::iter(rows)
            .map(|row| {
                let store = stores.get(&row.target).cloned();
                let local = library.join(&row.file);
                async move {
                    let outcome = match store {
                        // A target no longer in the config: left as it is.
                        None => None,
                        Some(Err(e)) => Some(outcome_of(&e, row.attempts)),
                        Some(Ok(store)) => Some(
                            match store.put(&local, &row.key, &row.blake3, row.size).await {
                                Ok(etag) => PushOutcome::Done { etag },
                                Err(e) => outcome_of(&e, row.attempts),
                            },
                        ),
                    };
                    (row, outcome)
                }
            })
            .buffer_unordered(CONCURRENT)
            .collect()
            .await;
        for (row, outcome) in &outcomes {
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
        let ledger = Arc::clone(&ledger);
        let recorded = blocking(move || {
            ledger.write(|tx| {
                for (row, outcome) in &outcomes {
                    if let Some(outcome) = outcome {
                        ledger::record_push(tx, row.id, outcome)?;
                    }
                }
                Ok(())
            })
        })
        .await;
        if let Err(e) = recorded {
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
    // A target that is down is reported as down, not as every object missing.
    let mut stores: HashMap<String, Arc<Store>> = HashMap::new();
    for (name, opened) in open_targets(&ledger, config).await {
        match opened {
            Ok(store) => {
                stores.insert(name, store);
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    rows.retain(|row| stores.contains_key(&row.target));
    let results: Vec<(PushRow, Result<Option<String>, StoreError>)> = futures::stream::iter(rows)
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
                let checked = check_one(&store, &row, deep).await;
                (row, checked)
            }
        })
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    for (row, result) in results {
        report.checked += 1;
        match result {
            Ok(None) => report.ok += 1,
            Ok(Some(problem)) if problem == "missing" => {
                report.missing.push((row.target, row.key));
            }
            Ok(Some(problem)) => report.damaged.push((row.target, row.key, problem)),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report.missing.sort();
    report.damaged.sort();
    report
}

/// None when the object is as pushed; else what is wrong.
async fn check_one(store: &Store, row: &PushRow, deep: bool) -> Result<Option<String>, StoreError> {
    let Some(remote) = store.head(&row.key).await? else {
        return Ok(Some("missing".into()));
    };
    if remote.size != row.size {
        return Ok(Some(format!(
            "{} bytes, {} expected",
            remote.size, row.size
        )));
    }
    if let (Some(pushed), Some(now)) = (&row.etag, &remote.etag)
        && pushed != now
    {
        return Ok(Some(format!("ETag {now}, {pushed} when pushed")));
    }
    if deep {
        match store.hash(&row.key).await? {
            Some(hash) if hash == row.blake3 => {}
            Some(_) => return Ok(Some("content differs (BLAKE3)".into())),
            None => return Ok(Some("missing".into())),
        }
    }
    Ok(None)
}
