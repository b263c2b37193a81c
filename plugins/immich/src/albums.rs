//! Which albums a file joins, from the config's rules, and adding it to them:
//! a missing album is created once, and its id remembered.

use keepsake_sdk::*;
use serde_json::json;
use wasip2::http::types::Method;

use crate::http::Server;
use crate::{check, json_answer};

/// The albums the rules name for this job, in rule order, without repeats.
pub fn names(job: &Job) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        let name = name.trim();
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    };
    if let Some(map) = host::get_option("albums_by_inbox")
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&map)
        && let Some(name) = map.get(&job.inbox).and_then(|v| v.as_str())
    {
        add(name);
    }
    if option_or("album_from_folder", "false") == "true"
        && let Some((folder, _)) = job.relative_path.rsplit_once('/')
    {
        add(folder.rsplit('/').next().unwrap_or(folder));
    }
    if let Some(template) = host::get_option("album_by_date")
        && let Some(capture) = &job.capture_time
    {
        add(&date_name(&template, &capture.local));
    }
    for key in option_or("album_facts", "album").split(',') {
        if let Some(value) = fact(job, key.trim()) {
            add(value);
        }
    }
    if let Some(list) = host::get_option("albums") {
        for name in list.split(',') {
            add(name);
        }
    }
    names
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn date_name(template: &str, t: &Datetime) -> String {
    template
        .replace("{yyyy}", &format!("{:04}", t.year))
        .replace("{year}", &format!("{:04}", t.year))
        .replace("{mm}", &format!("{:02}", t.month))
        .replace("{dd}", &format!("{:02}", t.day))
        .replace(
            "{month}",
            MONTHS
                .get(usize::from(t.month.max(1)) - 1)
                .copied()
                .unwrap_or(""),
        )
}

fn album_key(name: &str) -> String {
    format!("album:{name}")
}

/// Assets wait here, per album, and go in one `PUT /albums/{id}/assets`
/// per album when the host asks the stage to send what it batched (after
/// each pass of placed calls, and before a sweep), or when a queue is full.
const BATCH: usize = 500;
/// The albums with assets waiting (a JSON list of names).
const QUEUED: &str = "album-queues";

fn queue_key(name: &str) -> String {
    format!("album-queue:{name}")
}

fn load(key: &str) -> Vec<String> {
    host::kv_get(key)
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default()
}

fn save(key: &str, list: &[String]) {
    if let Ok(bytes) = serde_json::to_vec(list) {
        host::kv_set(key, &bytes);
    }
}

/// Queue `asset` for the album `name` (the stage's KV keeps the queue, so
/// a crash or an outage loses nothing; adding an asset twice is harmless).
pub fn add(server: &Server, name: &str, asset: &str) -> Result<(), StageError> {
    let key = queue_key(name);
    let mut queue = load(&key);
    if !queue.iter().any(|a| a == asset) {
        queue.push(asset.to_string());
    }
    save(&key, &queue);
    let mut queued = load(QUEUED);
    if !queued.iter().any(|n| n == name) {
        queued.push(name.to_string());
        save(QUEUED, &queued);
    }
    // A full queue goes now, unless its last send failed lately: then it
    // waits for the pass's send, not one try per file.
    let failed_key = format!("album-failed-at:{name}");
    let failed_at: i64 = host::kv_get(&failed_key)
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if queue.len() >= BATCH && host::now() - failed_at > 600 {
        if let Err(e) = send(server, name) {
            host::kv_set(&failed_key, host::now().to_string().as_bytes());
            host::log(LogLevel::Warn, &format!("album {name:?}: {e:?}"));
        } else {
            host::kv_set(&failed_key, b"");
        }
    }
    Ok(())
}

/// Send every album's queue; one that fails does not hold back the others
/// (the first error is returned once all were tried).
pub fn send_all(server: &Server) -> Result<(), StageError> {
    let mut first = None;
    for name in load(QUEUED) {
        match send(server, &name) {
            Ok(()) => {}
            // Immich is down or refuses the key: one request, not one per
            // album.
            Err(e @ StageError::Transient(_)) => return Err(e),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// One album's queue in one request, creating the album when Immich has
/// none by that name.
fn send(server: &Server, name: &str) -> Result<(), StageError> {
    let key = queue_key(name);
    let queue = load(&key);
    if !queue.is_empty() {
        put(server, name, &queue)?;
    }
    host::kv_set(&key, b"[]");
    let mut queued = load(QUEUED);
    queued.retain(|n| n != name);
    save(QUEUED, &queued);
    Ok(())
}

fn put(server: &Server, name: &str, assets: &[String]) -> Result<(), StageError> {
    for attempt in 0..2 {
        let id = album_id(server, name)?;
        let body = json!({ "ids": assets });
        let answer = check(
            "album add",
            server.json(Method::Put, &format!("/albums/{id}/assets"), Some(&body)),
        )?;
        match answer.status {
            200 => {
                // Per asset: "duplicate" is fine; an asset Immich no longer
                // has (or this key may not see) is named, the rest went.
                let value = answer.json().map_err(StageError::Internal)?;
                for result in value.as_array().into_iter().flatten() {
                    if result["success"] != true && result["error"] != "duplicate" {
                        host::log(
                            LogLevel::Warn,
                            &format!(
                                "Immich would not add asset {} to the album {name:?}: {}",
                                result["id"].as_str().unwrap_or("?"),
                                result["error"].as_str().unwrap_or("unknown")
                            ),
                        );
                    }
                }
                return Ok(());
            }
            // The album was deleted in Immich since: look it up again.
            400 | 404 if attempt == 0 => {
                host::kv_set(&album_key(name), b"");
            }
            status => {
                return Err(StageError::Internal(format!(
                    "adding to the album {name:?} answered {status}: {}",
                    answer.message()
                )));
            }
        }
    }
    Err(StageError::Internal(format!(
        "the album {name:?} keeps vanishing"
    )))
}

fn album_id(server: &Server, name: &str) -> Result<String, StageError> {
    if let Some(id) = host::kv_get(&album_key(name)).and_then(|v| String::from_utf8(v).ok())
        && !id.is_empty()
    {
        return Ok(id);
    }
    // Album names are not unique in Immich: take the oldest of that name.
    let value = json_answer("listing albums", server.json(Method::Get, "/albums", None))?;
    let mut found: Option<(String, String)> = None;
    for album in value.as_array().into_iter().flatten() {
        let (Some(album_name), Some(id)) = (album["albumName"].as_str(), album["id"].as_str())
        else {
            continue;
        };
        let created = album["createdAt"].as_str().unwrap_or("").to_string();
        if album_name == name && found.as_ref().is_none_or(|(c, _)| created < *c) {
            found = Some((created, id.to_string()));
        }
    }
    if let Some((_, id)) = found {
        host::kv_set(&album_key(name), id.as_bytes());
        return Ok(id);
    }
    let value = json_answer(
        &format!("creating the album {name:?}"),
        server.json(Method::Post, "/albums", Some(&json!({ "albumName": name }))),
    )?;
    let id = value["id"]
        .as_str()
        .ok_or_else(|| {
            StageError::Internal(format!("album create answered without an id: {value}"))
        })?
        .to_string();
    host::kv_set(&album_key(name), id.as_bytes());
    Ok(id)
}
