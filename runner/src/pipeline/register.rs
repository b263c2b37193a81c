//! Recording jobs for new or changed inbox files, by fingerprint; and, in
//! move mode, removing inbox files a crash left behind after their commit.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::discover::Candidate;
use crate::effects;
use crate::ledger::{self, JobState, NewJob};

use super::{InboxMode, InboxPlan, IngestReport, Pipeline, PipelineError, relative_to};

impl Pipeline {
    /// Create jobs for files the ledger has not seen (or that changed).
    pub(super) fn register(
        &self,
        inbox: &str,
        plan: &InboxPlan,
        files: Vec<Candidate>,
        report: &mut IngestReport,
    ) -> Result<(), PipelineError> {
        report.discovered += files.len();
        let mut new_jobs = Vec::new();
        let mut leftovers = Vec::new();
        self.ledger.read(|conn| {
            for file in files {
                let rel_path = relative_to(&plan.root, &file.path).unwrap_or(file.rel_path.clone());
                let seen = ledger::fingerprint(conn, inbox, &rel_path)?;
                let current = ledger::Fingerprint {
                    size: file.size,
                    mtime_ns: file.mtime_ns,
                    inode: file.inode,
                };
                if seen == Some(current) {
                    report.unchanged += 1;
                    if plan.mode == InboxMode::Move {
                        leftovers.push((rel_path, file.path));
                    }
                    continue;
                }
                let settled = file.orphan_sidecar.then(|| {
                    (
                        JobState::Skipped,
                        "a sidecar (.xmp/.json/.aae) with no photo or video of the same name beside it; left in the inbox"
                            .to_string(),
                    )
                });
                new_jobs.push(NewJob {
                    inbox: inbox.to_string(),
                    rel_path,
                    source_path: file.path,
                    size: file.size,
                    mtime_ns: file.mtime_ns,
                    inode: file.inode,
                    companions: file.companions,
                    settled,
                });
            }
            Ok(())
        })?;
        for chunk in new_jobs.chunks(2000) {
            self.ledger.write(|tx| {
                for job in chunk {
                    ledger::insert_job(tx, job)?;
                }
                Ok(())
            })?;
        }
        report.skipped += new_jobs.iter().filter(|j| j.settled.is_some()).count();
        // Move mode: a file still in the inbox whose job finished (a crash
        // after the commit, before the removal) goes now, with the
        // companions the journal says were copied.
        for (rel_path, path) in leftovers {
            let safe = self.ledger.read(|conn| -> rusqlite::Result<Option<Vec<PathBuf>>> {
                let state: String = conn.query_row(
                    "SELECT j.state FROM sources s JOIN jobs j ON j.id = s.job_id WHERE s.inbox = ?1 AND s.rel_path = ?2",
                    rusqlite::params![inbox, rel_path],
                    |r| r.get(0),
                )?;
                if !matches!(state.as_str(), "done" | "duplicate" | "quarantined") {
                    return Ok(None);
                }
                let mut stmt = conn.prepare(
                    "SELECT j.source FROM journal j JOIN sources s ON s.job_id = j.job_id \
                     WHERE s.inbox = ?1 AND s.rel_path = ?2 AND j.state = 'done' AND j.action = 'companion'",
                )?;
                let companions = stmt
                    .query_map(rusqlite::params![inbox, rel_path], |r| r.get::<_, Vec<u8>>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(Some(companions.into_iter().map(|b| PathBuf::from(OsStr::from_bytes(&b))).collect()))
            });
            let Ok(Some(companions)) = safe else { continue };
            for source in std::iter::once(path).chain(companions) {
                if source.symlink_metadata().is_err() {
                    continue;
                }
                match effects::fsops::remove_source(&source) {
                    Ok(()) => report.removed_from_inbox += 1,
                    Err(e) => report.errors.push(format!(
                        "cannot remove {} from the inbox: {e}",
                        source.display()
                    )),
                }
            }
        }
        Ok(())
    }
}
