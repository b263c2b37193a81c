//! `archive plan` and `archive run`: the rolling iCloud archive.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::bail;

use super::{ArchiveCommand, Outcome, load_config, open_existing, recover_archive_moves};
use crate::ledger;

pub(super) fn archive(config: Option<&Path>, command: ArchiveCommand) -> anyhow::Result<Outcome> {
    match command {
        ArchiveCommand::Plan {
            year,
            older_than_years,
            deep,
            inventory,
            json,
        } => plan(config, year, older_than_years, deep, inventory, json),
        ArchiveCommand::Run {
            year,
            dry_run,
            json,
        } => run(config, year, dry_run, json),
    }
}

/// `keepsake archive plan --year Y | --older-than-years N [--deep] [--inventory FILE]`.
fn plan(
    config: Option<&Path>,
    year: Option<i32>,
    older_than_years: Option<u32>,
    deep: bool,
    inventory: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let (config, _) = load_config(config)?;
    let ledger = std::sync::Arc::new(open_existing(&config)?);
    recover_archive_moves(&config, &ledger)?;
    let years = match (year, older_than_years) {
        (Some(year), _) => vec![year],
        (None, Some(keep)) => crate::archive::years_older_than(&ledger, keep)?,
        (None, None) => bail!("name a year (--year 2019) or --older-than-years N"),
    };
    let mut out = std::io::stdout().lock();
    if years.is_empty() {
        writeln!(out, "no year older than that holds anything")?;
        return Ok(Outcome::Done);
    }
    let mut all_safe = true;
    let options = crate::archive::PlanOptions { deep, inventory };
    crate::archive::void_stale(&config);
    for year in years {
        let plan = crate::archive::plan(&config, &ledger, year, &options)?;
        all_safe &= plan.safe;
        if json {
            writeln!(out, "{}", serde_json::to_string(&plan)?)?;
        } else {
            crate::report::print_plan(&mut out, &plan)?;
        }
    }
    Ok(Outcome::ok_if(all_safe))
}

/// `keepsake archive run --year Y [--dry-run]`.
fn run(config: Option<&Path>, year: i32, dry_run: bool, json: bool) -> anyhow::Result<Outcome> {
    let (config, _) = load_config(config)?;
    let _lock = ledger::StateLock::acquire(&config.state_dir)?;
    let ledger = std::sync::Arc::new(open_existing(&config)?);
    let _turn = crate::archive::turn();
    let result = crate::archive::run(&config, &ledger, year, dry_run)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&result)?)?;
    } else {
        crate::report::print_archive_run(&mut out, &result)?;
    }
    Ok(Outcome::ok_if(
        result.errors.is_empty() && result.stopped.is_none(),
    ))
}
