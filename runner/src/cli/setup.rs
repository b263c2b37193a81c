//! `init` and `plugins list`: the config and the stages it names.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

use super::{Outcome, load_config};
use crate::config::DEFAULT_CONFIG;

/// `keepsake init [PATH] [--force]`: write the commented default config.
pub(super) fn init(path: &Path, force: bool) -> anyhow::Result<Outcome> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    std::fs::write(path, DEFAULT_CONFIG)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote {}; edit it, then run `keepsake ingest`",
        path.display()
    );
    Ok(Outcome::Done)
}

/// `keepsake plugins list`: every stage the config names.
pub(super) fn plugins_list(config: Option<&Path>) -> anyhow::Result<Outcome> {
    let (config, _) = load_config(config)?;
    let (_, stages) = crate::pipeline::load_stages(&config)?;
    let mut out = std::io::stdout().lock();
    crate::report::print_plugins(&mut out, &config, stages.values())?;
    out.flush()?;
    Ok(Outcome::Done)
}
