//! What the caller hears of an ingest: the core knows no library job
//! (the rolling archive, offsite, Immich) and no terminal; whoever opens
//! the pipeline says what they make of its changes and its progress.

use std::collections::BTreeSet;

use crate::ledger::JobRecord;

/// The verdicts other jobs made from the library (the rolling archive's
/// safe-to-delete plans): an ingest that changes what they read says so.
/// The caller keeps them; the core only says when they stand no more.
pub trait Verdicts: Send + Sync {
    /// Something a verdict reads changed (counted before any is voided).
    fn changed(&self);
    /// Whether any verdict stands at all (none: no job needs reading).
    fn any(&self) -> bool;
    /// The years a job is of, as the verdicts count them; None when that
    /// cannot be said (a photo without a date).
    fn years_of_job(&self, job: &JobRecord) -> Option<BTreeSet<i32>>;
    /// The verdicts of `years` (of every year, for None) stand no more;
    /// whether every one of them is gone.
    fn void(&self, years: Option<&BTreeSet<i32>>, why: &str) -> bool;
    /// The verdicts of these jobs' changes are voided (`ledger::unvoided`).
    fn settled(&self, jobs: &[u64]);
}

/// No verdicts are kept (a pipeline opened without the library jobs).
pub struct NoVerdicts;

impl Verdicts for NoVerdicts {
    fn changed(&self) {}
    fn any(&self) -> bool {
        false
    }
    fn years_of_job(&self, _job: &JobRecord) -> Option<BTreeSet<i32>> {
        None
    }
    fn void(&self, _years: Option<&BTreeSet<i32>>, _why: &str) -> bool {
        true
    }
    fn settled(&self, _jobs: &[u64]) {}
}

/// How far [`super::Pipeline::process`] is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Discovery is done: this many jobs are to be taken.
    Started { jobs: u64 },
    /// This many more jobs were decided.
    Decided(u64),
    /// Every job is taken.
    Finished,
}

/// Called with each step of [`Progress`].
pub type OnProgress = Box<dyn Fn(Progress) + Send + Sync>;
