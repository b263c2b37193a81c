//! Immich and the other services files go to once they are in the
//! library. The uploads and album writes are the `immich` stage's
//! (sandboxed, `placed` phase): [`placed`] runs that phase's queue after an
//! ingest, [`writeback`] the sweep that brings what the family did in
//! Immich into the sidecars. This file is `keepsake immich status|sync`:
//! how the stage is doing, from the ledger, and who the server is.

pub mod placed;
pub mod writeback;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::config::{Config, ImmichConfig};
use crate::ledger::{self, Ledger, LedgerError};

/// The stage's calls in the ledger, by state.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    /// In Immich (uploaded, or found there by checksum).
    pub uploaded: u64,
    /// Of those, added to at least one album.
    pub albumed: u64,
    /// Immich would not take them (e.g. an unsupported format).
    pub rejected: u64,
    pub pending: u64,
    /// Waiting for Immich (down, busy, or a Live Photo's video first).
    pub deferred: u64,
    pub failed: u64,
    /// Requests sent, all calls together.
    pub requests: u64,
    /// The newest reason a call is waiting or failed.
    pub last_error: Option<String>,
    /// When the next deferred call runs (Unix seconds).
    pub next_try_at: Option<i64>,
    /// The write-back: when the last sweep and the last full one ran (Unix
    /// seconds), why the last one failed, and sidecars still behind.
    pub last_pull_at: Option<i64>,
    pub last_full_pull_at: Option<i64>,
    pub last_pull_error: Option<String>,
    pub sidecars_behind: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub url: String,
    /// "2.4.1" when the server answered with the key.
    pub server_version: Option<String>,
    /// Why not, when it did not.
    pub connection_error: Option<String>,
    pub counts: Counts,
}

pub fn counts(ledger: &Ledger) -> Result<Counts, LedgerError> {
    ledger.read(|c| {
        let mut counts = Counts::default();
        let mut newest_error = i64::MIN;
        for call in ledger::immich::calls(c)? {
            let ledger::immich::ImmichCall {
                state,
                facts,
                requests,
                last_error: error,
                wake_at,
                updated_at: updated,
            } = call;
            counts.requests += requests;
            let facts: serde_json::Value = serde_json::from_str(&facts).unwrap_or_default();
            match state.as_str() {
                "done" if facts.get("immich.rejected").is_some() => counts.rejected += 1,
                "done" => {
                    counts.uploaded += 1;
                    if facts.get("immich.albums").is_some() {
                        counts.albumed += 1;
                    }
                }
                "pending" => counts.pending += 1,
                "deferred" => {
                    counts.deferred += 1;
                    if let Some(at) = wake_at {
                        counts.next_try_at = Some(counts.next_try_at.map_or(at, |n| n.min(at)));
                    }
                }
                _ => counts.failed += 1,
            }
            if state != "done"
                && let Some(error) = error
                && updated >= newest_error
            {
                newest_error = updated;
                counts.last_error = Some(error);
            }
        }
        if let Some((at, full, error)) = ledger::immich::sweep(c)? {
            counts.last_pull_at = at;
            counts.last_full_pull_at = full;
            counts.last_pull_error = error;
        }
        counts.sidecars_behind = ledger::immich::sidecars_behind(c)?;
        Ok(counts)
    })
}

/// Immich was rebuilt: forget the asset and album ids the stage kept (its
/// KV) and what the sweeps read of albums, and queue every file again.
/// The sidecars, and what keepsake wrote into them, stay: the next upload
/// reads albums and favorites back from them. Returns the files queued.
pub fn forget(ledger: &Ledger) -> Result<usize, LedgerError> {
    ledger.write(|tx| ledger::immich::forget(tx))
}

pub fn status(config: &Config, immich: &ImmichConfig, ledger: Option<&Ledger>) -> Status {
    let counts = ledger
        .map(|l| counts(l).unwrap_or_default())
        .unwrap_or_default();
    let (server_version, connection_error) = match probe(immich) {
        Ok(version) => (Some(version), None),
        Err(e) => (None, Some(e)),
    };
    let _ = config;
    Status {
        url: immich.url.clone(),
        server_version,
        connection_error,
        counts,
    }
}

/// `GET /api/server/version`, then `GET /api/users/me` with the key.
fn probe(immich: &ImmichConfig) -> Result<String, String> {
    let key = immich.api_key()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (status, body) = get(immich, "/server/version", None).await?;
        if status != 200 {
            return Err(format!("GET /api/server/version answered {status}"));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("/api/server/version is not JSON ({e}): is {} Immich?", immich.url))?;
        let version = format!("{}.{}.{}", v["major"], v["minor"], v["patch"]);
        let (status, body) = get(immich, "/users/me", Some(&key)).await?;
        match status {
            200 => Ok(version),
            401 | 403 => Err(format!(
                "Immich {version} refused the API key (HTTP {status}: {}); check [immich] api_key_file",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
            other => Err(format!("GET /api/users/me answered {other}")),
        }
    })
}

async fn get(immich: &ImmichConfig, path: &str, key: Option<&str>) -> Result<(u16, Bytes), String> {
    let uri = format!("{}/api{path}", immich.url);
    let mut request = http::Request::get(&uri).header("accept", "application/json");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let request = request
        .body(
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never: std::convert::Infallible| match never {}),
        )
        .map_err(|e| format!("{uri}: {e}"))?;
    let options = wasmtime_wasi_http::RequestOptions {
        connect_timeout: Some(Duration::from_secs(10)),
        first_byte_timeout: Some(Duration::from_secs(30)),
        between_bytes_timeout: Some(Duration::from_secs(30)),
    };
    let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options))
        .await
        .map_err(|e| format!("cannot reach {}: {e}", immich.url))?;
    let connection = tokio::spawn(io);
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{uri}: {e}"))?
        .to_bytes();
    connection.abort();
    Ok((status, body))
}
