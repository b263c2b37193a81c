//! Recording jobs for new or changed inbox files, by fingerprint; and, in
//! move mode, removing inbox files a crash left behind after their commit.

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
        // companions the journal says were copied: each once its copy is
        // verified again and durable.
        for (rel_path, path) in leftovers {
            let found = self
                .ledger
                .read(|conn| leftover(conn, inbox, &rel_path, &self.config));
            let Ok(Some(left)) = found else { continue };
            self.release_leftover(&path, &left, report);
        }
        Ok(())
    }

    fn release_leftover(&self, path: &std::path::Path, left: &Leftover, report: &mut IngestReport) {
        use effects::kept::{Kept, remove_source};
        let mut release = |source: &std::path::Path, hash: &str, kept: Result<Kept, String>| {
            if source.symlink_metadata().is_err() {
                return;
            }
            match kept.and_then(|kept| remove_source(source, hash, &kept)) {
                Ok(()) => report.removed_from_inbox += 1,
                Err(e) => report
                    .errors
                    .push(format!("{} stays in the inbox: {e}", source.display())),
            }
        };
        for (source, dest, copy_hash, keeps) in &left.companions {
            // A sidecar kept whole (copied, or merged without a loss), and
            // still the bytes it was then.
            if !keeps.is_empty()
                && crate::hashing::blake3_file(source).is_ok_and(|now| now == *keeps)
            {
                release(source, keeps, Kept::verify(dest, copy_hash, keeps));
            }
        }
        let Some((dest, copy_hash)) = &left.keeper else {
            return;
        };
        let kept = Kept::verify_for(dest, copy_hash, path, &left.blake3);
        if let (Err(e), Some(original)) = (&kept, left.duplicate_of) {
            // The copy that was to keep this duplicate is damaged or gone:
            // the job fails, so `status` shows it and no rescan hashes the
            // file again until it is retried.
            let why = format!(
                "a duplicate of job {original}, but that job's copy does not verify ({e}); {} stays in the inbox. Run `keepsake verify`, restore that copy (from this file or offsite), then `keepsake retry --failed`",
                path.display()
            );
            if let Err(e) = self
                .ledger
                .write(|tx| ledger::fail_job(tx, left.job_id, &why))
            {
                report.errors.push(e.to_string());
            }
            report.errors.push(why);
            return;
        }
        release(path, &left.blake3, kept);
    }
}

/// A done journal entry: (source, destination, the copy's BLAKE3, the
/// BLAKE3 of the source it keeps whole, "" for none).
type JournaledWrite = (PathBuf, PathBuf, String, String);

/// A finished job whose inbox file is still there, and where its bytes went.
struct Leftover {
    job_id: u64,
    /// The job this one is a duplicate of, for a duplicate.
    duplicate_of: Option<u64>,
    blake3: String,
    /// The copy that keeps the job's own file: (path, the copy's BLAKE3).
    keeper: Option<(PathBuf, String)>,
    /// Companions written for it.
    companions: Vec<JournaledWrite>,
}

fn leftover(
    conn: &rusqlite::Connection,
    inbox: &str,
    rel_path: &[u8],
    config: &crate::config::Config,
) -> rusqlite::Result<Option<Leftover>> {
    let row = ledger::ingest::job_of_source(conn, inbox, rel_path)?;
    let Some((job_id, state, Some(blake3), duplicate_of)) = row else {
        return Ok(None);
    };
    let asset_copy = |job: u64| -> rusqlite::Result<Option<(PathBuf, String)>> {
        Ok(ledger::asset_by_job(conn, job)?.and_then(|asset| {
            let root = match asset.root.as_str() {
                "archive" => config.archive.root.clone()?,
                _ => config.library_root.clone(),
            };
            (asset.blake3 == blake3).then(|| (root.join(&asset.library_path), asset.copy_blake3))
        }))
    };
    let done_writes = |action: &str| -> rusqlite::Result<Vec<JournaledWrite>> {
        ledger::ingest::done_writes_of_job(conn, job_id, action)
    };
    let keeper = match state.as_str() {
        "done" => asset_copy(job_id)?,
        "duplicate" => match duplicate_of {
            Some(original) => asset_copy(original)?,
            None => None,
        },
        "quarantined" => done_writes("quarantine")?
            .into_iter()
            .find(|(_, _, hash, _)| *hash == blake3)
            .map(|(_, dest, hash, _)| (dest, hash)),
        _ => return Ok(None),
    };
    Ok(Some(Leftover {
        job_id,
        duplicate_of: duplicate_of.filter(|_| state == "duplicate"),
        blake3,
        keeper,
        companions: done_writes("companion")?,
    }))
}
