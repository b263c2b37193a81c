//! The library jobs around the ingest core, wired as the commands and the
//! service open it: the rolling archive hears of every change an ingest
//! makes (its verdicts stand no more), and the archive moves an unclean
//! stop interrupted are finished once the core's own journal is replayed.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::Config;
use crate::ledger::{JobRecord, Ledger};
use crate::pipeline::{Pipeline, PipelineError, Verdicts};

/// The rolling archive's verdicts (its dated plans in the state folder).
pub(crate) struct ArchiveVerdicts {
    config: Config,
    /// Where changes are counted, for plans made in any process.
    ledger: Arc<Ledger>,
}

impl ArchiveVerdicts {
    pub(crate) fn new(config: Config, ledger: Arc<Ledger>) -> ArchiveVerdicts {
        ArchiveVerdicts { config, ledger }
    }
}

impl Verdicts for ArchiveVerdicts {
    fn changed(&self) {
        crate::archive::changed(&self.config, &self.ledger);
    }

    fn any(&self) -> bool {
        let dir = self.config.state_dir.join("archive");
        std::fs::read_dir(&dir).is_ok_and(|mut listing| listing.next().is_some())
    }

    fn years_of_job(&self, job: &JobRecord) -> Option<BTreeSet<i32>> {
        crate::archive::verdict_years(&self.ledger, job)
    }

    fn void(&self, years: Option<&BTreeSet<i32>>, why: &str) -> bool {
        crate::archive::void_fully(&self.config, years, why)
    }

    fn settled(&self, jobs: &[u64]) {
        crate::archive::settled(&self.ledger, jobs);
    }
}

/// Open the pipeline (lock, ledger, the journal's replay, stages), then
/// finish or roll back the archive moves an unclean stop interrupted, and
/// let the archive's verdicts hear of what it changes.
pub fn open_pipeline(config: Config) -> Result<Pipeline, PipelineError> {
    let mut pipeline = Pipeline::open(config)?;
    let verdicts = ArchiveVerdicts::new(pipeline.config().clone(), pipeline.ledger_arc());
    let moves = crate::archive::recover(pipeline.config(), pipeline.ledger())?;
    // Changes an unclean stop left before their verdicts were voided (the
    // replayed journals' among them) void their years' verdicts now.
    crate::archive::void_pending(
        pipeline.config(),
        pipeline.ledger(),
        "changes an unclean stop left unvoided",
    )?;
    if moves > 0 {
        tracing::info!(
            moves,
            "finished the archive moves an unclean stop interrupted"
        );
    }
    pipeline.set_verdicts(Arc::new(verdicts));
    Ok(pipeline)
}
