//! The write-back sweep: what the family did in Immich (albums, favorites,
//! descriptions, ratings, edited dates and places), read back so the host
//! can keep it in each file's XMP sidecar.
//!
//! Immich 2.4.1 moves an asset's `updatedAt` for a favorite, not for album
//! changes, nor for edits of the exif row (description, rating, date,
//! place). So:
//! - albums are read through the albums: `GET /albums`, then only the
//!   albums whose `updatedAt` moved since the last sweep;
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
use crate::json_answer;

/// `search/metadata`'s largest page.
const PAGE: u32 = 1000;
/// Pages a sweep reads at most (a million assets); a bound, not a limit met.
const MAX_PAGES: u32 = 1000;

pub fn job_of_key(asset_id: &str) -> String {
    format!("job-of:{asset_id}")
}

fn job_of(asset_id: &str) -> Option<u64> {
    host::kv_get(&job_of_key(asset_id))
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

pub fn sweep(server: &Server, request: &SweepRequest) -> Result<Vec<RemoteChange>, StageError> {
    let mut changes = albums(server, request.full)?;
    changes.extend(assets(server, request.full)?);
    Ok(changes)
}

/// Albums whose `updatedAt` moved (every album on a full sweep), whole, and
/// the albums that are gone.
fn albums(server: &Server, full: bool) -> Result<Vec<RemoteChange>, StageError> {
    let listed = json_answer("list albums", server.json(Method::Get, "/albums", None))?;
    let listed = listed.as_array().cloned().unwrap_or_default();
    let seen: BTreeMap<String, String> = host::kv_get("albums-seen")
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default();
    let mut now_seen = BTreeMap::new();
    let mut changes = Vec::new();
    for album in &listed {
        let (Some(id), Some(updated)) = (album["id"].as_str(), album["updatedAt"].as_str()) else {
            continue;
        };
        now_seen.insert(id.to_string(), updated.to_string());
        if !full && seen.get(id).is_some_and(|s| s == updated) {
            continue;
        }
        let detail = json_answer(
            "read an album",
            server.json(Method::Get, &format!("/albums/{id}"), None),
        )?;
        let mut members: Vec<u64> = detail["assets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|asset| asset["id"].as_str().and_then(job_of))
            .collect();
        members.sort_unstable();
        members.dedup();
        changes.push(RemoteChange::Album(RemoteAlbum {
            id: id.to_string(),
            name: detail["albumName"]
                .as_str()
                .or(album["albumName"].as_str())
                .unwrap_or_default()
                .to_string(),
            members,
        }));
    }
    for id in seen.keys() {
        if !now_seen.contains_key(id) {
            changes.push(RemoteChange::AlbumGone(id.clone()));
        }
    }
    if let Ok(bytes) = serde_json::to_vec(&now_seen) {
        host::kv_set("albums-seen", &bytes);
    }
    Ok(changes)
}

/// keepsake's assets updated since the last sweep (all of them on a full
/// sweep), as Immich has them now.
fn assets(server: &Server, full: bool) -> Result<Vec<RemoteChange>, StageError> {
    let after = host::kv_get("updated-after").and_then(|v| String::from_utf8(v).ok());
    let mut newest = after.clone().unwrap_or_default();
    let mut changes = Vec::new();
    let mut page = 1;
    while page <= MAX_PAGES {
        let mut query = json!({ "withExif": true, "size": PAGE, "page": page });
        if !full && let Some(after) = &after {
            query["updatedAfter"] = json!(after);
        }
        let answer = json_answer(
            "search assets",
            server.json(Method::Post, "/search/metadata", Some(&query)),
        )?;
        let found = &answer["assets"];
        for asset in found["items"].as_array().into_iter().flatten() {
            if let Some(updated) = asset["updatedAt"].as_str()
                && updated > newest.as_str()
            {
                newest = updated.to_string();
            }
            if let Some(change) = remote_asset(asset) {
                changes.push(RemoteChange::Asset(change));
            }
        }
        match found["nextPage"].as_str().and_then(|p| p.parse().ok()) {
            Some(next) if next > page => page = next,
            _ => break,
        }
    }
    if !newest.is_empty() {
        host::kv_set("updated-after", newest.as_bytes());
    }
    Ok(changes)
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
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn datetime_of(seconds: i64) -> Datetime {
    let days = seconds.div_euclid(86_400);
    let rem = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
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
