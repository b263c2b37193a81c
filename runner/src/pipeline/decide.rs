//! Running an inbox's stages over a job: each stage sees what earlier ones
//! decided; every effect is validated before it counts.

use std::sync::Arc;

use crate::host::{
    CallFiles, CaptureTime, Datetime, Effect, Fact, Job, LoadedStage, Placement, PushRequest,
    Services, StageCallError, StageError, StageRuntime, WitMediaKind, XmpTarget, XmpWrite,
};
use crate::ledger::JobRecord;
use crate::media::MediaKind;

use super::display_rel;
use super::paths::validate_relative;
use super::read::{ReadError, ReadFile};

/// The longest a stage may defer a job.
const MAX_DEFER_SECS: u64 = 7 * 24 * 3600;

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
    /// The host found these bytes already placed (or being placed).
    Duplicate(u64),
    /// A stage says the file is a duplicate of this job: the host checks it
    /// before it counts (the job must exist and hold the same BLAKE3).
    DuplicateClaim {
        original: u64,
        stage: String,
    },
    Quarantine(String),
    Skip(String),
    Fail(String),
    /// Run the job again after this many seconds.
    Defer {
        seconds: u64,
        reason: String,
    },
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
    /// XMP properties for the library copy (the last write of a name wins).
    pub xmp: Vec<(String, String)>,
    /// A stage asked for them inside the file where the format allows.
    pub xmp_embed: bool,
    /// Offsite pushes asked for: (target, key template with `{path}`).
    pub pushes: Vec<(String, String)>,
    /// The copy made while the file was hashed.
    pub staged: Option<std::path::PathBuf>,
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
pub(crate) fn local_mtime(mtime_ns: i64) -> (Datetime, i16) {
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

/// A capture time as a civil date-time (checks every field's range).
pub fn civil(capture: &CaptureTime) -> Result<jiff::civil::DateTime, jiff::Error> {
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
}

fn valid_capture(capture: &CaptureTime) -> Result<(), String> {
    civil(capture).map_err(|e| format!("invalid capture time: {e}"))?;
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
            Effect::Push(p) => serde_json::json!({"push": {"target": p.target, "key": p.key}}),
            Effect::WriteXmp(w) => serde_json::json!({"write-xmp": {
                "name": w.name,
                "value": w.value,
                "target": if w.target == XmpTarget::Embed { "embed" } else { "sidecar" },
            }}),
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
    let mut decided = undecided(job.size);
    let read = match read {
        Ok(read) => read,
        Err(error) => {
            decided.decision = unread(error);
            return decided;
        }
    };
    decided.size = read.hashes.size;
    decided.staged = read.staged.clone();
    decided.hashes = Some((
        read.hashes.blake3.clone(),
        read.hashes.sha1.clone(),
        read.kind.as_str().to_string(),
    ));
    // Half a photo is never placed: a file whose structure ends early waits
    // in quarantine, and the whole file is taken when it arrives.
    if let Some(why) = crate::media::whole::cut_short(&read.file, read.kind, read.hashes.size) {
        decided.decision = Decision::Quarantine(format!(
            "{why}: the file ends early (a download or copy that did not finish); it is kept in quarantine, and the whole file is taken when it arrives"
        ));
        return decided;
    }
    let (mtime, mtime_offset) = local_mtime(job.mtime_ns);
    let source_dir = job.companion_dir();
    let mut wit_job = job_for_stages(job, &read, mtime, mtime_offset);
    let calls = Calls {
        runtime,
        job,
        read: &read,
        source_dir: &source_dir,
        services,
    };
    // A stage's `duplicate-of`: the built-in exif and offsite stages still
    // run, so a duplicate has its own date (the year it belongs to) and its
    // pipeline's targets get its bytes; nothing else of theirs is taken.
    let mut claim: Option<(u64, String)> = None;
    for name in pipeline {
        let Some(stage) = stages.get(name) else {
            decided.decision = Decision::Fail(format!("stage `{name}` is not loaded"));
            return decided;
        };
        // Called once the file is placed, from the placed-phase queue.
        if stage.info.placed {
            continue;
        }
        if claim.is_some()
            && !(stage.origin == format!("built-in `{name}`")
                && (name == "exif" || name == "offsite"))
        {
            continue;
        }
        let called = call_stage(&calls, stage, name, &wit_job, claim.is_some(), &mut decided);
        let effects = match called {
            Called::Effects(effects) => effects,
            Called::Failed => continue,
            Called::Decided(decision) => {
                decided.decision = decision;
                return decided;
            }
        };
        if claim.is_some() {
            take_on_duplicate(&mut decided, effects);
            continue;
        }
        for effect in effects {
            match take_effect(name, job.id, effect, &mut wit_job, &mut decided) {
                Taken::Next => {}
                Taken::Claimed(original) => {
                    claim = Some((original, name.clone()));
                    // The offsite stage pushes what is placed: here, the
                    // copy that keeps these bytes.
                    // (Still being placed: where it is to go.)
                    wit_job.placement = services
                        .find_by_hash(&wit_job.blake3)
                        .and_then(|asset| asset.library_path)
                        .or_else(|| services.planned_path(&wit_job.blake3))
                        .map(|path| Placement {
                            root: "library".into(),
                            path,
                        });
                    break;
                }
                Taken::Decided(decision) => {
                    decided.decision = decision;
                    return decided;
                }
            }
        }
    }
    if let Some((original, stage)) = claim {
        decided.decision = Decision::DuplicateClaim { original, stage };
    }
    decided
}

/// Nothing decided yet for a job of `size` bytes: no stage placed it.
fn undecided(size: u64) -> Decided {
    Decided {
        decision: Decision::Unplaced,
        calls: Vec::new(),
        hashes: None,
        size,
        capture: None,
        facts: Vec::new(),
        xmp: Vec::new(),
        xmp_embed: false,
        pushes: Vec::new(),
        staged: None,
    }
}

/// The decision for a job whose file could not be read.
fn unread(error: ReadError) -> Decision {
    match error {
        ReadError::Vanished => Decision::Skip(
            "the file disappeared from the inbox before keepsake read it; nothing was taken"
                .into(),
        ),
        ReadError::Unreadable(message) => Decision::Fail(message),
        ReadError::Changed => Decision::Skip(
            "the file changed after keepsake found it; the new version is taken by a new job once it is stable"
                .into(),
        ),
        ReadError::Stopped => Decision::Fail(
            "keepsake stopped while reading it; `keepsake retry` or the next run takes it"
                .into(),
        ),
    }
}

/// The job as the stages see it, before any of them ran.
fn job_for_stages(job: &JobRecord, read: &ReadFile, mtime: Datetime, mtime_offset: i16) -> Job {
    Job {
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
    }
}

/// What every stage call over one job shares.
struct Calls<'a> {
    runtime: &'a StageRuntime,
    job: &'a JobRecord,
    read: &'a ReadFile,
    source_dir: &'a std::path::Path,
    services: &'a Arc<dyn Services>,
}

/// What a stage call came to.
enum Called {
    /// It ran: these are its effects.
    Effects(Vec<Effect>),
    /// It failed on a duplicate: logged, and the stages go on.
    Failed,
    /// It failed: the job is decided, no stage runs after.
    Decided(Decision),
}

/// Call stage `name` over the job and record the call in `decided.calls`.
fn call_stage(
    calls: &Calls<'_>,
    stage: &LoadedStage,
    name: &str,
    wit_job: &Job,
    claimed: bool,
    decided: &mut Decided,
) -> Called {
    let job = calls.job;
    let files = CallFiles {
        file: Some(Arc::clone(&calls.read.file)),
        companions: job
            .companions
            .iter()
            .map(|c| (c.clone(), calls.source_dir.join(c)))
            .collect(),
    };
    let (result, stats) = calls
        .runtime
        .call(stage, wit_job, files, Arc::clone(calls.services));
    let mut call = StepCall {
        stage: name.to_string(),
        effects_json: "[]".into(),
        error: None,
        micros: stats.micros,
        bytes_read: stats.bytes_read,
    };
    let effects = match result {
        Ok(effects) => effects,
        // A duplicate is one whatever these stages say: an error only
        // costs it its own date or push (the plan then blocks its year).
        Err(e) if claimed => {
            tracing::warn!(job = job.id, "stage `{name}` on a duplicate: {e}");
            call.error = Some(e.to_string());
            decided.calls.push(call);
            return Called::Failed;
        }
        Err(StageCallError::Stage {
            error: StageError::InvalidInput(reason),
            ..
        }) => {
            call.error = Some(format!("invalid input: {reason}"));
            decided.calls.push(call);
            return Called::Decided(Decision::Quarantine(format!("stage `{name}`: {reason}")));
        }
        Err(e) => {
            call.error = Some(e.to_string());
            decided.calls.push(call);
            return Called::Decided(Decision::Fail(e.to_string()));
        }
    };
    call.effects_json = effects_json(&effects);
    decided.calls.push(call);
    Called::Effects(effects)
}

/// A duplicate's stage effects: only its capture time and pushes are taken,
/// and only the valid ones.
fn take_on_duplicate(decided: &mut Decided, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::SetCaptureTime(capture) if valid_capture(&capture).is_ok() => {
                decided.capture = Some(capture);
            }
            Effect::Push(PushRequest { target, key })
                if validate_relative(&key.replace("{path}", "p")).is_ok() =>
            {
                decided.pushes.retain(|(t, _)| *t != target);
                decided.pushes.push((target, key));
            }
            _ => {}
        }
    }
}

/// What one effect of a stage came to.
enum Taken {
    /// Taken: on with the stage's next effect.
    Next,
    /// `duplicate-of(original)`: the stage's later effects are not taken.
    Claimed(u64),
    /// The job is decided (or the effect rejected): no stage runs after.
    Decided(Decision),
}

/// Check one effect of stage `name` and take it into the job the later
/// stages see and into what is decided.
fn take_effect(
    name: &str,
    job_id: u64,
    effect: Effect,
    wit_job: &mut Job,
    decided: &mut Decided,
) -> Taken {
    let rejected =
        |what: String| Decision::Fail(format!("stage `{name}`: rejected effect: {what}"));
    match effect {
        Effect::SetCaptureTime(capture) => {
            if let Err(e) = valid_capture(&capture) {
                return Taken::Decided(rejected(e));
            }
            wit_job.capture_time = Some(capture.clone());
            decided.capture = Some(capture);
        }
        Effect::SetFact(fact) => {
            if fact.key.is_empty() || fact.key.len() > 128 || fact.value.len() > 4096 {
                return Taken::Decided(rejected(
                    "a fact needs a key of 1-128 bytes and a value of at most 4096".into(),
                ));
            }
            wit_job.facts.push(fact.clone());
            decided.facts.push(fact);
        }
        Effect::WriteXmp(XmpWrite {
            name: key,
            value,
            target,
        }) => {
            if let Err(e) = crate::sidecar::validate(&key, &value) {
                return Taken::Decided(rejected(format!("write-xmp: {e}")));
            }
            decided.xmp.retain(|(name, _)| *name != key);
            decided.xmp.push((key, value));
            decided.xmp_embed |= target == XmpTarget::Embed;
        }
        Effect::Place(Placement { root, path }) => {
            // A name that would not fit with its number and sidecars
            // is shortened, never refused: the camera's long names
            // (and 250-byte ones from messengers) are placed too.
            let path = super::paths::fit_placed(&path);
            if root != "library" {
                return Taken::Decided(rejected(format!(
                    "unknown root {root:?} (stages can place into \"library\")"
                )));
            }
            if let Err(e) = validate_relative(&path) {
                return Taken::Decided(rejected(format!("place: {e}")));
            }
            wit_job.placement = Some(Placement {
                root,
                path: path.clone(),
            });
            decided.decision = Decision::Place(path);
        }
        Effect::Push(PushRequest { target, key }) => {
            if let Err(e) = validate_relative(&key.replace("{path}", "p")) {
                return Taken::Decided(rejected(format!("push: key {key:?}: {e}")));
            }
            decided.pushes.retain(|(t, _)| *t != target);
            decided.pushes.push((target, key));
        }
        Effect::DuplicateOf(original) => return Taken::Claimed(original),
        Effect::Quarantine(reason) => {
            return Taken::Decided(Decision::Quarantine(format!("stage `{name}`: {reason}")));
        }
        Effect::Skip(reason) => {
            return Taken::Decided(Decision::Skip(format!("stage `{name}`: {reason}")));
        }
        Effect::Defer(defer) => {
            // At least a second, at most a week: a stage cannot
            // spin the service or park a file forever.
            let seconds = u64::from(defer.seconds).clamp(1, MAX_DEFER_SECS);
            return Taken::Decided(Decision::Defer {
                seconds,
                reason: format!(
                    "stage `{name}` asked to run again in {seconds} s: {}; `keepsake retry {}` runs it now",
                    defer.reason, job_id
                ),
            });
        }
    }
    Taken::Next
}
