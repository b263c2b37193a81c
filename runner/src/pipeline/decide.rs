//! Reading a job's file, running its stages, and turning their effects into
//! a plan the effects module can apply.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::discover::companion_dest_name;
use crate::effects::{AssetInfo, FileWrite, Finish, JobPlan};
use crate::hashing::{Hashes, blake3_file, hash_reader};
use crate::host::{
    CallFiles, CaptureTime, Confidence, Datetime, Effect, Fact, Job, LoadedStage, Placement,
    Services, StageCallError, StageError, StageRuntime, WitMediaKind,
};
use crate::ledger::{self, Action, JobRecord, Ledger};
use crate::media::{self, MediaKind};

use super::paths::{numbered, validate_relative};
use super::{IngestServices, display_rel};

/// A file read once: its hashes, what it is, and an open handle the stages
/// read through.
pub struct ReadFile {
    pub hashes: Hashes,
    pub kind: MediaKind,
    pub file: Arc<File>,
}

/// Why a file could not be read.
#[derive(Debug, Clone)]
pub enum ReadError {
    Vanished,
    Unreadable(String),
}

/// Hash every job's file, on as many threads as there are cores.
pub fn read_all(batch: &[JobRecord]) -> Vec<Result<ReadFile, ReadError>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(batch.len().max(1));
    let slots: Vec<Mutex<Option<Result<ReadFile, ReadError>>>> =
        batch.iter().map(|_| Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(job) = batch.get(i) else { break };
                    let result = read_one(job);
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(Err(ReadError::Unreadable("not read".into())))
        })
        .collect()
}

fn read_one(job: &JobRecord) -> Result<ReadFile, ReadError> {
    let path = &job.source_path;
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Vanished),
        Err(e) => {
            return Err(ReadError::Unreadable(format!(
                "cannot read {}: {e}; fix its permissions, then `keepsake retry {}`",
                path.display(),
                job.id
            )));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| ReadError::Unreadable(format!("cannot stat {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(ReadError::Unreadable(format!(
            "{} is no longer a regular file",
            path.display()
        )));
    }
    let hashes = hash_reader(&file, meta.len())
        .map_err(|e| ReadError::Unreadable(format!("cannot read {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = media::refine_tiff(media::sniff(&hashes.head), &name);
    Ok(ReadFile {
        hashes,
        kind,
        file: Arc::new(file),
    })
}

/// One stage call, as the ledger's `steps` table records it.
#[derive(Debug, Clone)]
pub struct StepCall {
    pub stage: String,
    pub effects_json: String,
    pub error: Option<String>,
    pub micros: u64,
    pub bytes_read: u64,
}

/// What the stages decided for a job.
#[derive(Debug, Clone)]
pub enum Decision {
    Place(String),
    Duplicate(u64),
    Quarantine(String),
    Skip(String),
    Fail(String),
    /// No stage placed it.
    Unplaced,
}

pub struct Decided {
    pub decision: Decision,
    pub calls: Vec<StepCall>,
    /// (blake3, sha1, media kind) when the file was read.
    pub hashes: Option<(String, String, String)>,
    pub size: u64,
    pub capture: Option<CaptureTime>,
    pub facts: Vec<Fact>,
}

fn wit_kind(kind: MediaKind) -> WitMediaKind {
    match kind {
        MediaKind::Jpeg => WitMediaKind::Jpeg,
        MediaKind::Heic => WitMediaKind::Heic,
        MediaKind::Avif => WitMediaKind::Avif,
        MediaKind::Png => WitMediaKind::Png,
        MediaKind::Gif => WitMediaKind::Gif,
        MediaKind::Webp => WitMediaKind::Webp,
        MediaKind::Tiff => WitMediaKind::Tiff,
        MediaKind::Raw => WitMediaKind::Raw,
        MediaKind::Video => WitMediaKind::Video,
        MediaKind::Unknown => WitMediaKind::Unknown,
    }
}

/// The file's modification time in the host's local time zone.
fn local_mtime(mtime_ns: i64) -> (Datetime, i16) {
    let zoned = jiff::Timestamp::from_nanosecond(mtime_ns as i128)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(jiff::tz::TimeZone::system());
    let dt = zoned.datetime();
    (
        Datetime {
            year: dt.year().max(0) as u16,
            month: dt.month() as u8,
            day: dt.day() as u8,
            hour: dt.hour() as u8,
            minute: dt.minute() as u8,
            second: dt.second() as u8,
            nanosecond: dt.subsec_nanosecond().max(0) as u32,
        },
        (zoned.offset().seconds() / 60) as i16,
    )
}

/// ISO 8601 text of a capture time; the offset only when known.
pub fn iso(capture: &CaptureTime) -> String {
    let t = &capture.local;
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    if t.nanosecond > 0 {
        let frac = format!("{:09}", t.nanosecond);
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    if let Some(offset) = capture.offset_minutes {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.unsigned_abs();
        out.push_str(&format!("{sign}{:02}:{:02}", abs / 60, abs % 60));
    }
    out
}

fn valid_capture(capture: &CaptureTime) -> Result<(), String> {
    let t = &capture.local;
    jiff::civil::DateTime::new(
        t.year as i16,
        t.month as i8,
        t.day as i8,
        t.hour as i8,
        t.minute as i8,
        t.second as i8,
        t.nanosecond as i32,
    )
    .map_err(|e| format!("invalid capture time: {e}"))?;
    if let Some(offset) = capture.offset_minutes
        && offset.unsigned_abs() > 18 * 60
    {
        return Err(format!("invalid UTC offset of {offset} minutes"));
    }
    if capture.source.is_empty() || capture.source.len() > 128 {
        return Err("a capture time needs a source of 1 to 128 characters".into());
    }
    Ok(())
}

fn effects_json(effects: &[Effect]) -> String {
    let items: Vec<serde_json::Value> = effects
        .iter()
        .map(|effect| match effect {
            Effect::SetCaptureTime(c) => {
                serde_json::json!({"set-capture-time": iso(c), "source": c.source})
            }
            Effect::SetFact(f) => serde_json::json!({"set-fact": {"key": f.key, "value": f.value}}),
            Effect::Place(p) => serde_json::json!({"place": {"root": p.root, "path": p.path}}),
            Effect::DuplicateOf(id) => serde_json::json!({"duplicate-of": id}),
            Effect::Quarantine(reason) => serde_json::json!({"quarantine": reason}),
            Effect::Skip(reason) => serde_json::json!({"skip": reason}),
            Effect::Defer(d) => {
                serde_json::json!({"defer": {"seconds": d.seconds, "reason": d.reason}})
            }
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Run the inbox's pipeline over one job.
pub fn decide(
    runtime: &StageRuntime,
    stages: &std::collections::BTreeMap<String, LoadedStage>,
    pipeline: &[String],
    job: &JobRecord,
    read: Result<ReadFile, ReadError>,
    services: &Arc<dyn Services>,
) -> Decided {
    let mut decided = Decided {
        decision: Decision::Unplaced,
        calls: Vec::new(),
        hashes: None,
        size: job.size,
        capture: None,
        facts: Vec::new(),
    };
    let read = match read {
        Ok(read) => read,
        Err(ReadError::Vanished) => {
            decided.decision = Decision::Skip(
                "the file disappeared from the inbox before keepsake read it; nothing was taken"
                    .into(),
            );
            return decided;
        }
        Err(ReadError::Unreadable(message)) => {
            decided.decision = Decision::Fail(message);
            return decided;
        }
    };
    decided.size = read.hashes.size;
    decided.hashes = Some((
        read.hashes.blake3.clone(),
        read.hashes.sha1.clone(),
        read.kind.as_str().to_string(),
    ));
    let (mtime, mtime_offset) = local_mtime(job.mtime_ns);
    let source_dir = job
        .source_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut wit_job = Job {
        id: job.id,
        inbox: job.inbox.clone(),
        relative_path: display_rel(&job.rel_path),
        size: read.hashes.size,
        mtime,
        mtime_offset_minutes: mtime_offset,
        blake3: read.hashes.blake3.clone(),
        sha1: read.hashes.sha1.clone(),
        media_kind: wit_kind(read.kind),
        companions: job.companions.clone(),
        capture_time: None,
        placement: None,
        facts: Vec::new(),
    };
    for name in pipeline {
        let Some(stage) = stages.get(name) else {
            decided.decision = Decision::Fail(format!("stage `{name}` is not loaded"));
            return decided;
        };
        let files = CallFiles {
            file: Some(Arc::clone(&read.file)),
            companions: job
                .companions
                .iter()
                .map(|c| (c.clone(), source_dir.join(c)))
                .collect(),
        };
        let (result, stats) = runtime.call(stage, &wit_job, files, Arc::clone(services));
        let mut call = StepCall {
            stage: name.clone(),
            effects_json: "[]".into(),
            error: None,
            micros: stats.micros,
            bytes_read: stats.bytes_read,
        };
        let effects = match result {
            Ok(effects) => effects,
            Err(StageCallError::Stage {
                error: StageError::InvalidInput(reason),
                ..
            }) => {
                call.error = Some(format!("invalid input: {reason}"));
                decided.calls.push(call);
                decided.decision = Decision::Quarantine(format!("stage `{name}`: {reason}"));
                return decided;
            }
            Err(e) => {
                call.error = Some(e.to_string());
                decided.calls.push(call);
                decided.decision = Decision::Fail(e.to_string());
                return decided;
            }
        };
        call.effects_json = effects_json(&effects);
        decided.calls.push(call);
        for effect in effects {
            let rejected =
                |what: String| Decision::Fail(format!("stage `{name}`: rejected effect: {what}"));
            match effect {
                Effect::SetCaptureTime(capture) => {
                    if let Err(e) = valid_capture(&capture) {
                        decided.decision = rejected(e);
                        return decided;
                    }
                    wit_job.capture_time = Some(capture.clone());
                    decided.capture = Some(capture);
                }
                Effect::SetFact(fact) => {
                    if fact.key.is_empty() || fact.key.len() > 128 || fact.value.len() > 4096 {
                        decided.decision = rejected(
                            "a fact needs a key of 1-128 bytes and a value of at most 4096".into(),
                        );
                        return decided;
                    }
                    wit_job.facts.push(fact.clone());
                    decided.facts.push(fact);
                }
                Effect::Place(Placement { root, path }) => {
                    if root != "library" {
                        decided.decision = rejected(format!(
                            "unknown root {root:?} (stages can place into \"library\")"
                        ));
                        return decided;
                    }
                    if let Err(e) = validate_relative(&path) {
                        decided.decision = rejected(format!("place: {e}"));
                        return decided;
                    }
                    wit_job.placement = Some(Placement {
                        root,
                        path: path.clone(),
                    });
                    decided.decision = Decision::Place(path);
                }
                Effect::DuplicateOf(original) => {
                    decided.decision = Decision::Duplicate(original);
                    return decided;
                }
                Effect::Quarantine(reason) => {
                    decided.decision = Decision::Quarantine(format!("stage `{name}`: {reason}"));
                    return decided;
                }
                Effect::Skip(reason) => {
                    decided.decision = Decision::Skip(format!("stage `{name}`: {reason}"));
                    return decided;
                }
                Effect::Defer(defer) => {
                    decided.decision = Decision::Fail(format!(
                        "stage `{name}` asked to try again in {} s: {}; `keepsake retry {}` does",
                        defer.seconds, defer.reason, job.id
                    ));
                    return decided;
                }
            }
        }
    }
    decided
}

fn confidence_text(confidence: Confidence) -> &'static str {
    match confidence {
        Confidence::Low => "low",
        Confidence::Medium => "medium",
        Confidence::High => "high",
    }
}

/// Turn a decision into files to write, resolving name collisions: a name
/// holding the same bytes is adopted, another file's name gets `_1`, `_2`...
pub(super) fn plan(
    config: &Config,
    ledger: &Ledger,
    job: &JobRecord,
    decided: Decided,
    remove_sources: bool,
    services: &IngestServices,
) -> JobPlan {
    let facts: serde_json::Map<String, serde_json::Value> = decided
        .facts
        .iter()
        .map(|f| (f.key.clone(), serde_json::Value::String(f.value.clone())))
        .collect();
    let mut finish = Finish {
        state: String::new(),
        reason: None,
        capture_time: decided.capture.as_ref().map(iso),
        capture_source: decided.capture.as_ref().map(|c| c.source.clone()),
        capture_confidence: decided
            .capture
            .as_ref()
            .map(|c| confidence_text(c.confidence).to_string()),
        dest_path: None,
        duplicate_of: None,
        facts: serde_json::Value::Object(facts).to_string(),
        asset: None,
    };
    let mut plan = JobPlan {
        job_id: job.id,
        finish: finish.clone(),
        writes: Vec::new(),
        remove_sources: Vec::new(),
        depends_on: None,
    };
    let Some((blake3, sha1, kind)) = decided.hashes.clone() else {
        // Never read: skipped or failed.
        match decided.decision {
            Decision::Skip(reason) => {
                finish.state = "skipped".into();
                finish.reason = Some(reason);
            }
            Decision::Fail(reason) => {
                finish.state = "failed".into();
                finish.reason = Some(reason);
            }
            _ => {
                finish.state = "failed".into();
                finish.reason = Some("the file was not read".into());
            }
        }
        plan.finish = finish;
        return plan;
    };
    let mut decision = decided.decision;
    // The host keeps the library free of duplicates whatever the pipeline:
    // bytes already placed (or being placed in this batch) are a duplicate.
    if let Decision::Place(_) = decision {
        if let Ok(Some(asset)) = ledger.read(|c| ledger::asset_by_hash(c, &blake3)) {
            decision = Decision::Duplicate(asset.job_id);
        } else if let Some(other) = services.reserve(&blake3, job.id) {
            decision = Decision::Duplicate(other);
        }
    }
    match decision {
        Decision::Fail(reason) => {
            finish.state = "failed".into();
            finish.reason = Some(reason);
        }
        Decision::Skip(reason) => {
            finish.state = "skipped".into();
            finish.reason = Some(reason);
        }
        Decision::Unplaced => {
            finish.state = "skipped".into();
            finish.reason = Some("no stage in this inbox's pipeline placed the file".into());
        }
        Decision::Duplicate(original) => {
            finish.state = "duplicate".into();
            finish.duplicate_of = Some(original);
            // The original is not committed yet: this job ends only once it is.
            plan.depends_on = services.in_flight(&blake3).filter(|job| *job == original);
            move_sources(&mut plan, job, remove_sources);
        }
        Decision::Quarantine(reason) => {
            let name = job
                .source_path
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("file"));
            let dest = config.quarantine_dir().join(job.id.to_string()).join(name);
            finish.state = "quarantined".into();
            finish.reason = Some(reason);
            finish.dest_path = Some(dest.display().to_string());
            plan.writes.push(FileWrite {
                action: Action::Quarantine,
                source: job.source_path.clone(),
                dest,
                blake3,
                size: decided.size,
                adopt: false,
            });
            move_sources(&mut plan, job, remove_sources);
        }
        Decision::Place(path) => {
            let (chosen, adopted) = choose_name(config, ledger, services, &path, &blake3);
            finish.state = "done".into();
            finish.dest_path = Some(chosen.clone());
            finish.asset = Some(AssetInfo {
                blake3: blake3.clone(),
                sha1,
                size: decided.size,
                media_kind: kind,
                capture_time: finish.capture_time.clone(),
                capture_source: finish.capture_source.clone(),
            });
            let dest = config.library_root.join(&chosen);
            plan.writes.push(FileWrite {
                action: Action::Place,
                source: job.source_path.clone(),
                dest: dest.clone(),
                blake3,
                size: decided.size,
                adopt: adopted,
            });
            plan.writes.extend(companion_writes(job, &dest, services));
            move_sources(&mut plan, job, remove_sources);
        }
    }
    plan.finish = finish;
    plan
}

/// In move mode, what leaves the inbox once the job is committed: its file
/// and every companion that was copied with it.
fn move_sources(plan: &mut JobPlan, job: &JobRecord, move_mode: bool) {
    if !move_mode {
        return;
    }
    // Companions first: while the job's own file is still in the inbox, a
    // rescan finds the job and finishes what a crash interrupted.
    for write in &plan.writes {
        if write.action == Action::Companion {
            plan.remove_sources.push(write.source.clone());
        }
    }
    plan.remove_sources.push(job.source_path.clone());
}

/// A free library name for `path`, or the name already holding these bytes.
fn choose_name(
    config: &Config,
    ledger: &Ledger,
    services: &IngestServices,
    path: &str,
    blake3: &str,
) -> (String, bool) {
    let mut reserved = services
        .reserved_paths
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for n in 0u32.. {
        let candidate = if n == 0 {
            path.to_string()
        } else {
            numbered(path, n)
        };
        let full = config.library_root.join(&candidate);
        if reserved.contains(&full) {
            continue;
        }
        if full.symlink_metadata().is_ok() {
            if full.is_file() && blake3_file(&full).is_ok_and(|h| h == blake3) {
                reserved.insert(full);
                return (candidate, true);
            }
            continue;
        }
        if ledger
            .read(|c| ledger::asset_by_path(c, &candidate))
            .ok()
            .flatten()
            .is_some()
        {
            continue;
        }
        reserved.insert(full);
        return (candidate, false);
    }
    unreachable!("u32 names run out only after 4 billion collisions")
}

/// Sidecars follow their file: named after where it went, collision-safe.
fn companion_writes(job: &JobRecord, dest: &Path, services: &IngestServices) -> Vec<FileWrite> {
    let source_dir = job
        .source_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let media_name = job
        .source_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let placed_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest_dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut reserved = services
        .reserved_paths
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut writes = Vec::new();
    let mut seen = HashSet::new();
    for companion in &job.companions {
        let source = source_dir.join(companion);
        let Ok(meta) = std::fs::metadata(&source) else {
            tracing::warn!(
                job = job.id,
                "companion {} disappeared; not copied",
                source.display()
            );
            continue;
        };
        let Ok(hash) = blake3_file(&source) else {
            tracing::warn!(
                job = job.id,
                "companion {} is unreadable; not copied",
                source.display()
            );
            continue;
        };
        let name = companion_dest_name(companion, &media_name, &placed_name);
        for n in 0u32.. {
            let candidate = dest_dir.join(if n == 0 {
                name.clone()
            } else {
                numbered(&name, n)
            });
            if reserved.contains(&candidate) || !seen.insert(candidate.clone()) {
                continue;
            }
            let adopt = match candidate.symlink_metadata() {
                // Already there (an earlier attempt got this far): adopt it.
                Ok(_) if blake3_file(&candidate).is_ok_and(|h| h == hash) => true,
                Ok(_) => continue,
                Err(_) => false,
            };
            reserved.insert(candidate.clone());
            writes.push(FileWrite {
                action: Action::Companion,
                source: source.clone(),
                dest: candidate,
                blake3: hash.clone(),
                size: meta.len(),
                adopt,
            });
            break;
        }
    }
    writes
}
