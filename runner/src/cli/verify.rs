//! `verify`: every file the ledger holds, rehashed.

use std::io::Write;
use std::path::Path;

use super::{Outcome, load_config, open_existing, recover_archive_moves};

/// `keepsake verify [--year Y] [--root R] [--json]`.
pub(super) fn verify(
    config: Option<&Path>,
    year: Option<i32>,
    root: Option<&str>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let (config, _) = load_config(config)?;
    let ledger = open_existing(&config)?;
    recover_archive_moves(&config, &ledger)?;
    let root = root.and_then(crate::archive::Root::parse);
    let result = crate::archive::verify(&config, &ledger, year, root)?;
    if !(result.missing.is_empty() && result.damaged.is_empty()) {
        let years = year.map(|y| std::collections::BTreeSet::from([y]));
        crate::archive::void_changed(
            &config,
            &ledger,
            years.as_ref(),
            "a library or archive file does not verify",
        );
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&result)?)?;
    } else {
        crate::report::print_library_verify(&mut out, &result)?;
    }
    Ok(Outcome::ok_if(
        result.missing.is_empty()
            && result.damaged.is_empty()
            && result.unexpected.is_empty()
            && result.errors.is_empty(),
    ))
}
