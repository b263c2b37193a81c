//! `status`, `jobs` and `retry`: the queue and what it did.

use std::path::Path;

use anyhow::{Context, bail};

use super::{Outcome, load_config, open_existing};
use crate::ledger::{self, JobState};

/// `keepsake status [--json]`.
pub(super) fn status(config: Option<&Path>, json: bool) -> anyhow::Result<Outcome> {
    let (config, _) = load_config(config)?;
    let ledger = open_existing(&config)?;
    let mut out = std::io::stdout().lock();
    crate::report::print_status(&mut out, &config, &ledger, json)?;
    Ok(Outcome::Done)
}

/// `keepsake jobs [--failed | --state S] [--json]`.
pub(super) fn jobs(
    config: Option<&Path>,
    failed: bool,
    state: Option<&str>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let (config, _) = load_config(config)?;
    let ledger = open_existing(&config)?;
    let state = match (failed, state) {
        (true, _) => Some(JobState::Failed),
        (false, Some(text)) => Some(JobState::parse(text).with_context(|| {
            format!("unknown state {text:?}; one of pending, done, duplicate, quarantined, skipped, failed, deferred")
        })?),
        (false, None) => None,
    };
    let jobs = ledger.read(|c| ledger::jobs_in_state(c, state))?;
    let mut out = std::io::stdout().lock();
    crate::report::print_jobs(&mut out, &config, &jobs, json)?;
    Ok(Outcome::Done)
}

/// `keepsake retry JOB | --failed`.
pub(super) fn retry(
    config: Option<&Path>,
    job: Option<u64>,
    failed: bool,
) -> anyhow::Result<Outcome> {
    let (config, _) = load_config(config)?;
    let ledger = open_existing(&config)?;
    let target = if failed { None } else { job };
    let n = ledger.write(|tx| ledger::retry(tx, target))?;
    match (target, n) {
        (Some(id), 0) => {
            bail!("job {id} is not failed, quarantined or skipped (see `keepsake jobs`)")
        }
        _ => println!(
            "{n} job(s) queued again; a running `keepsake run` takes them within seconds, or `keepsake ingest`"
        ),
    }
    Ok(Outcome::Done)
}
