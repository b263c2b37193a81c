//! `ledger rebuild`: the asset table again, from the files alone.

use std::path::Path;

use super::{Outcome, load_config};
use crate::ledger::{self, Ledger};

/// `keepsake ledger rebuild [--json]`.
pub(super) fn rebuild(config: Option<&Path>, json: bool) -> anyhow::Result<Outcome> {
    let (config, _) = load_config(config)?;
    let _lock = ledger::StateLock::acquire(&config.state_dir)?;
    let ledger = std::sync::Arc::new(Ledger::open(&config.ledger_path())?);
    let result = crate::rebuild::rebuild(&config, &ledger)?;
    let mut out = std::io::stdout().lock();
    crate::report::print_rebuild(&mut out, &config, &result, json)?;
    Ok(Outcome::ok_if(result.errors.is_empty()))
}
