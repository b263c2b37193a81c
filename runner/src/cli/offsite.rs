//! `offsite status | push | verify | restore | keygen`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::bail;

use super::{OffsiteCommand, Outcome, load_config, open_existing};
use crate::config::Config;
use crate::ledger::Ledger;

pub(super) fn offsite(config: Option<&Path>, command: OffsiteCommand) -> anyhow::Result<Outcome> {
    match command {
        // Neither needs a ledger: a key is made before the first push, and
        // a restore may come after the ledger was lost.
        OffsiteCommand::Keygen { file } => keygen(&file),
        OffsiteCommand::Restore {
            target,
            to,
            identity,
            prefix,
            json,
        } => {
            let (config, _) = load_config(config)?;
            restore(
                &config,
                target,
                &to,
                identity.as_deref(),
                prefix.as_deref(),
                json,
            )
        }
        OffsiteCommand::Status { json } => {
            let (config, ledger) = with_targets(config)?;
            let mut out = std::io::stdout().lock();
            crate::report::print_offsite_status(&mut out, &config, &ledger, json)?;
            Ok(Outcome::Done)
        }
        OffsiteCommand::Push { json } => {
            let (config, ledger) = with_targets(config)?;
            push(&config, ledger, json)
        }
        OffsiteCommand::Verify {
            target,
            deep,
            sample,
            json,
        } => {
            let (config, ledger) = with_targets(config)?;
            verify(&config, ledger, target, deep, sample, json)
        }
    }
}

/// The config, which must have a target, and its ledger.
fn with_targets(config: Option<&Path>) -> anyhow::Result<(Config, Arc<Ledger>)> {
    let (config, _) = load_config(config)?;
    if config.offsite.is_empty() {
        bail!(
            "config {}: no offsite target; add an [offsite.NAME] table (see the README)",
            config.origin
        );
    }
    let ledger = Arc::new(open_existing(&config)?);
    Ok((config, ledger))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `keepsake offsite push`: what waits, now.
fn push(config: &Config, ledger: Arc<Ledger>, json: bool) -> anyhow::Result<Outcome> {
    let pushed = runtime()?.block_on(crate::offsite::push_due(ledger, config, true));
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&pushed)?)?;
    } else {
        crate::report::print_push(&mut out, &pushed)?;
    }
    Ok(Outcome::ok_if(pushed.deferred + pushed.conflicts == 0))
}

/// `keepsake offsite verify [--target T] [--deep] [--sample N]`.
fn verify(
    config: &Config,
    ledger: Arc<Ledger>,
    target: Option<String>,
    deep: bool,
    sample: Option<usize>,
    json: bool,
) -> anyhow::Result<Outcome> {
    if let Some(name) = &target
        && !config.offsite.contains_key(name)
    {
        bail!("no offsite target {name:?} in {}", config.origin);
    }
    let verified = runtime()?.block_on(crate::offsite::verify(
        ledger.clone(),
        config,
        target,
        deep,
        sample,
    ));
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&verified)?)?;
    } else {
        crate::report::print_verify(&mut out, &verified, deep)?;
    }
    if !(verified.missing.is_empty() && verified.damaged.is_empty()) {
        crate::archive::void_changed(config, &ledger, None, "an offsite copy does not verify");
    }
    Ok(Outcome::ok_if(
        verified.missing.is_empty() && verified.damaged.is_empty() && verified.errors.is_empty(),
    ))
}

/// `keepsake offsite restore --to DIR [--target T] [--identity F] [--prefix P]`.
fn restore(
    config: &Config,
    target: Option<String>,
    to: &Path,
    identity: Option<&Path>,
    prefix: Option<&str>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let target = match target {
        Some(name) if config.offsite.contains_key(&name) => name,
        Some(name) => bail!("no offsite target {name:?} in {}", config.origin),
        None if config.offsite.len() == 1 => {
            config.offsite.keys().next().cloned().unwrap_or_default()
        }
        None => bail!(
            "config {} has {} offsite targets: name one with --target",
            config.origin,
            config.offsite.len()
        ),
    };
    // After a loss there may be no ledger: restore works without.
    let ledger = open_existing(config).ok().map(Arc::new);
    let restored = runtime()?.block_on(crate::offsite::restore(
        config, ledger, &target, to, identity, prefix,
    ));
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&restored)?)?;
    } else {
        crate::report::print_restore(&mut out, &target, to, &restored)?;
    }
    Ok(Outcome::ok_if(restored.errors.is_empty()))
}

/// `keepsake offsite keygen FILE`.
fn keygen(file: &Path) -> anyhow::Result<Outcome> {
    let recipient = crate::offsite::seal::keygen(file)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "wrote the secret identity to {}: keep it off this machine, and keep a copy\npublic key (put it in age_recipients):\n{recipient}",
        file.display()
    )?;
    Ok(Outcome::Done)
}
