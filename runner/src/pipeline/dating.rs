//! Dating files that are already somewhere (not in an inbox) with the real
//! stages, as an ingest would decide them, nothing planned or applied: for
//! `ledger rebuild`, which records the library's files again.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::discover;
use crate::host::Services;
use crate::ledger::{JobRecord, JobState, Ledger};

use super::services::IngestServices;
use super::{BATCH_FILES, PipelineError, decide, load_stages, plan, read};

/// A capture time as the ledger records it: (ISO 8601, source, confidence).
pub type Dated = (String, String, String);

/// The capture time `pipeline`'s stages give each file, as an ingest would
/// (sidecars beside it count), the jobs recorded under `inbox`. `files`:
/// (job id, path, sidecar names beside it). None for a file the stages
/// could not date. Only the stages `pipeline` names are loaded.
pub fn capture_times(
    config: &Config,
    ledger: &Arc<Ledger>,
    pipeline: &[String],
    inbox: &str,
    files: &[(u64, PathBuf, Vec<String>)],
) -> Result<Vec<Option<Dated>>, PipelineError> {
    let mut only = config.clone();
    only.stages.retain(|name, _| pipeline.contains(name));
    let (runtime, stages) = load_stages(&only)?;
    let services: Arc<dyn Services> = Arc::new(IngestServices {
        ledger: Arc::clone(ledger),
        reserved: Mutex::new(HashMap::new()),
        reserved_paths: Mutex::new(HashSet::new()),
        stills: Mutex::new(Default::default()),
        kv_meter: Default::default(),
        kei: Default::default(),
    });
    let mut out = Vec::with_capacity(files.len());
    for chunk in files.chunks(BATCH_FILES) {
        let jobs: Vec<JobRecord> = chunk
            .iter()
            .map(|(id, path, companions)| {
                let meta = std::fs::symlink_metadata(path).ok();
                JobRecord {
                    id: *id,
                    inbox: inbox.to_string(),
                    rel_path: path
                        .file_name()
                        .map(|n| n.as_bytes().to_vec())
                        .unwrap_or_default(),
                    source_path: path.clone(),
                    size: meta.as_ref().map_or(0, |m| m.len()),
                    mtime_ns: meta.as_ref().map_or(0, discover::mtime_ns),
                    inode: meta.as_ref().map_or(0, std::os::unix::fs::MetadataExt::ino),
                    companions: companions.clone(),
                    state: JobState::Pending,
                    attempts: 0,
                    last_error: None,
                    reason: None,
                    blake3: None,
                    sha1: None,
                    media_kind: None,
                    capture_time: None,
                    capture_source: None,
                    dest_path: None,
                    duplicate_of: None,
                    updated_at: 0,
                    facts: "{}".into(),
                    wake_at: None,
                    from_quarantine: false,
                    companions_in: None,
                }
            })
            .collect();
        let reads = read::read_all(&jobs, None);
        let decided =
            crate::par::map_owned(jobs.iter().zip(reads).collect::<Vec<_>>(), |(job, read)| {
                decide::decide(&runtime, &stages, pipeline, job, read, &services)
            });
        out.extend(decided.into_iter().map(|d| {
            d.capture.map(|c| {
                (
                    decide::iso(&c),
                    c.source.clone(),
                    plan::confidence_text(c.confidence).to_string(),
                )
            })
        }));
    }
    Ok(out)
}
