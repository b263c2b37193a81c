//! `ingest`: take every new file through the pipeline once.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{Outcome, load_config};
use crate::immich::placed::{self, PlacedPhase, PlacedReport};
use crate::offsite::PushReport;
use crate::pipeline::{IngestReport, Progress};

/// What `keepsake ingest` reports: the ingest, then what ran after it.
/// Its JSON is the ingest report's keys, then `offsite` and `after_placed`.
#[derive(Debug, serde::Serialize)]
struct IngestSummary {
    #[serde(flatten)]
    ingest: IngestReport,
    /// What the offsite push after the ingest did, when targets are set.
    offsite: Option<PushReport>,
    /// What the placed-phase stages (Immich, ...) did, when a pipeline has one.
    after_placed: Option<PlacedReport>,
}

/// `keepsake ingest [PATH]... [--json]`.
pub(super) fn ingest(
    config: Option<&Path>,
    paths: &[PathBuf],
    json: bool,
) -> anyhow::Result<Outcome> {
    let (config, is_default) = load_config(config)?;
    if is_default && paths.is_empty() {
        // The built-in default makes its own folders on a fresh machine.
        for inbox in &config.inboxes {
            std::fs::create_dir_all(&inbox.path)
                .with_context(|| format!("cannot create {}", inbox.path.display()))?;
        }
    }
    for path in paths {
        if path.symlink_metadata().is_err() {
            bail!("{} does not exist", path.display());
        }
    }
    let mut pipeline = crate::library_jobs::open_pipeline(config.clone())?;
    if std::io::stderr().is_terminal() {
        let bar = progress_bar();
        pipeline.on_progress(move |progress| match progress {
            Progress::Started { jobs } => bar.set_length(jobs),
            Progress::Decided(jobs) => bar.inc(jobs),
            Progress::Finished => bar.finish_and_clear(),
        });
    }
    let mut result = IngestSummary {
        ingest: pipeline.ingest(paths)?,
        offsite: None,
        after_placed: None,
    };
    if !placed::stages(&pipeline).is_empty() {
        result.after_placed = Some(PlacedPhase::default().run(&pipeline)?);
    }
    if !config.offsite.is_empty() {
        let ledger = pipeline.ledger_arc();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        result.offsite = Some(runtime.block_on(crate::offsite::push_due(ledger, &config, false)));
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&result)?)?;
    } else {
        crate::report::print_ingest(
            &mut out,
            &config,
            &result.ingest,
            result.offsite.as_ref(),
            result.after_placed.as_ref(),
        )?;
    }
    Ok(Outcome::ok_if(result.ingest.failed == 0))
}

/// Files, rate and time left, on a terminal.
fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
