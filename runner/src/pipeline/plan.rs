//! Turning a decision into files to write: destinations, name collisions,
//! sidecars, and what leaves a move-mode inbox.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::discover::companion_dest_name;
use crate::effects::{AssetInfo, FileWrite, Finish, JobPlan, Keeper};
use crate::hashing::blake3_file;
use crate::host::Confidence;
use crate::ledger::{self, Action, JobRecord, Ledger};

use super::IngestServices;
use super::decide::{Decided, Decision, iso};
use super::paths::numbered;

use crate::sidecar::MAX_EMBED;

/// A whole file, never through a link.
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    crate::effects::fsops::open_nofollow(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

pub(super) fn confidence_text(confidence: Confidence) -> &'static str {
    match confidence {
        Confidence::Low => "low",
        Confidence::Medium => "medium",
        Confidence::High => "high",
    }
}

/// What planning one job reads besides its decision.
#[derive(Clone, Copy)]
struct Planning<'a> {
    config: &'a Config,
    ledger: &'a Ledger,
    job: &'a JobRecord,
    remove_sources: bool,
    services: &'a IngestServices,
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
    let ctx = Planning {
        config,
        ledger,
        job,
        remove_sources,
        services,
    };
    let mut decided = decided;
    if let Some(kei) = services.kei.get(&job.source_path) {
        with_kei(&mut decided, job, kei);
    }
    let mut finish = unfinished(&decided);
    let mut plan = JobPlan {
        job_id: job.id,
        finish: finish.clone(),
        writes: Vec::new(),
        remove_sources: Vec::new(),
        source_as_read: Some((job.size, job.mtime_ns, job.inode)),
        depends_on: None,
        keeper: None,
        source_blake3: String::new(),
    };
    let mut decision = std::mem::replace(&mut decided.decision, Decision::Unplaced);
    let (blake3, sha1, kind) = match (&decision, decided.hashes.clone()) {
        (
            Decision::Fail(_) | Decision::Skip(_) | Decision::Defer { .. } | Decision::Unplaced,
            hashes,
        ) => hashes.unwrap_or_default(),
        (_, Some(hashes)) => hashes,
        (_, None) => {
            decision = Decision::Fail("the file was not read".into());
            Default::default()
        }
    };
    plan.source_blake3 = blake3.clone();
    let decision = checked_decision(&ctx, decision, &decided.pushes, &blake3);
    match decision {
        Decision::Fail(reason) => {
            finish.state = "failed".into();
            finish.reason = Some(reason);
        }
        Decision::Skip(reason) => {
            finish.state = "skipped".into();
            finish.reason = Some(reason);
        }
        // Checked above; never taken unchecked.
        Decision::DuplicateClaim { original, stage } => {
            finish.state = "failed".into();
            finish.reason = Some(format!(
                "stage `{stage}`: duplicate-of({original}) was not checked"
            ));
        }
        Decision::Defer { seconds, reason } => {
            finish.state = "deferred".into();
            finish.reason = Some(reason);
            finish.wake_at = Some(crate::ledger::now() + seconds as i64);
        }
        Decision::Unplaced => {
            finish.state = "skipped".into();
            finish.reason = Some("no stage in this inbox's pipeline placed the file".into());
        }
        Decision::Duplicate(original) => {
            plan_duplicate(&ctx, &decided, original, &blake3, &mut plan, &mut finish);
        }
        Decision::Quarantine(reason) => {
            plan_quarantine(&ctx, &decided, reason, blake3, &mut plan, &mut finish);
        }
        Decision::Place(path) => {
            let hashes = (blake3, sha1, kind);
            plan_place(&ctx, &decided, path, hashes, &mut plan, &mut finish);
        }
    }
    plan.finish = finish;
    plan
}

/// The job's finish before its decision is known: its capture time and facts.
fn unfinished(decided: &Decided) -> Finish {
    let facts: serde_json::Map<String, serde_json::Value> = decided
        .facts
        .iter()
        .map(|f| (f.key.clone(), serde_json::Value::String(f.value.clone())))
        .collect();
    Finish {
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
        wake_at: None,
        pushes: Vec::new(),
        pushes_on_behalf: Vec::new(),
    }
}

/// The stages' decision as the host takes it: an undeclared offsite target
/// fails it, a stage's duplicate claim is checked, and bytes already placed
/// make it a duplicate.
fn checked_decision(
    ctx: &Planning<'_>,
    decision: Decision,
    pushes: &[(String, String)],
    blake3: &str,
) -> Decision {
    let Planning {
        config,
        ledger,
        job,
        services,
        ..
    } = *ctx;
    let mut decision = decision;
    if let Decision::Place(_) = decision
        && let Some((target, _)) = pushes
            .iter()
            .find(|(target, _)| !config.offsite.contains_key(target))
    {
        decision = Decision::Fail(format!(
            "a stage asked to push to offsite target `{target}`, which the config does not declare; add [offsite.{target}] or fix the stage's `targets`"
        ));
    }
    if let Decision::DuplicateClaim { original, stage } = &decision {
        decision = match check_claim(ledger, services, *original, blake3) {
            Ok(()) => Decision::Duplicate(*original),
            Err(why) => Decision::Fail(format!(
                "stage `{stage}`: rejected effect: duplicate-of({original}): {why}; a stage that means \"similar\" says so with set-fact, and `keepsake retry {}` runs the job again",
                job.id
            )),
        };
    }
    // The host keeps the library free of duplicates whatever the pipeline:
    // bytes already placed (or being placed in this batch) are a duplicate.
    if let Decision::Place(path) = &decision {
        if let Ok(Some(asset)) = ledger.read(|c| ledger::asset_by_hash(c, blake3)) {
            decision = Decision::Duplicate(asset.job_id);
        } else if let Some(other) = services.reserve(blake3, job.id, path) {
            decision = Decision::Duplicate(other);
        }
    }
    decision
}

/// A duplicate of job `original`: it waits for the original's commit or
/// keeps the original's copy, and its offsite targets get that copy.
fn plan_duplicate(
    ctx: &Planning<'_>,
    decided: &Decided,
    original: u64,
    blake3: &str,
    plan: &mut JobPlan,
    finish: &mut Finish,
) {
    let Planning {
        config,
        ledger,
        job,
        remove_sources,
        services,
    } = *ctx;
    finish.state = "duplicate".into();
    finish.duplicate_of = Some(original);
    // The original is not committed yet: this job ends only once it is.
    plan.depends_on = services.in_flight(blake3).filter(|job| *job == original);
    // Committed: its copy is what keeps this file's bytes.
    plan.keeper = ledger
        .read(|c| ledger::asset_by_job(c, original))
        .ok()
        .flatten()
        .filter(|asset| asset.blake3 == blake3)
        .and_then(|asset| {
            let root = match asset.root.as_str() {
                "archive" => config.archive.root.clone()?,
                _ => config.library_root.clone(),
            };
            Some(Keeper {
                path: root.join(&asset.library_path),
                copy_blake3: asset.copy_blake3,
                source_blake3: asset.blake3,
            })
        });
    // This inbox's targets get the bytes too, on the duplicate's
    // behalf: the original may have come from an inbox without them.
    if let Some(keeper) = &plan.keeper
        // An archived copy keeps its library-relative path (and its
        // pushes their keys) under the archive root.
        && let Some(rel) = keeper
            .path
            .strip_prefix(&config.library_root)
            .ok()
            .or_else(|| {
                config
                    .archive
                    .root
                    .as_deref()
                    .and_then(|a| keeper.path.strip_prefix(a).ok())
            })
    {
        let rel = rel.to_string_lossy().into_owned();
        let size = std::fs::symlink_metadata(&keeper.path).map_or(0, |m| m.len());
        finish.pushes = decided
            .pushes
            .iter()
            .filter(|(target, _)| config.offsite.contains_key(target))
            .map(|(target, template)| crate::ledger::NewPush {
                target: target.clone(),
                key: template.replace("{path}", &rel),
                file: rel.clone(),
                blake3: keeper.copy_blake3.clone(),
                size,
            })
            .collect();
    } else if plan.depends_on.is_some() {
        // Its original is still being placed: the pushes are made
        // when it is committed, of its copy.
        finish.pushes_on_behalf = decided
            .pushes
            .iter()
            .filter(|(target, _)| config.offsite.contains_key(target))
            .cloned()
            .collect();
    }
    move_sources(plan, job, remove_sources);
}

/// A quarantined file goes, as it is, into the job's quarantine folder.
fn plan_quarantine(
    ctx: &Planning<'_>,
    decided: &Decided,
    reason: String,
    blake3: String,
    plan: &mut JobPlan,
    finish: &mut Finish,
) {
    let Planning {
        config,
        job,
        remove_sources,
        ..
    } = *ctx;
    let name = job
        .source_path
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("file"));
    let dest = config.quarantine_dir().join(job.id.to_string()).join(name);
    finish.state = "quarantined".into();
    finish.reason = Some(reason);
    finish.dest_path = Some(dest.display().to_string());
    // Quarantined before (a retry): the copy there is kept as it is.
    let adopt =
        dest.symlink_metadata().is_ok() && blake3_file(&dest).is_ok_and(|hash| hash == blake3);
    plan.writes.push(FileWrite {
        action: Action::Quarantine,
        source: job.source_path.clone(),
        dest,
        keeps: blake3.clone(),
        blake3,
        size: decided.size,
        adopt,
        content: None,
        staged: None,
    });
    move_sources(plan, job, remove_sources);
}

/// A placed file: its library name, its copy (with embedded XMP when asked),
/// its sidecars and its offsite pushes.
fn plan_place(
    ctx: &Planning<'_>,
    decided: &Decided,
    path: String,
    hashes: (String, String, String),
    plan: &mut JobPlan,
    finish: &mut Finish,
) {
    let Planning {
        config,
        ledger,
        job,
        remove_sources,
        services,
    } = *ctx;
    let (blake3, sha1, kind) = hashes;
    let mut path = path;
    // A Live Photo's video goes beside its still, under its name.
    let content_id = decided
        .facts
        .iter()
        .rev()
        .find(|f| f.key == "live.content_id")
        .map(|f| f.value.clone());
    let capture_secs = decided.capture.as_ref().and_then(super::live::capture_secs);
    let mut paired_with = None;
    if kind == "video" {
        let stills = services.stills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(still) = stills.find(
            ledger,
            content_id.as_deref(),
            &job.source_path,
            capture_secs,
        ) {
            path = super::live::beside(&still.dest, &job.source_path);
            paired_with = Some(still.job_id);
        }
    }
    let embedded = embedded_copy(decided, job, &kind, &blake3);
    let final_hash = embedded
        .as_ref()
        .map(|bytes| blake3::hash(bytes).to_hex().to_string())
        .unwrap_or_else(|| blake3.clone());
    let (chosen, adopted) = choose_name(config, ledger, services, &path, &final_hash);
    if kind != "video" {
        services
            .stills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(
                content_id.as_deref(),
                &job.source_path,
                super::live::Still {
                    job_id: job.id,
                    dest: chosen.clone(),
                    capture_secs,
                },
            );
    }
    library_facts(finish, embedded.as_ref(), paired_with);
    finish.state = "done".into();
    finish.dest_path = Some(chosen.clone());
    finish.asset = Some(AssetInfo {
        blake3: blake3.clone(),
        sha1,
        size: decided.size,
        media_kind: kind,
        capture_time: finish.capture_time.clone(),
        capture_source: finish.capture_source.clone(),
        library_blake3: embedded.as_ref().map(|_| final_hash.clone()),
    });
    let dest = config.library_root.join(&chosen);
    plan.writes.push(FileWrite {
        action: Action::Place,
        source: job.source_path.clone(),
        dest: dest.clone(),
        size: embedded.as_ref().map_or(decided.size, |b| b.len() as u64),
        blake3: final_hash,
        keeps: blake3.clone(),
        adopt: adopted,
        staged: decided.staged.clone().filter(|_| embedded.is_none()),
        content: embedded.clone(),
    });
    plan.writes.extend(companion_writes(job, &dest, services));
    if !decided.xmp.is_empty() && embedded.is_none() {
        write_xmp(&mut plan.writes, job, &dest, &decided.xmp, services);
    }
    finish.pushes = pushes(config, &chosen, &decided.pushes, &plan.writes);
    move_sources(plan, job, remove_sources);
}

/// The library copy with the stages' XMP embedded, when asked and possible.
fn embedded_copy(
    decided: &Decided,
    job: &JobRecord,
    kind: &str,
    blake3: &str,
) -> Option<std::sync::Arc<Vec<u8>>> {
    // Embedded XMP: the library copy is the original with the
    // properties in its XMP segment, image data byte-identical. The
    // original's hash goes in with them (and the image data's, which
    // vouches for it), so a rebuilt ledger still knows the original.
    (decided.xmp_embed && kind == "jpeg" && decided.size <= MAX_EMBED)
        .then(|| read_file(&job.source_path).ok())
        .flatten()
        .filter(|bytes| blake3::hash(bytes).to_hex().as_str() == blake3)
        .and_then(|bytes| {
            let image = crate::sidecar::blake3_without_xmp(&bytes)?;
            let mut properties = decided.xmp.clone();
            properties.push((crate::sidecar::ORIGINAL_BLAKE3.into(), blake3.to_string()));
            properties.push((crate::sidecar::IMAGE_BLAKE3.into(), image));
            crate::sidecar::embed_jpeg(&bytes, &properties)
        })
        .map(std::sync::Arc::new)
}

/// The library copy's own facts: its SHA-1 when it holds other bytes than
/// the original, and the still a Live Photo's video is paired with.
fn library_facts(
    finish: &mut Finish,
    embedded: Option<&std::sync::Arc<Vec<u8>>>,
    paired_with: Option<u64>,
) {
    // The library copy is not the original's bytes: services that
    // check by checksum (Immich) need the copy's.
    if let Some(bytes) = embedded
        && let Ok(mut facts) =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&finish.facts)
    {
        use sha1::Digest;
        let digest = sha1::Sha1::digest(bytes.as_slice());
        facts.insert(
            "library.sha1".into(),
            serde_json::json!(crate::hashing::hex(&digest)),
        );
        finish.facts = serde_json::Value::Object(facts).to_string();
    }
    if let Some(still) = paired_with
        && let Ok(mut facts) =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&finish.facts)
    {
        facts.insert("live.still_job".into(), serde_json::json!(still));
        finish.facts = serde_json::Value::Object(facts).to_string();
    }
}

/// The offsite pushes for a placed file and the sidecars written beside it:
/// `{path}` in each key becomes the final library path; a sidecar's key is
/// its name beside the file's key.
fn pushes(
    config: &Config,
    chosen: &str,
    asked: &[(String, String)],
    writes: &[FileWrite],
) -> Vec<crate::ledger::NewPush> {
    let mut out = Vec::new();
    for (target, template) in asked {
        let key = template.replace("{path}", chosen);
        let key_dir = Path::new(&key).parent().unwrap_or(Path::new(""));
        for write in writes {
            if !matches!(write.action, Action::Place | Action::Companion) {
                continue;
            }
            let Ok(file) = write.dest.strip_prefix(&config.library_root) else {
                continue;
            };
            let object = if write.action == Action::Place {
                key.clone()
            } else {
                let Some(name) = write.dest.file_name() else {
                    continue;
                };
                key_dir.join(name).to_string_lossy().into_owned()
            };
            out.push(crate::ledger::NewPush {
                target: target.clone(),
                key: object,
                file: file.to_string_lossy().into_owned(),
                blake3: write.blake3.clone(),
                size: write.size,
            });
        }
    }
    out
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
        // A sidecar keepsake made from nothing has no inbox file behind it.
        if write.action == Action::Companion && !write.source.as_os_str().is_empty() {
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

/// The stages' XMP properties go into `<placed name>.xmp`: merged into the
/// file's own `IMG.jpg.xmp` when it has one (which then is not copied as
/// is), else a new sidecar. Nothing is overwritten: a sidecar already at
/// that name with other content is left alone, and so is a companion that
/// is not XMP keepsake can merge into.
fn write_xmp(
    writes: &mut Vec<FileWrite>,
    job: &JobRecord,
    dest: &Path,
    properties: &[(String, String)],
    services: &IngestServices,
) {
    let media_name = file_name_of(&job.source_path);
    let placed_name = file_name_of(dest);
    let sidecar_dest = dest.with_file_name(format!("{placed_name}.xmp"));
    let own = job
        .companions
        .iter()
        .find(|c| c.eq_ignore_ascii_case(&format!("{media_name}.xmp")))
        .map(|c| job.companion_dir().join(c))
        // A link is never followed (it is not copied either: see
        // `companion_writes`): the properties go into a fresh sidecar.
        .filter(|path| std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()));
    let mut keeps = String::new();
    let content = match &own {
        Some(path) => {
            let Ok(text) = read_companion(path) else {
                return;
            };
            // The inbox sidecar may go only if the merge keeps all it said.
            if crate::sidecar::merge_keeps_everything(&text, properties) {
                keeps = blake3::hash(text.as_bytes()).to_hex().to_string();
            } else {
                tracing::info!(
                    job = job.id,
                    "{} says other things than the stages set; it stays where it is and the library gets the merged sidecar",
                    path.display()
                );
            }
            match crate::sidecar::merge(&text, properties) {
                Some(merged) => merged,
                None => {
                    tracing::warn!(
                        job = job.id,
                        "{} is not XMP keepsake can merge into; copied as it is",
                        path.display()
                    );
                    return;
                }
            }
        }
        None => crate::sidecar::fresh(properties),
    };
    let blake3 = blake3::hash(content.as_bytes()).to_hex().to_string();
    let adopt = match sidecar_dest.symlink_metadata() {
        Ok(_) if blake3_file(&sidecar_dest).is_ok_and(|h| h == blake3) => true,
        Ok(_) => {
            tracing::warn!(
                job = job.id,
                "{} exists; keepsake does not overwrite it",
                sidecar_dest.display()
            );
            return;
        }
        Err(_) => false,
    };
    if let Some(own) = &own {
        writes.retain(|w| w.source != *own);
    }
    services
        .reserved_paths
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(sidecar_dest.clone());
    writes.push(FileWrite {
        action: Action::Companion,
        source: own.unwrap_or_default(),
        dest: sidecar_dest,
        blake3,
        size: content.len() as u64,
        adopt,
        content: Some(std::sync::Arc::new(content.into_bytes())),
        staged: None,
        keeps,
    });
}

/// A companion's text, never through a link.
/// What kei knows of an iCloud file joins what the stages set: iCloud's id
/// and albums as facts, the albums in the sidecar (`lr:hierarchicalSubject`
/// `Albums|NAME`, which the immich stage makes into albums) and a favourite
/// as rating 5. Merged: the albums join those the sidecar has, and a rating
/// the family (or a stage) set stays.
fn with_kei(decided: &mut Decided, job: &JobRecord, kei: &crate::kei::KeiInfo) {
    let fact = |key: &str, value: String| crate::host::Fact {
        key: key.into(),
        value,
    };
    decided.facts.push(fact("icloud.id", kei.id.clone()));
    if !kei.albums.is_empty() {
        decided
            .facts
            .push(fact("icloud.albums", kei.albums.join("\n")));
    }
    if kei.favorite {
        decided.facts.push(fact("icloud.favorite", "true".into()));
    }
    let media_name = file_name_of(&job.source_path);
    let own = job
        .companions
        .iter()
        .find(|c| c.eq_ignore_ascii_case(&format!("{media_name}.xmp")))
        .and_then(|c| read_companion(&job.companion_dir().join(c)).ok())
        .unwrap_or_default();
    const TAGS: &str = "lr:hierarchicalSubject";
    let staged = |xmp: &[(String, String)], name: &str| {
        xmp.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    if !kei.albums.is_empty() {
        let mut tags: Vec<String> = match staged(&decided.xmp, TAGS) {
            Some(value) => value.lines().map(str::to_string).collect(),
            None => keepsake_xmp::items(&own, TAGS),
        };
        for album in &kei.albums {
            let tag = format!("{}{album}", keepsake_xmp::ALBUM_TAG);
            if !album.contains(['\n', '|']) && !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        decided.xmp.retain(|(n, _)| n != TAGS);
        decided.xmp.push((TAGS.into(), tags.join("\n")));
    }
    let rated = staged(&decided.xmp, "xmp:Rating").is_some()
        || keepsake_xmp::property(&own, "xmp:Rating").is_some();
    if kei.favorite && !rated {
        decided.xmp.push(("xmp:Rating".into(), "5".into()));
    }
}

fn read_companion(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    crate::effects::fsops::open_nofollow(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// A stage's `duplicate-of(original)` holds only when job `original` is
/// placing these very bytes now, or its committed asset holds them.
fn check_claim(
    ledger: &Ledger,
    services: &IngestServices,
    original: u64,
    blake3: &str,
) -> Result<(), String> {
    if services.in_flight(blake3) == Some(original) {
        return Ok(());
    }
    let read = |what| format!("the ledger cannot be read ({what})");
    let asset = ledger
        .read(|c| ledger::asset_by_job(c, original))
        .map_err(|e| read(e.to_string()))?;
    match asset {
        Some(asset) if asset.blake3 == blake3 => Ok(()),
        Some(_) => Err(format!("job {original}'s file holds other bytes")),
        None => match ledger
            .read(|c| ledger::job(c, original))
            .map_err(|e| read(e.to_string()))?
        {
            Some(_) => Err(format!("job {original} has no file in the library")),
            None => Err(format!("there is no job {original}")),
        },
    }
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Sidecars follow their file: named after where it went, collision-safe.
fn companion_writes(job: &JobRecord, dest: &Path, services: &IngestServices) -> Vec<FileWrite> {
    let source_dir = job.companion_dir();
    let media_name = file_name_of(&job.source_path);
    let placed_name = file_name_of(dest);
    let dest_dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut reserved = services
        .reserved_paths
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut writes = Vec::new();
    let mut seen = HashSet::new();
    for companion in &job.companions {
        let source = source_dir.join(companion);
        if std::fs::symlink_metadata(&source).is_ok_and(|m| m.file_type().is_symlink()) {
            tracing::warn!(
                job = job.id,
                "companion {} is a symlink; keepsake never follows links in an inbox, so it is ignored",
                source.display()
            );
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&source) else {
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
        let name = super::paths::fit_name(
            &companion_dest_name(companion, &media_name, &placed_name),
            super::paths::MAX_PLACED_NAME + 16,
        );
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
                keeps: hash.clone(),
                blake3: hash.clone(),
                size: meta.len(),
                adopt,
                content: None,
                staged: None,
            });
            break;
        }
    }
    writes
}
