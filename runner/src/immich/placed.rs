//! Stages of the `placed` phase (the built-in `immich`, family plugins that
//! notify someone): called for each file once it is in the library, from a
//! queue in the ledger (`placed_calls`), so an outage, a restart or a slow
//! server never loses or repeats one.
//!
//! A stage that says "later" (a `defer` effect or a temporary error) speaks
//! for its server, not for one file: every due call of that stage waits with
//! it, with a growing backoff, so an Immich that is down or a wrong API key
//! costs one request per retry instead of one per file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::host::{
    CallFiles, CaptureTime, Confidence, Datetime, Effect, Fact, Job, LoadedStage, Placement,
    Services, StageCallError, StageError, WitMediaKind,
};
use crate::ledger::{self, Ledger, LedgerError};
use crate::pipeline::{KvMeter, Pipeline, PipelineError, display_rel, local_mtime};

/// The longest a stage is held back after it said "later".
const MAX_BACKOFF_SECS: i64 = 6 * 3600;
/// Calls taken per pass; the rest wait for the next pass.
const PASS_LIMIT: usize = 100_000;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PlacedReport {
    pub done: u64,
    pub deferred: u64,
    pub failed: u64,
    /// HTTP requests the stages sent.
    pub requests: u64,
    /// Why a stage is held back, by stage.
    pub waiting: BTreeMap<String, String>,
}

/// The placed-phase stages some inbox's pipeline names.
pub fn stages(pipeline: &Pipeline) -> Vec<String> {
    let mut names: Vec<String> = pipeline
        .config()
        .inboxes
        .iter()
        .flat_map(|i| i.pipeline.iter())
        .filter(|name| pipeline.stage(name).is_some_and(|s| s.info.placed))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The placed phase of an open pipeline, as this process runs it: its
/// stages' backoff and how far the queue was filled.
#[derive(Default)]
pub struct PlacedPhase {
    /// Placed-phase stages' temporary failures in a row, for their backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Assets up to this id have their placed-phase calls queued.
    queued_to: AtomicI64,
}

impl PlacedPhase {
    /// Queue a call for every library file whose inbox pipeline names a
    /// placed-phase stage and has none yet: new files, and the whole
    /// library when such a stage is added to a pipeline (the first time in
    /// a process; then only assets recorded since, by their ids).
    pub fn enqueue(&self, pipeline: &Pipeline) -> Result<u64, LedgerError> {
        let now = ledger::now();
        let from = self.queued_to.load(Ordering::Relaxed);
        let to: i64 = pipeline.ledger().read(ledger::max_asset_id)?;
        if to <= from {
            return Ok(0);
        }
        let mut queued = 0;
        for inbox in &pipeline.config().inboxes {
            for name in &inbox.pipeline {
                if !pipeline.stage(name).is_some_and(|s| s.info.placed) {
                    continue;
                }
                queued += pipeline
                    .ledger()
                    .write(|tx| ledger::queue_placed_calls(tx, &inbox.name, name, now, from, to))?
                    as u64;
            }
        }
        self.queued_to.store(to, Ordering::Relaxed);
        Ok(queued)
    }

    /// Queue what is new, then run every due call, stage by stage. Runs on
    /// its own thread: wasi:http drives its requests on a runtime of its own.
    pub fn run(&self, pipeline: &Pipeline) -> Result<PlacedReport, PipelineError> {
        self.run_for(pipeline, None)
    }

    /// [`Self::run`], stopping after `budget` (the service's cycles:
    /// a first upload of a whole library must not keep new files waiting;
    /// the rest goes in the next cycles).
    pub fn run_for(
        &self,
        pipeline: &Pipeline,
        budget: Option<Duration>,
    ) -> Result<PlacedReport, PipelineError> {
        if stages(pipeline).is_empty() {
            return Ok(PlacedReport::default());
        }
        self.enqueue(pipeline)?;
        let until = budget.map(|b| std::time::Instant::now() + b);
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.run_here(pipeline, until))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The stage's temporary failures in a row (after counting this one,
    /// or reset by a success).
    fn streak(&self, stage: &str, failed: bool) -> u32 {
        let mut streaks = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let streak = streaks.entry(stage.to_string()).or_insert(0);
        *streak = if failed { *streak + 1 } else { 0 };
        *streak
    }

    fn run_here(
        &self,
        pipeline: &Pipeline,
        until: Option<std::time::Instant>,
    ) -> Result<PlacedReport, PipelineError> {
        let services = Arc::new(LedgerServices::new(&pipeline.ledger_arc()));
        let shared: Arc<dyn Services> = Arc::clone(&services) as Arc<dyn Services>;
        let mut pass = Pass {
            pipeline,
            services,
            shared,
            until,
            batch: Vec::new(),
            report: PlacedReport::default(),
        };
        for name in stages(pipeline) {
            let Some(stage) = pipeline.stage(&name) else {
                continue;
            };
            self.run_stage(&mut pass, &name, stage)?;
        }
        pass.flush()?;
        Ok(pass.report)
    }

    /// One stage's due calls in this pass, then what it batched across them.
    fn run_stage(
        &self,
        pass: &mut Pass<'_>,
        name: &str,
        stage: &LoadedStage,
    ) -> Result<(), PipelineError> {
        let pipeline = pass.pipeline;
        let ledger = pipeline.ledger();
        let now = ledger::now();
        let due = ledger.read(|c| ledger::due_placed_calls(c, name, now, PASS_LIMIT))?;
        let mut ran = false;
        for call in due {
            if crate::shutdown::requested()
                || pass.until.is_some_and(|t| std::time::Instant::now() >= t)
            {
                break;
            }
            if pass.batch.len() >= COMMIT_EVERY {
                pass.flush()?;
            }
            match self.call_one(pass, name, stage, call)? {
                Called::Ran => ran = true,
                Called::Unreadable => {}
                Called::HeldBack => break,
            }
        }
        pass.flush()?;
        // `immich sync` and `ingest` (no budget) always send; the
        // service's passes when a call ran (its sweeps send too).
        if ran || pass.until.is_none() {
            pass.send_batched(name, stage)?;
        }
        Ok(())
    }

    /// One due call (its id, job and tries so far): what the stage answered,
    /// as an outcome in the batch.
    fn call_one(
        &self,
        pass: &mut Pass<'_>,
        name: &str,
        stage: &LoadedStage,
        (call_id, job_id, attempts): (i64, u64, u32),
    ) -> Result<Called, PipelineError> {
        let pipeline = pass.pipeline;
        let config = pipeline.config();
        let ledger = pipeline.ledger();
        let Some((job, files)) = ledger.read(|c| placed_job(c, config, job_id))? else {
            // Not readable now (an unmounted disk?), or gone: it
            // waits, and fails after as many tries as a job.
            let message = "the library file cannot be opened (is its disk mounted? `keepsake verify` lists missing files)".to_string();
            if attempts + 1 >= config.service.backoff.max_attempts {
                pass.batch.push(Outcome::failed(call_id, message, 0));
                pass.report.failed += 1;
            } else {
                pass.batch.push(Outcome::deferred(
                    call_id,
                    message,
                    ledger::now() + backoff(config, attempts),
                    Vec::new(),
                    0,
                ));
                pass.report.deferred += 1;
            }
            return Ok(Called::Unreadable);
        };
        let (result, stats) = pipeline
            .runtime()
            .call(stage, &job, files, Arc::clone(&pass.shared));
        pass.report.requests += stats.requests;
        match result {
            Ok(effects) => self.take_effects(pass, name, call_id, effects, stats.requests),
            Err(StageCallError::Stage {
                error: StageError::Transient(message),
                ..
            }) if attempts + 1 >= MAX_TRANSIENT_TRIES => {
                // Tried so often while others went through: this
                // file, not the server, is the problem.
                tracing::warn!(stage = name, job = job_id, "{message}");
                pass.batch.push(Outcome::failed(
                    call_id,
                    format!("{message} (after {MAX_TRANSIENT_TRIES} tries; `keepsake immich sync` tries again)"),
                    stats.requests,
                ));
                pass.report.failed += 1;
            }
            Err(StageCallError::Stage {
                error: StageError::Transient(message),
                ..
            }) => {
                // The server speaks for every file: this stage's due
                // calls all wait as long, and the pass moves on. The
                // wait grows with the stage's failures in a row; the
                // next try starts with another file (fewest tries
                // first), so one bad file cannot hold the rest.
                tracing::warn!(stage = name, job = job_id, "{message}");
                let streak = self.streak(name, true);
                let wait = backoff(config, streak - 1).clamp(1, MAX_BACKOFF_SECS);
                let wake = ledger::now() + wait;
                pass.batch.push(Outcome::deferred(
                    call_id,
                    message.clone(),
                    wake,
                    Vec::new(),
                    stats.requests,
                ));
                pass.flush()?;
                ledger.write(|tx| ledger::defer_placed_stage(tx, name, wake, ledger::now()))?;
                pass.report.deferred += 1;
                pass.report.waiting.insert(name.to_string(), message);
                return Ok(Called::HeldBack);
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(stage = name, job = job_id, "{message}");
                pass.batch
                    .push(Outcome::failed(call_id, message, stats.requests));
                pass.report.failed += 1;
            }
        }
        Ok(Called::Ran)
    }

    /// What a call's effects come to, in the batch: its facts, or a defer
    /// of this file, or a failure for an effect not allowed once placed.
    fn take_effects(
        &self,
        pass: &mut Pass<'_>,
        name: &str,
        call_id: i64,
        effects: Vec<Effect>,
        requests: u64,
    ) {
        let mut facts = Vec::new();
        let mut defer = None;
        let mut rejected = None;
        for effect in effects {
            match effect {
                Effect::SetFact(Fact { key, value }) => {
                    if key.len() > 200 || value.len() > 4096 {
                        rejected = Some("a fact longer than 200/4096 bytes".to_string());
                    } else {
                        facts.push((key, value));
                    }
                }
                Effect::Defer(d) => defer = Some(d),
                other => {
                    rejected = Some(format!(
                        "{} is not allowed once the file is placed",
                        effect_name(&other)
                    ));
                }
            }
        }
        if let Some(why) = rejected {
            pass.batch.push(Outcome::failed(
                call_id,
                format!("stage `{name}`: rejected effect: {why}"),
                requests,
            ));
            pass.report.failed += 1;
        } else if let Some(d) = defer {
            // A defer for one file (a Live Photo still
            // waiting for its video) holds back that file.
            pass.batch.push(Outcome {
                call_id,
                state: "deferred",
                attempt: false,
                error: Some(d.reason),
                wake_at: Some(ledger::now() + i64::from(d.seconds).clamp(1, MAX_BACKOFF_SECS)),
                facts,
                requests,
            });
            pass.report.deferred += 1;
        } else {
            self.streak(name, false);
            pass.batch.push(Outcome {
                call_id,
                state: "done",
                attempt: true,
                error: None,
                wake_at: None,
                facts,
                requests,
            });
            pass.report.done += 1;
        }
    }
}

/// One pass of the placed phase: what its calls share, the outcomes
/// waiting for their commit, and what the pass did so far.
struct Pass<'a> {
    pipeline: &'a Pipeline,
    services: Arc<LedgerServices>,
    shared: Arc<dyn Services>,
    /// The service's budget: no call starts after it.
    until: Option<std::time::Instant>,
    batch: Vec<Outcome>,
    report: PlacedReport,
}

impl Pass<'_> {
    /// Commit the batch's outcomes and the held key-value writes.
    fn flush(&mut self) -> Result<(), LedgerError> {
        commit(self.pipeline.ledger(), &self.services, &mut self.batch)
    }

    /// Send what the stage batched across its calls, then commit.
    fn send_batched(&mut self, name: &str, stage: &LoadedStage) -> Result<(), PipelineError> {
        // What the stage batched across calls (Immich's album
        // additions) goes now; kept in its KV until it went.
        let request = crate::host::SweepRequest {
            send_only: true,
            full: false,
        };
        let (result, stats) =
            self.pipeline
                .runtime()
                .sweep(stage, request, Arc::clone(&self.shared));
        self.report.requests += stats.requests;
        if let Err(e) = result {
            tracing::warn!(stage = name, "sending what the stage batched: {e}");
            self.report.waiting.insert(name.to_string(), e.to_string());
        }
        self.flush()?;
        Ok(())
    }
}

/// How a due call ended, for its stage's loop.
enum Called {
    /// The stage was called (whatever it answered).
    Ran,
    /// The library file could not be opened: no call was made.
    Unreadable,
    /// The server said "later": the stage's other calls wait too.
    HeldBack,
}

/// Write the batch's outcomes and the stages' key-value writes in one
/// commit. A crash before it repeats those calls, which is harmless: the
/// stages are idempotent (Immich answers "duplicate").
fn commit(
    ledger: &Ledger,
    services: &LedgerServices,
    batch: &mut Vec<Outcome>,
) -> Result<(), LedgerError> {
    let held = std::mem::take(&mut *services.held());
    if batch.is_empty() && held.is_empty() {
        return Ok(());
    }
    let outcomes = std::mem::take(batch);
    ledger.write(|tx| {
        for ((stage, key), value) in &held {
            ledger::kv_set(tx, stage, key, value)?;
        }
        for outcome in &outcomes {
            ledger::save_placed_facts(tx, outcome.call_id, &outcome.facts)?;
            ledger::record_placed_call(
                tx,
                outcome.call_id,
                outcome.state,
                outcome.error.as_deref(),
                outcome.wake_at,
                outcome.requests,
                outcome.attempt,
            )?;
        }
        Ok(())
    })
}

/// Results committed a batch at a time.
const COMMIT_EVERY: usize = 64;
/// A file that met a temporary error this often fails (others went
/// through in between, as the probe rotates).
const MAX_TRANSIENT_TRIES: u32 = 12;

/// What one call came to, waiting for the batch's commit.
struct Outcome {
    call_id: i64,
    state: &'static str,
    /// Counts as a try (a wait the stage asked for does not).
    attempt: bool,
    error: Option<String>,
    wake_at: Option<i64>,
    facts: Vec<(String, String)>,
    requests: u64,
}

impl Outcome {
    fn deferred(
        call_id: i64,
        error: String,
        wake_at: i64,
        facts: Vec<(String, String)>,
        requests: u64,
    ) -> Outcome {
        Outcome {
            call_id,
            state: "deferred",
            attempt: true,
            error: Some(error),
            wake_at: Some(wake_at),
            facts,
            requests,
        }
    }

    fn failed(call_id: i64, error: String, requests: u64) -> Outcome {
        Outcome {
            call_id,
            state: "failed",
            attempt: true,
            error: Some(error),
            wake_at: None,
            facts: Vec::new(),
            requests,
        }
    }
}

fn backoff(config: &crate::config::Config, attempts: u32) -> i64 {
    config
        .service
        .backoff
        .delay(attempts + 1)
        .min(MAX_BACKOFF_SECS)
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::SetCaptureTime(_) => "set-capture-time",
        Effect::SetFact(_) => "set-fact",
        Effect::Place(_) => "place",
        Effect::DuplicateOf(_) => "duplicate-of",
        Effect::Quarantine(_) => "quarantine",
        Effect::Skip(_) => "skip",
        Effect::Defer(_) => "defer",
        Effect::WriteXmp(_) => "write-xmp",
        Effect::Push(_) => "push",
    }
}

/// The job as a placed-phase stage sees it: its library copy to read, the
/// sidecars beside it, what earlier stages decided.
fn placed_job(
    conn: &rusqlite::Connection,
    config: &crate::config::Config,
    job_id: u64,
) -> rusqlite::Result<Option<(Job, CallFiles)>> {
    let Some(job) = ledger::job(conn, job_id)? else {
        return Ok(None);
    };
    let asset = ledger::placed_asset(conn, job_id)?;
    let Some((library_path, root, sha1, capture_text)) = asset else {
        return Ok(None);
    };
    let root_dir = if root == "archive" {
        match &config.archive.root {
            Some(dir) => dir.clone(),
            None => return Ok(None),
        }
    } else {
        config.library_root.clone()
    };
    let path = root_dir.join(&library_path);
    let Ok(file) = crate::effects::fsops::open_nofollow(&path) else {
        return Ok(None);
    };
    // The library copy's own size and SHA-1 (an embedded XMP makes it
    // differ from the original's).
    let size = file.metadata().map(|m| m.len()).unwrap_or(job.size);
    let library_sha1 = serde_json::from_str::<serde_json::Value>(&job.facts)
        .ok()
        .and_then(|f| f["library.sha1"].as_str().map(str::to_string));
    let sha1 = library_sha1.unwrap_or(sha1);
    let mut facts: Vec<Fact> =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&job.facts)
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| Fact {
                value: value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_string),
                key,
            })
            .collect();
    // The still of a Live Photo learns which job is its video.
    let video = ledger::live_video_of(conn, job_id)?;
    if let Some(video) = video {
        facts.push(Fact {
            key: "live.video_job".into(),
            value: video.to_string(),
        });
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let companions = sidecars_beside(&path);
    let (mtime, mtime_offset) = local_mtime(job.mtime_ns);
    let capture_source = job.capture_source.clone().unwrap_or_default();
    let wit = Job {
        id: job.id,
        inbox: job.inbox.clone(),
        relative_path: display_rel(&job.rel_path),
        size,
        mtime,
        mtime_offset_minutes: mtime_offset,
        blake3: job.blake3.clone().unwrap_or_default(),
        sha1,
        media_kind: kind_from(job.media_kind.as_deref().unwrap_or("unknown")),
        companions: companions.clone(),
        capture_time: capture_text
            .as_deref()
            .and_then(|t| parse_capture(t, &capture_source)),
        placement: Some(Placement {
            root,
            path: library_path,
        }),
        facts,
    };
    let files = CallFiles {
        file: Some(Arc::new(file)),
        companions: companions
            .into_iter()
            .map(|name| {
                let path: PathBuf = dir.join(&name);
                (name, path)
            })
            .collect(),
    };
    Ok(Some((wit, files)))
}

/// `IMG.jpg.xmp` and `IMG.xmp` beside a library file (or `.XMP`, as some
/// cameras and tools write it), when they exist, the file's own first.
pub(super) fn sidecars_beside(path: &Path) -> Vec<String> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut found: Vec<String> = Vec::new();
    for base in [&name, &stem] {
        if let Some(hit) = [format!("{base}.xmp"), format!("{base}.XMP")]
            .into_iter()
            .find(|n| std::fs::symlink_metadata(dir.join(n)).is_ok_and(|m| m.is_file()))
        {
            found.push(hit);
        }
    }
    found
}

fn kind_from(text: &str) -> WitMediaKind {
    match text {
        "jpeg" => WitMediaKind::Jpeg,
        "heic" => WitMediaKind::Heic,
        "avif" => WitMediaKind::Avif,
        "png" => WitMediaKind::Png,
        "gif" => WitMediaKind::Gif,
        "webp" => WitMediaKind::Webp,
        "tiff" => WitMediaKind::Tiff,
        "raw" => WitMediaKind::Raw,
        "video" => WitMediaKind::Video,
        _ => WitMediaKind::Unknown,
    }
}

/// The ledger's capture time text (`2024-07-01T12:00:00[.fff][+02:00]`).
fn parse_capture(text: &str, source: &str) -> Option<CaptureTime> {
    let (datetime, offset) = match text.find(['+', 'Z']).or_else(|| {
        // A `-` after the time part is an offset sign.
        text.get(19..)
            .and_then(|rest| rest.find('-'))
            .map(|i| i + 19)
    }) {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    };
    let num = |range: std::ops::Range<usize>| datetime.get(range)?.parse::<u32>().ok();
    let nanosecond = match datetime.get(19..) {
        Some(frac) if frac.starts_with('.') => {
            let digits = &frac[1..];
            let padded = format!("{digits:0<9}");
            padded.get(..9)?.parse().ok()?
        }
        _ => 0,
    };
    let offset_minutes = match offset {
        None => None,
        Some("Z") => Some(0),
        Some(o) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let hours: i16 = o.get(1..3)?.parse().ok()?;
            let minutes: i16 = o.get(4..6)?.parse().ok()?;
            Some(sign * (hours * 60 + minutes))
        }
    };
    Some(CaptureTime {
        local: Datetime {
            year: num(0..4)? as u16,
            month: num(5..7)? as u8,
            day: num(8..10)? as u8,
            hour: num(11..13)? as u8,
            minute: num(14..16)? as u8,
            second: num(17..19)? as u8,
            nanosecond,
        },
        offset_minutes,
        source: source.to_string(),
        confidence: Confidence::Medium,
    })
}

/// The ledger as the placed phase's stages see it. Their key-value writes
/// are held here and committed with the calls' results, a batch at a time
/// (one commit, not one per write); reads see them at once.
pub(super) struct LedgerServices {
    ledger: Arc<Ledger>,
    held: std::sync::Mutex<BTreeMap<(String, String), Vec<u8>>>,
    /// Held writes count against the stage's quota too, so what waits in
    /// memory for the next commit is bounded by it.
    kv_meter: KvMeter,
}

impl LedgerServices {
    pub(super) fn new(ledger: &Arc<Ledger>) -> LedgerServices {
        LedgerServices {
            ledger: Arc::clone(ledger),
            held: std::sync::Mutex::new(BTreeMap::new()),
            kv_meter: Default::default(),
        }
    }

    pub(super) fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vec<u8>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Services for LedgerServices {
    fn find_by_hash(&self, blake3: &str) -> Option<crate::host::AssetRef> {
        self.ledger
            .read(|c| ledger::placed_by_hash(c, blake3))
            .ok()
            .flatten()
            .map(|(job_id, library_path)| crate::host::AssetRef {
                job_id,
                library_path,
            })
    }
    fn kv_get(&self, stage: &str, key: &str) -> Option<Vec<u8>> {
        if let Some(value) = self.held().get(&(stage.to_string(), key.to_string())) {
            return Some(value.clone());
        }
        self.ledger
            .read(|c| ledger::kv_get(c, stage, key))
            .ok()
            .flatten()
    }
    fn kv_set(
        &self,
        stage: &str,
        key: &str,
        value: &[u8],
        quota: crate::host::KvQuota,
    ) -> Result<(), String> {
        let pair = (stage.to_string(), key.to_string());
        let old = match self.held().get(&pair) {
            Some(held) if held.is_empty() => None,
            Some(held) => Some((key.len() + held.len()) as u64),
            None => self
                .ledger
                .read(|c| ledger::kv_size(c, stage, key))
                .map_err(|e| format!("cannot read its key-value store: {e}"))?,
        };
        self.kv_meter
            .admit(&self.ledger, stage, key, old, value.len(), quota)?;
        self.held().insert(pair, value.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_text_round_trips() {
        let c = parse_capture("2024-07-01T12:30:05.250+02:00", "exif").expect("parses");
        assert_eq!((c.local.year, c.local.month, c.local.day), (2024, 7, 1));
        assert_eq!((c.local.hour, c.local.minute, c.local.second), (12, 30, 5));
        assert_eq!(c.local.nanosecond, 250_000_000);
        assert_eq!(c.offset_minutes, Some(120));
        let c = parse_capture("2019-01-02T03:04:05-05:30", "exif").expect("parses");
        assert_eq!(c.offset_minutes, Some(-330));
        let c = parse_capture("2019-01-02T03:04:05", "name").expect("parses");
        assert_eq!(c.offset_minutes, None);
        assert!(parse_capture("junk", "x").is_none());
    }
}
