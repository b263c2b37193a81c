//! `run`: the always-on service.

use std::path::Path;

use anyhow::{Context, bail};

use super::{Outcome, load_config};
use crate::config::Config;

/// `keepsake run`: watch every inbox until Ctrl-C or SIGTERM.
pub(super) fn run(config: Option<&Path>) -> anyhow::Result<Outcome> {
    let (config, is_default) = load_config(config)?;
    check_inboxes(&config, is_default)?;
    crate::service::run(config)?;
    Ok(Outcome::Done)
}

/// Every inbox folder exists (the built-in default creates its own, and
/// the library), or the service refuses to start, naming the key.
fn check_inboxes(config: &Config, is_default: bool) -> anyhow::Result<()> {
    if is_default {
        for dir in config
            .inboxes
            .iter()
            .map(|i| &i.path)
            .chain([&config.library_root])
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    if config.inboxes.is_empty() {
        bail!(
            "config {}: no [[inbox]] to watch; add one (see `keepsake init`)",
            config.origin
        );
    }
    for (i, inbox) in config.inboxes.iter().enumerate() {
        if !inbox.path.is_dir() {
            bail!(
                "config {}: `inbox[{i}].path`: the folder {} of inbox {:?} does not exist; create it or fix the path",
                config.origin,
                inbox.path.display(),
                inbox.name
            );
        }
    }
    Ok(())
}
