//! `immich status | sync | pull`.

use std::io::Write;
use std::path::Path;

use anyhow::bail;

use super::{ImmichCommand, Outcome, load_config, open_existing};
use crate::config::{Config, ImmichConfig};
use crate::ledger;
use crate::library_jobs::open_pipeline;

pub(super) fn immich(config: Option<&Path>, command: ImmichCommand) -> anyhow::Result<Outcome> {
    let (config, _) = load_config(config)?;
    let Some(immich) = config.immich.clone() else {
        bail!(
            "config {}: no [immich] table; add one with url and api_key_file (see the README)",
            config.origin
        );
    };
    match command {
        ImmichCommand::Status { json } => status(&config, &immich, json),
        ImmichCommand::Pull { json, changes } => pull(config, json, changes),
        ImmichCommand::Sync { json, all } => sync(config, json, all),
    }
}

/// `keepsake immich status`: the server, the key, and the stage's files.
fn status(config: &Config, immich: &ImmichConfig, json: bool) -> anyhow::Result<Outcome> {
    let ledger = open_existing(config).ok();
    let status = crate::immich::status(config, immich, ledger.as_ref());
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&status)?)?;
    } else {
        crate::report::print_immich_status(&mut out, &status)?;
    }
    Ok(Outcome::ok_if(status.connection_error.is_none()))
}

/// `keepsake immich pull [--changes]`: what the family did in Immich, into
/// the sidecars.
fn pull(config: Config, json: bool, changes: bool) -> anyhow::Result<Outcome> {
    let pipeline = open_pipeline(config)?;
    let swept = crate::immich::writeback::sweep(&pipeline, !changes)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&swept)?)?;
    } else {
        writeln!(
            out,
            "immich: read {} albums and {} assets ({}), {} changed, {} sidecars written ({} requests)",
            swept.albums_read,
            swept.assets_read,
            if swept.full { "all" } else { "changes only" },
            swept.changed,
            swept.sidecars_written,
            swept.requests
        )?;
        for error in &swept.errors {
            writeln!(out, "  ! {error}")?;
        }
    }
    Ok(Outcome::ok_if(swept.errors.is_empty()))
}

/// `keepsake immich sync [--all]`: send what waits, now.
fn sync(config: Config, json: bool, all: bool) -> anyhow::Result<Outcome> {
    let pipeline = open_pipeline(config)?;
    let forgotten = if all {
        Some(crate::immich::forget(pipeline.ledger())?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    if let Some(forgotten) = forgotten
        && !json
    {
        writeln!(
            out,
            "immich: forgot what Immich held for {forgotten} files; sending them again"
        )?;
    }
    // Whatever its next try: the person asked for now.
    pipeline
        .ledger()
        .write(|tx| ledger::wake_placed_calls(tx, "immich"))?;
    let after = crate::immich::placed::PlacedPhase::default().run(&pipeline)?;
    let counts = crate::immich::counts(pipeline.ledger())?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "ran": after, "counts": counts, "forgotten": forgotten })
        )?;
    } else {
        writeln!(
            out,
            "immich: {} sent, {} waiting, {} failed ({} requests)",
            after.done, after.deferred, after.failed, after.requests
        )?;
        for (stage, why) in &after.waiting {
            writeln!(out, "  ! {stage} is held back: {why}")?;
        }
    }
    Ok(Outcome::ok_if(
        counts.deferred + counts.failed + counts.pending == 0 && after.waiting.is_empty(),
    ))
}
