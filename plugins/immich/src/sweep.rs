//! The write-back sweep: what the family did in Immich (albums, favorites,
//! descriptions, ratings, edited dates and places), read back so the host
//! can keep it in each file's XMP sidecar.
//!
//! Immich 2.4.1 moves an asset's `updatedAt` for a favorite, not for album
//! changes, nor for edits of the exif row (description, rating, date,
//! place); an album's `updatedAt` moves when assets are added, not when
//! they are removed. So:
//! - albums are read through the albums: `GET /albums`, then the members
//!   (`POST /search/metadata` by `albumIds`) of the albums whose
//!   `updatedAt` or `assetCount` moved since the last sweep;
//! - assets are read with `POST /search/metadata`: only those updated since
//!   the last sweep, or all of them when the host asks for a full sweep
//!   (`keepsake immich pull`, and once a day), which is what finds edits
//!   of the exif row.
//!
//! Only keepsake's assets are reported, by job id (`job-of:<asset id>` in
//! the stage's KV, written when a file is uploaded or found).

use std::collections::BTreeMap;

use keepsake_sdk::*;
use serde_json::{Value, json};
use wasip2::http::types::Method;

use crate::http::Server;
use crate::{check, json_answer};

/// `search/metadata`'s largest page.
const PAGE: u32 = 1000;
/// Pages a search reads at most (a million assets); a bound, not a limit met.
const MAX_PAGES: u32 = 1000;

pub fn job_of_key(asset_id: &str) -> String {
    format!("job-of:{asset_id}")
}

fn job_of(asset_id: &str) -> Option<u64> {
    host::kv_get(&job_of_key(asset_id))
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

/// `read_albums` is false while album additions still wait to be sent: the
/// albums would be read without them, and their members' sidecars lose
/// them until the next sweep.
pub fn sweep(
    server: &Server,
    request: &SweepRequest,
    read_albums: bool,
) -> Result<Vec<RemoteChange>, StageError> {
    let mut changes = if read_albums {
        albums(server, request.full)?
    } else {
        Vec::new()
    };
    changes.extend(assets(server, request.full)?);
    Ok(changes)
}

/// What the last sweep saw of an album: its `updatedAt` and `assetCount`,
/// and one member, to tell a deleted album from a rebuilt Immich.
struct Seen {
    mark: String,
    sample: Option<String>,
}

/// `albums-seen` in the KV: `{ id: [mark, sample or null] }`.
fn load_seen() -> BTreeMap<String, Seen> {
    let value: Value = host::kv_get("albums-seen")
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or(Value::Null);
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, v)| {
            Some((
                id.clone(),
                Seen {
                    mark: v[0].as_str()?.to_string(),
                    sample: v[1].as_str().map(str::to_string),
                },
            ))
        })
        .collect()
}

fn save_seen(seen: &BTreeMap<String, Seen>) {
    let value: serde_json::Map<String, Value> = seen
        .iter()
        .map(|(id, s)| (id.clone(), json!([s.mark, s.sample])))
        .collect();
    if let Ok(bytes) = serde_json::to_vec(&value) {
        host::kv_set("albums-seen", &bytes);
    }
}

/// Albums whose `updatedAt` or `assetCount` moved (Immich moves an
/// album's `updatedAt` when assets are added, not when they are removed),
/// every album on a full sweep; their members read whole; and the albums
/// that are gone.
fn albums(server: &Server, full: bool) -> Result<Vec<RemoteChange>, StageError> {
    let listed = json_answer("list albums", server.json(Method::Get, "/albums", None))?;
    let listed = listed.as_array().ok_or_else(|| {
        StageError::Internal(format!(
            "GET /albums answered something else than a list: {listed}"
        ))
    })?;
    let seen = load_seen();
    let mut now_seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut changes = Vec::new();
    for album in listed {
        let (Some(id), Some(updated)) = (album["id"].as_str(), album["updatedAt"].as_str()) else {
            continue;
        };
        let mark = format!("{updated}|{}", album["assetCount"]);
        let before = seen.get(id);
        if !full && let Some(before) = before.filter(|b| b.mark == mark) {
            now_seen.insert(
                id.to_string(),
                Seen {
                    mark,
                    sample: before.sample.clone(),
                },
            );
            continue;
        }
        let mut members = std::collections::BTreeSet::new();
        let mut sample = None;
        search(server, Some(id), None, &mut |asset| {
            if let Some(asset_id) = asset["id"].as_str() {
                sample.get_or_insert_with(|| asset_id.to_string());
                if let Some(job) = job_of(asset_id) {
                    members.insert(job);
                }
            }
        })?;
        changes.push(RemoteChange::Album(RemoteAlbum {
            id: id.to_string(),
            name: album["albumName"].as_str().unwrap_or_default().to_string(),
            members: members.into_iter().collect(),
        }));
        now_seen.insert(id.to_string(), Seen { mark, sample });
    }
    // An album that is gone while its assets are gone too means Immich was
    // rebuilt (or the key is another user's): writing that back would
    // strip the sidecars of their albums. Stop and say what to do.
    for (id, before) in &seen {
        if now_seen.contains_key(id) {
            continue;
        }
        if let Some(sample) = &before.sample {
            let answer = check(
                "look up an asset of a deleted album",
                server.json(Method::Get, &format!("/assets/{sample}"), None),
            )?;
            if answer.status != 200 {
                return Err(StageError::Internal(format!(
                    "Immich has neither the album {id} nor its asset {sample} any more: if Immich was rebuilt or the API key is another user's, run `keepsake immich sync --all` (the sidecars keep the albums and bring them back); no sidecar was changed"
                )));
            }
        }
        changes.push(RemoteChange::AlbumGone(id.clone()));
    }
    save_seen(&now_seen);
    Ok(changes)
}

/// keepsake's assets updated since the last sweep (all of them on a full
/// sweep), as Immich has them now. An asset whose metadata Immich has not
/// read yet (no capture date) waits for a later sweep: the cursor stays
/// before it.
fn assets(server: &Server, full: bool) -> Result<Vec<RemoteChange>, StageError> {
    let after = host::kv_get("updated-after").and_then(|v| String::from_utf8(v).ok());
    let after = if full { None } else { after };
    let mut newest: Option<String> = None;
    let mut oldest_waiting: Option<String> = None;
    let mut changes = Vec::new();
    search(server, None, after.as_deref(), &mut |asset| {
        let Some(updated) = asset["updatedAt"].as_str() else {
            return;
        };
        if asset["exifInfo"]["dateTimeOriginal"].is_null() {
            if oldest_waiting.as_deref().is_none_or(|o| updated < o) {
                oldest_waiting = Some(updated.to_string());
            }
            return;
        }
        if newest.as_deref().is_none_or(|n| updated > n) {
            newest = Some(updated.to_string());
        }
        if let Some(change) = remote_asset(asset) {
            changes.push(RemoteChange::Asset(change));
        }
    })?;
    // A few seconds back: an asset updated while this sweep read (offset
    // pages) is read again next time rather than missed.
    let cursor = match (newest, oldest_waiting) {
        (_, Some(waiting)) => parse_utc(&waiting).map(|t| iso_utc(t - 1)),
        (Some(newest), None) => parse_utc(&newest).map(|t| iso_utc(t - 5)),
        (None, None) => None,
    };
    if let Some(cursor) = cursor
        && after.as_deref().is_none_or(|a| cursor.as_str() > a)
    {
        host::kv_set("updated-after", cursor.as_bytes());
    }
    Ok(changes)
}

/// Every asset `POST /search/metadata` finds, on the timeline and archived
/// (in an album, or updated after a time), handed to `each` a page of 1000
/// at a time so a large library is never held whole.
fn search(
    server: &Server,
    album: Option<&str>,
    updated_after: Option<&str>,
    each: &mut dyn FnMut(&Value),
) -> Result<(), StageError> {
    for visibility in ["timeline", "archive"] {
        let mut page = 1;
        loop {
            let mut query = json!({
                "withExif": album.is_none(),
                "size": PAGE,
                "page": page,
                "visibility": visibility,
            });
            if let Some(album) = album {
                query["albumIds"] = json!([album]);
            }
            if let Some(after) = updated_after {
                query["updatedAfter"] = json!(after);
            }
            let answer = json_answer(
                "search assets",
                server.json(Method::Post, "/search/metadata", Some(&query)),
            )?;
            let items = answer["assets"]["items"].as_array().ok_or_else(|| {
                StageError::Internal("search/metadata answered without assets.items".into())
            })?;
            items.iter().for_each(&mut *each);
            match answer["assets"]["nextPage"]
                .as_str()
                .and_then(|p| p.parse().ok())
            {
                Some(next) if next > page && next <= MAX_PAGES => page = next,
                Some(_) => {
                    return Err(StageError::Internal(format!(
                        "search/metadata has more than {MAX_PAGES} pages; not read"
                    )));
                }
                None => break,
            }
        }
    }
    Ok(())
}

/// `2024-07-01T10:00:00.000Z` of seconds since the epoch.
fn iso_utc(seconds: i64) -> String {
    let d = datetime_of(seconds);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        d.year, d.month, d.day, d.hour, d.minute, d.second
    )
}

fn remote_asset(asset: &Value) -> Option<RemoteAsset> {
    let job_id = job_of(asset["id"].as_str()?)?;
    let exif = &asset["exifInfo"];
    let rating = exif["rating"]
        .as_f64()
        .map(|r| r.round().clamp(-1.0, 5.0) as i8);
    let description = exif["description"]
        .as_str()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let location = match (exif["latitude"].as_f64(), exif["longitude"].as_f64()) {
        (Some(latitude), Some(longitude)) if latitude.abs() <= 90.0 && longitude.abs() <= 180.0 => {
            Some(Location {
                latitude,
                longitude,
            })
        }
        _ => None,
    };
    let taken = exif["dateTimeOriginal"]
        .as_str()
        .and_then(parse_utc)
        .map(|utc| {
            taken(
                utc,
                asset["localDateTime"].as_str().and_then(parse_utc),
                exif,
            )
        });
    Some(RemoteAsset {
        job_id,
        favorite: asset["isFavorite"].as_bool().unwrap_or(false),
        rating,
        description,
        taken,
        location,
    })
}

/// The capture time: Immich keeps the instant (`dateTimeOriginal`, UTC) and
/// the wall clock where it was taken (`localDateTime`, written as if UTC);
/// their difference is the offset, when Immich knows the time zone.
fn taken(utc: i64, local: Option<i64>, exif: &Value) -> CaptureTime {
    let offset = match (local, exif["timeZone"].as_str()) {
        (Some(local), Some(_)) => {
            let minutes = (local - utc) / 60;
            (minutes.abs() <= 18 * 60).then_some(minutes as i16)
        }
        _ => None,
    };
    let wall = utc + i64::from(offset.unwrap_or(0)) * 60;
    CaptureTime {
        local: datetime_of(wall),
        offset_minutes: offset,
        source: "immich".into(),
        confidence: Confidence::High,
    }
}

/// Seconds since the epoch of `2024-07-01T10:00:00.000Z` (or `+02:00`).
fn parse_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> { text.get(from..from + len)?.parse().ok() };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        rest = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" => 0,
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone = &zone[1..];
            let hours: i64 = zone.get(0..2)?.parse().ok()?;
            let minutes: i64 = zone.get(3..5).and_then(|m| m.parse().ok()).unwrap_or(0);
            sign * (hours * 60 + minutes) * 60
        }
    };
    Some(
        calendar::days_from_civil(year as i32, month as u32, day as u32) * 86_400
            + hour * 3600
            + minute * 60
            + second
            - offset,
    )
}

fn datetime_of(seconds: i64) -> Datetime {
    let (year, month, day) = calendar::civil_from_days(seconds.div_euclid(86_400));
    let rem = seconds.rem_euclid(86_400);
    Datetime {
        year: year.clamp(0, 9999) as u16,
        month: month as u8,
        day: day as u8,
        hour: (rem / 3600) as u8,
        minute: (rem % 3600 / 60) as u8,
        second: (rem % 60) as u8,
        nanosecond: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_wall_clocks() {
        assert_eq!(parse_utc("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_utc("2024-07-01T12:00:00+02:00"),
            parse_utc("2024-07-01T10:00:00Z")
        );
        assert_eq!(parse_utc("2024-02-30"), None);
        let t = parse_utc("2024-02-29T23:59:58.123Z").unwrap();
        let d = datetime_of(t);
        assert_eq!(
            (d.year, d.month, d.day, d.hour, d.minute, d.second),
            (2024, 2, 29, 23, 59, 58)
        );
        let exif = json!({ "timeZone": "Europe/Berlin" });
        let c = taken(t, Some(t + 3600), &exif);
        assert_eq!(
            (c.offset_minutes, c.local.day, c.local.hour),
            (Some(60), 1, 0)
        );
        assert_eq!(taken(t, Some(t + 3600), &json!({})).offset_minutes, None);
    }
}
