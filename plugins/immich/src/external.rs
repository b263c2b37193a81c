//! `mode = "external-library"`: the keepsake library is an Immich external
//! library. Immich finds the files itself when it scans; this stage asks for
//! a scan, then finds each file's asset by its path and waits, a bounded
//! number of times, until Immich has indexed it.
//!
//! Two things of the real server matter here. An external asset's checksum
//! is the SHA-1 of `"path:" + originalPath`, not of the bytes, so it is
//! found by path, never by content. And the `originalPath` search is a
//! case-insensitive substring match in which `_` and `%` are wildcards, so
//! the answers are filtered for the exact path.

use keepsake_sdk::*;
use serde_json::json;
use wasip2::http::types::Method;

use crate::http::Server;
use crate::{Uploaded, check, json_answer, kv_count};

/// Looks (10 s apart, longer when the host backs off) before giving up on
/// one file.
const MAX_LOOKS: u32 = 120;
/// A scan is asked for at most this often (option `scan_seconds`).
const SCAN_EVERY_SECS: i64 = 30;

pub fn find(server: &Server, job: &Job) -> Result<Uploaded, StageError> {
    let library = host::get_option("library_id").ok_or_else(|| {
        StageError::Internal(
            "mode \"external-library\" needs library_id: the id of the Immich external library (Administration → External libraries)".into(),
        )
    })?;
    let path = immich_path(job)?;
    let looks_key = format!("looks:{}", job.id);
    let looks = kv_count(&looks_key);
    if looks == 0 {
        request_scan(server, &library)?;
    }
    let body =
        json!({ "originalPath": path, "libraryId": library, "size": 100, "withDeleted": false });
    let value = json_answer(
        &format!("searching {path}"),
        server.json(Method::Post, "/search/metadata", Some(&body)),
    )?;
    let found = value["assets"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["originalPath"].as_str() == Some(path.as_str()))
        .and_then(|a| a["id"].as_str());
    if let Some(id) = found {
        host::kv_set(&looks_key, b"");
        host::kv_set(&path_key(job.id), path.as_bytes());
        return Ok(Uploaded::Asset(id.to_string()));
    }
    if looks + 1 >= MAX_LOOKS {
        // A later `immich sync` starts over, with a scan.
        host::kv_set(&looks_key, b"");
        return Err(StageError::Internal(format!(
            "Immich has not indexed {path} after {MAX_LOOKS} looks; check that the external library {library} imports the keepsake library at this path (option library_path)"
        )));
    }
    host::kv_set(&looks_key, (looks + 1).to_string().as_bytes());
    if looks > 0 && looks.is_multiple_of(8) {
        request_scan(server, &library)?;
    }
    Ok(Uploaded::Waiting(format!(
        "waiting for Immich to index {path} (look {})",
        looks + 1
    )))
}

fn path_key(job: u64) -> String {
    format!("path:{job}")
}

/// Whether the asset remembered for the job is still at the job's path
/// (a file that moved is a new asset for Immich). Without a record of the
/// path it was found at, Immich is asked.
pub fn still_at(server: &Server, job: &Job, asset_id: &str) -> Result<bool, StageError> {
    let now = immich_path(job)?;
    if let Some(found) = host::kv_get(&path_key(job.id)) {
        return Ok(found == now.as_bytes());
    }
    let answer = check(
        "look up the asset",
        server.json(Method::Get, &format!("/assets/{asset_id}"), None),
    )?;
    let here = answer.status == 200
        && answer
            .json()
            .is_ok_and(|a| a["originalPath"].as_str() == Some(now.as_str()));
    if here {
        host::kv_set(&path_key(job.id), now.as_bytes());
    }
    Ok(here)
}

/// Ask Immich to scan the library, unless asked within the last 30 s.
fn request_scan(server: &Server, library: &str) -> Result<(), StageError> {
    let now = host::now();
    let last: i64 = host::kv_get("scan-asked-at")
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let every = host::get_option("scan_seconds")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s >= 1)
        .unwrap_or(SCAN_EVERY_SECS);
    if now - last < every {
        return Ok(());
    }
    let answer = check(
        "scan",
        server.json(Method::Post, &format!("/libraries/{library}/scan"), None),
    )?;
    match answer.status {
        200..=299 => {
            host::kv_set("scan-asked-at", now.to_string().as_bytes());
            Ok(())
        }
        status => Err(StageError::Internal(format!(
            "asking Immich to scan library {library} answered {status}: {}",
            answer.message()
        ))),
    }
}

/// The file's path as Immich sees it.
fn immich_path(job: &Job) -> Result<String, StageError> {
    let placement = job
        .placement
        .as_ref()
        .ok_or_else(|| StageError::Internal("the job has no placement".into()))?;
    let (own, theirs) = if placement.root == "archive" {
        ("archive_root", "archive_path")
    } else {
        ("library_root", "library_path")
    };
    let root = host::get_option(theirs)
        .or_else(|| host::get_option(own))
        .ok_or_else(|| {
            StageError::Internal(format!("no {theirs} for root {:?}", placement.root))
        })?;
    Ok(format!("{}/{}", root.trim_end_matches('/'), placement.path))
}
