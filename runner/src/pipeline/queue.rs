//! What `keepsake run` drives: register the files the watcher found stable,
//! tell a rescan which files are new, and run whatever is pending.

use crate::discover::Candidate;
use crate::ledger;

use super::{IngestReport, Pipeline, PipelineError, relative_to};

impl Pipeline {
    /// Record jobs for stable files of a configured inbox (a file the ledger
    /// has seen unchanged is skipped, as in a walk).
    pub fn register_files(
        &self,
        inbox: &str,
        files: Vec<Candidate>,
        report: &mut IngestReport,
    ) -> Result<(), PipelineError> {
        let Some((_, plan, _)) = self
            .inbox_plans(&[])
            .into_iter()
            .find(|(name, _, _)| name == inbox)
        else {
            return Ok(());
        };
        self.register(inbox, &plan, files, report)
    }

    /// Of the files a rescan found, those the ledger has not seen as they
    /// are now: only these wait for the stability window. The others are
    /// handed to [`Pipeline::register_files`] at once, which skips them
    /// (and, in move mode, removes what a crash left behind).
    pub fn split_unseen(
        &self,
        inbox: &str,
        files: Vec<Candidate>,
    ) -> Result<(Vec<Candidate>, Vec<Candidate>), PipelineError> {
        let Some((_, plan, _)) = self
            .inbox_plans(&[])
            .into_iter()
            .find(|(name, _, _)| name == inbox)
        else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut unseen = Vec::new();
        let mut seen = Vec::new();
        // In chunks: a rescan of many files must not hold the ledger from
        // the jobs running beside it.
        let mut files = files.into_iter().peekable();
        while files.peek().is_some() {
            let chunk: Vec<Candidate> = files.by_ref().take(1000).collect();
            self.split_chunk(inbox, &plan, chunk, &mut unseen, &mut seen)?;
        }
        Ok((unseen, seen))
    }

    fn split_chunk(
        &self,
        inbox: &str,
        plan: &super::InboxPlan,
        files: Vec<Candidate>,
        unseen: &mut Vec<Candidate>,
        seen: &mut Vec<Candidate>,
    ) -> Result<(), PipelineError> {
        self.ledger.read(|conn| {
            for file in files {
                let rel_path = relative_to(&plan.root, &file.path).unwrap_or(file.rel_path.clone());
                let current = ledger::Fingerprint {
                    size: file.size,
                    mtime_ns: file.mtime_ns,
                    inode: file.inode,
                };
                if ledger::fingerprint(conn, inbox, &rel_path)? == Some(current) {
                    seen.push(file);
                } else {
                    unseen.push(file);
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Run every pending job; stops between batches once a stop is requested.
    pub fn run_pending(&self) -> Result<IngestReport, PipelineError> {
        let started = std::time::Instant::now();
        let inboxes = self
            .inbox_plans(&[])
            .into_iter()
            .map(|(name, plan, _)| (name, plan))
            .collect();
        let mut report = IngestReport::default();
        self.process_pending(&inboxes, &mut report)?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    pub fn config(&self) -> &crate::config::Config {
        &self.config
    }
}
