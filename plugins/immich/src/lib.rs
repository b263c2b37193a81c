//! The built-in `immich` stage: once a file is in the library, upload it to
//! Immich (`mode = "upload"`) and add it to the albums the config's rules
//! name. It runs in the `placed` phase, sandboxed like every stage: it can
//! reach the Immich origin the config grants and nothing else, and the host
//! adds the API key to its requests, so the stage never holds the secret.
//!
//! Re-running is safe: the asset id Immich gave is remembered (stage KV), the
//! upload is checked by SHA-1 first (`bulk-upload-check`), a "duplicate"
//! answer counts as success, and adding an asset an album already holds is
//! reported by Immich per id, not as an error.

mod albums;
mod external;
mod http;
mod sweep;

use keepsake_sdk::*;
use serde_json::json;
use wasip2::http::types::Method;

use crate::http::{Failure, Part, Response, Server};

struct Immich;

/// Seconds a file waits for something Immich does not have yet (its Live
/// Photo's video, or its index of an external library).
const WAIT_SECS: u32 = 10;
/// Waits of a Live Photo still for its video before it goes alone.
const MAX_LIVE_WAITS: u32 = 30;

const OPTIONS: &[(&str, &str, Option<&str>)] = &[
    (
        "url",
        "The Immich server, e.g. http://immich.local:2283 (set from [immich] url)",
        None,
    ),
    (
        "mode",
        "\"upload\": send each file to Immich (POST /assets); \"external-library\": the library is an Immich external library, scanned and then found by path",
        Some("upload"),
    ),
    (
        "library_id",
        "external-library mode: the id of the Immich external library that holds the keepsake library",
        None,
    ),
    (
        "library_path",
        "external-library mode: the library folder as Immich sees it (e.g. /mnt/photos/library inside its container); default: as keepsake sees it",
        None,
    ),
    (
        "archive_path",
        "external-library mode: the archive root as Immich sees it; default: as keepsake sees it",
        None,
    ),
    (
        "scan_seconds",
        "external-library mode: ask Immich to scan at most this often",
        Some("30"),
    ),
    ("library_root", "set by keepsake: the library folder", None),
    ("archive_root", "set by keepsake: the archive root", None),
    (
        "albums_by_inbox",
        "Album per inbox, e.g. { anna = \"Anna's phone\" }",
        None,
    ),
    (
        "album_from_folder",
        "true: the name of the folder the file came from is an album",
        Some("false"),
    ),
    (
        "album_by_date",
        "An album named from the capture date, e.g. \"{yyyy}-{mm}\" ({yyyy} {mm} {dd} {month})",
        None,
    ),
    (
        "album_facts",
        "Facts (set by earlier stages or family plugins) that name an album",
        Some("album"),
    ),
    (
        "albums",
        "Albums every file of the pipeline joins, comma-separated",
        None,
    ),
];

impl ServiceGuest for Immich {
    fn describe() -> Description {
        describe_placed(
            "immich",
            env!("CARGO_PKG_VERSION"),
            "uploads each placed file to Immich and adds it to albums",
            OPTIONS,
        )
    }

    fn sweep(request: SweepRequest) -> Result<Vec<RemoteChange>, StageError> {
        let server = server()?;
        // What `run` queued goes first, so a sweep reads albums as they are;
        // an album that cannot be written does not hold back the others,
        // nor the reading.
        let sent = albums::send_all(&server);
        if request.send_only {
            return sent.map(|()| Vec::new());
        }
        if let Err(e) = &sent {
            host::log(
                LogLevel::Warn,
                &format!("album additions wait, so albums are not read now: {e:?}"),
            );
        }
        sweep::sweep(&server, &request, sent.is_ok())
    }

    fn run(job: Job) -> Result<Vec<Effect>, StageError> {
        let server = server()?;
        let mode = option_or("mode", "upload");
        let is_live_video = fact(&job, "live.still_job").is_some();
        let sidecar = sidecar_of(&job, &file_name_of(&job));
        // An external-library file that moved (to the archive) is a new
        // asset in Immich: found again, and given its albums again.
        let remembered = match remembered_asset(job.id) {
            Some(id) if mode == "external-library" && !external::still_at(&server, &job, &id)? => {
                None
            }
            other => other,
        };
        let is_new = remembered.is_none();
        let asset_id = match remembered {
            Some(id) => id,
            None => match match mode.as_str() {
                "upload" => upload(&server, &job, sidecar.as_ref())?,
                "external-library" => external::find(&server, &job)?,
                other => {
                    return Err(StageError::Internal(format!(
                        "mode {other:?}: use \"upload\" or \"external-library\""
                    )));
                }
            } {
                Uploaded::Asset(id) => {
                    host::kv_set(&asset_key(job.id), id.as_bytes());
                    id
                }
                Uploaded::Waiting(reason) => {
                    return Ok(vec![Effect::Defer(DeferUntil {
                        seconds: WAIT_SECS,
                        reason,
                    })]);
                }
                Uploaded::Rejected(reason) => {
                    return Ok(vec![Effect::SetFact(Fact {
                        key: "immich.rejected".into(),
                        value: reason,
                    })]);
                }
            },
        };
        let mut effects = vec![Effect::SetFact(Fact {
            key: "immich.asset_id".into(),
            value: asset_id.clone(),
        })];
        // The sweep names assets by job.
        host::kv_set(&sweep::job_of_key(&asset_id), job.id.to_string().as_bytes());
        // What the sidecar keeps from an earlier Immich (keepsake's
        // write-back): its albums, and a favorite as rating 5.
        // Each once per asset, when it is new to keepsake (uploaded, or
        // found at a new path): a file that runs again (after an error, or
        // an archive move in upload mode) is not put back into albums the
        // family took it out of. What is left to do is kept in the KV, so
        // an error in between does not lose it.
        let kept = sidecar
            .as_ref()
            .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned());
        let todo_key = format!("todo:{}", job.id);
        if is_new {
            host::kv_set(&todo_key, b"favorite albums");
        }
        let todo = host::kv_get(&todo_key)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        if todo.contains("favorite") {
            let rated_5 = kept
                .as_deref()
                .and_then(|x| xmp::property(x, "xmp:Rating"))
                .is_some_and(|r| r.trim() == "5");
            if rated_5 && !is_live_video {
                mark_favorite(&server, &asset_id)?;
            }
            host::kv_set(&todo_key, todo.replace("favorite", "").trim().as_bytes());
        }
        // A Live Photo's video is shown through its still, never on its own.
        if todo.contains("albums") && !is_live_video {
            let mut names = albums::names(&job);
            for name in kept.as_deref().map(xmp::albums).unwrap_or_default() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            for name in &names {
                albums::add(&server, name, &asset_id)?;
            }
            if !names.is_empty() {
                effects.push(Effect::SetFact(Fact {
                    key: "immich.albums".into(),
                    value: names.join(", "),
                }));
            }
        }
        if !todo.is_empty() {
            host::kv_set(&todo_key, b"");
        }
        Ok(effects)
    }
}

export_service_stage!(Immich);

/// A favorite the sidecar keeps (rating 5). A key without `asset.update`
/// is told in the log; it does not hold back the uploads.
fn mark_favorite(server: &Server, asset_id: &str) -> Result<(), StageError> {
    let body = json!({ "isFavorite": true });
    let answer = server.json(Method::Put, &format!("/assets/{asset_id}"), Some(&body));
    if let Ok(r) = &answer
        && r.status == 403
    {
        host::log(
            LogLevel::Warn,
            &format!(
                "Immich refused to mark asset {asset_id} a favorite (HTTP 403: {}); give the API key the asset.update permission",
                r.message()
            ),
        );
        return Ok(());
    }
    json_answer("mark the asset a favorite", answer).map(|_| ())
}

fn server() -> Result<Server, StageError> {
    let url = host::get_option("url").ok_or_else(|| {
        StageError::Internal("no Immich url: set `url` under [immich] in the config".into())
    })?;
    Server::parse(&url).map_err(StageError::Internal)
}

pub(crate) enum Uploaded {
    Asset(String),
    /// Not yet: e.g. a Live Photo still whose video is not in Immich yet.
    Waiting(String),
    /// Immich will not take the file (e.g. a format it does not support).
    Rejected(String),
}

pub(crate) fn asset_key(job: u64) -> String {
    format!("asset:{job}")
}

fn remembered_asset(job: u64) -> Option<String> {
    host::kv_get(&asset_key(job)).and_then(|v| String::from_utf8(v).ok())
}

/// Immich's answer as a stage outcome: 5xx and auth errors are worth trying
/// later (the host then holds every call of this stage back, so a bad key
/// costs one request per retry, not one per file).
pub(crate) fn check(
    what: &str,
    response: Result<Response, Failure>,
) -> Result<Response, StageError> {
    match response {
        Err(Failure::Denied) => Err(StageError::Internal(format!(
            "{what}: the host refused the request; the Immich url must match [immich] url"
        ))),
        Err(Failure::Local(m)) => Err(StageError::Internal(format!(
            "{what}: cannot read the library file: {m}"
        ))),
        Err(Failure::Unreachable(m)) => Err(StageError::Transient(format!(
            "{what}: Immich is unreachable ({m})"
        ))),
        Ok(r) if r.status == 401 || r.status == 403 => Err(StageError::Transient(format!(
            "{what}: Immich refused the API key (HTTP {}: {}); check [immich] api_key_file and the key's permissions",
            r.status,
            r.message()
        ))),
        Ok(r) if r.status >= 500 || r.status == 429 => Err(StageError::Transient(format!(
            "{what}: Immich answered {}: {}",
            r.status,
            r.message()
        ))),
        Ok(r) => Ok(r),
    }
}

/// [`check`], then an answer of 200 or 201 as JSON; any other status is
/// this file's failure, named by `what`.
pub(crate) fn json_answer(
    what: &str,
    response: Result<Response, Failure>,
) -> Result<serde_json::Value, StageError> {
    let answer = check(what, response)?;
    if answer.status != 200 && answer.status != 201 {
        return Err(StageError::Internal(format!(
            "{what} answered {}: {}",
            answer.status,
            answer.message()
        )));
    }
    answer.json().map_err(StageError::Internal)
}

/// A counter kept in the stage's KV (0 when unset or emptied).
pub(crate) fn kv_count(key: &str) -> u32 {
    host::kv_get(key)
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn upload(
    server: &Server,
    job: &Job,
    sidecar: Option<&(String, Vec<u8>)>,
) -> Result<Uploaded, StageError> {
    // 1. A Live Photo still goes up with its video's id: the video first.
    let mut live_video = None;
    if let Some(video_job) = fact(job, "live.video_job").and_then(|v| v.parse::<u64>().ok()) {
        match remembered_asset(video_job) {
            Some(id) => live_video = Some(id),
            None => {
                // The video goes first; if it cannot (failed, rejected),
                // the still goes alone after a while.
                let key = format!("live-waits:{}", job.id);
                let waits = kv_count(&key);
                if waits < MAX_LIVE_WAITS {
                    host::kv_set(&key, (waits + 1).to_string().as_bytes());
                    return Ok(Uploaded::Waiting(format!(
                        "waiting for its Live Photo video (job {video_job}) to reach Immich"
                    )));
                }
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "its Live Photo video (job {video_job}) is not in Immich: the still goes alone"
                    ),
                );
            }
        }
    }

    // 2. Does Immich hold these bytes already (by SHA-1)?
    let check_body = json!({ "assets": [{ "id": job.id.to_string(), "checksum": job.sha1 }] });
    let value = json_answer(
        "bulk-upload-check",
        server.json(Method::Post, "/assets/bulk-upload-check", Some(&check_body)),
    )?;
    let result = &value["results"][0];
    if result["action"] == "reject" {
        if result["reason"] == "duplicate"
            && let Some(id) = result["assetId"].as_str()
        {
            return Ok(Uploaded::Asset(id.to_string()));
        }
        return Ok(Uploaded::Rejected(format!(
            "Immich rejects it: {}",
            result["reason"].as_str().unwrap_or("no reason given")
        )));
    }

    // 3. The upload: file parts first, then the fields.
    let name = file_name_of(job);
    let boundary = format!("keepsake-part-{}", &job.blake3[..job.blake3.len().min(32)]);
    let mut fields: Vec<(&str, String)> = vec![
        (
            "deviceAssetId",
            format!("keepsake-{}", &job.blake3[..job.blake3.len().min(32)]),
        ),
        ("deviceId", "keepsake".into()),
        ("fileCreatedAt", created_at(job)),
        (
            "fileModifiedAt",
            iso(&job.mtime, Some(job.mtime_offset_minutes)),
        ),
        ("filename", name.clone()),
    ];
    if let Some(video) = &live_video {
        fields.push(("livePhotoVideoId", video.clone()));
    }
    let read = |offset: u64, len: u32| host::read(offset, len);
    let mut parts = vec![
        Part::Bytes(file_header(&boundary, "assetData", &name)),
        Part::Stream {
            len: job.size,
            read: &read,
        },
        Part::Bytes(b"\r\n".to_vec()),
    ];
    if let Some((sidecar_name, bytes)) = sidecar {
        parts.push(Part::Bytes(file_header(
            &boundary,
            "sidecarData",
            sidecar_name,
        )));
        parts.push(Part::Bytes(bytes.clone()));
        parts.push(Part::Bytes(b"\r\n".to_vec()));
    }
    // The boundary must not occur in anything sent (the file's own bytes
    // would have to contain their hash; the sidecar and names are checked).
    let in_sidecar = sidecar.is_some_and(|(_, bytes)| {
        bytes
            .windows(boundary.len())
            .any(|w| w == boundary.as_bytes())
    });
    if in_sidecar || fields.iter().any(|(_, v)| v.contains(&boundary)) {
        return Ok(Uploaded::Rejected(
            "its sidecar or name holds the multipart boundary keepsake derives from the file's hash; rename it".into(),
        ));
    }
    let mut tail = String::new();
    for (field, value) in &fields {
        tail.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n"
        ));
    }
    tail.push_str(&format!("--{boundary}--\r\n"));
    parts.push(Part::Bytes(tail.into_bytes()));
    let headers = [
        ("accept", "application/json".to_string()),
        (
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        ),
    ];
    let answer = check(
        "upload",
        server.send(Method::Post, "/assets", &headers, &parts),
    )?;
    match answer.status {
        // 201 created; 200 "duplicate": Immich already had these bytes.
        200 | 201 => {
            let value = answer.json().map_err(StageError::Internal)?;
            value["id"]
                .as_str()
                .map(|id| Uploaded::Asset(id.to_string()))
                .ok_or_else(|| {
                    StageError::Internal(format!("upload answered without an id: {value}"))
                })
        }
        400 => Ok(Uploaded::Rejected(format!(
            "Immich refused the upload: {}",
            answer.message()
        ))),
        status => Err(StageError::Internal(format!(
            "upload answered {status}: {}",
            answer.message()
        ))),
    }
}

fn file_name_of(job: &Job) -> String {
    job.placement
        .as_ref()
        .and_then(|p| p.path.rsplit('/').next().map(str::to_string))
        .unwrap_or_else(|| file_name(job).to_string())
}

/// The XMP sidecar beside the library copy, the name Immich reads first
/// (`IMG.jpg.xmp`, else `IMG.xmp`).
fn sidecar_of(job: &Job, name: &str) -> Option<(String, Vec<u8>)> {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let wanted = [format!("{name}.xmp"), format!("{stem}.xmp")];
    let found = wanted
        .iter()
        .find(|w| job.companions.iter().any(|c| c.eq_ignore_ascii_case(w)))?;
    let companion = job
        .companions
        .iter()
        .find(|c| c.eq_ignore_ascii_case(found))?
        .clone();
    let mut bytes = Vec::new();
    loop {
        let chunk = host::read_companion(&companion, bytes.len() as u64, 1 << 20).ok()?;
        if chunk.is_empty() || bytes.len() > 16 << 20 {
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    Some((companion, bytes))
}

/// A file part's header; quotes and line breaks in names are escaped as
/// browsers do.
fn file_header(boundary: &str, field: &str, name: &str) -> Vec<u8> {
    let escaped = name
        .replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{escaped}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes()
}

/// The capture time as Immich's `fileCreatedAt`; its offset when the file
/// knows it, else the host's (Immich reads the file's own dates anyway).
fn created_at(job: &Job) -> String {
    match &job.capture_time {
        Some(c) => iso(
            &c.local,
            Some(c.offset_minutes.unwrap_or(job.mtime_offset_minutes)),
        ),
        None => iso(&job.mtime, Some(job.mtime_offset_minutes)),
    }
}

fn iso(t: &Datetime, offset_minutes: Option<i16>) -> String {
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.nanosecond / 1_000_000
    );
    match offset_minutes {
        Some(0) => s.push('Z'),
        Some(m) => {
            let sign = if m < 0 { '-' } else { '+' };
            let m = m.unsigned_abs();
            s.push_str(&format!("{sign}{:02}:{:02}", m / 60, m % 60));
        }
        None => s.push('Z'),
    }
    s
}
