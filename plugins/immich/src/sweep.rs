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
use crate::json_answer;

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

pub fn sweep(server: &Server, request: &SweepRequest) -> Result<Vec<RemoteChange>, StageError> {
    let mut changes = albums(server, request.full)?;
    changes.extend(assets(server, request.full)?);
    Ok(changes)
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
    let seen: BTreeMap<String, String> = host::kv_get("albums-seen")
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default();
    let mut now_seen = BTreeMap::new();
    let mut to_read = Vec::new();
    for album in listed {
        let (Some(id), Some(updated)) = (album["id"].as_str(), album["updatedAt"].as_str()) else {
            continue;
        };
        let mark = format!("{updated}|{}", album["assetCount"]);
        if full || seen.get(id) != Some(&mark) {
            to_read.push((
                id.to_string(),
                album["albumName"].as_str().unwrap_or_default().to_string(),
            ));
        }
        now_seen.insert(id.to_string(), mark);
    }
    let gone: Vec<&String> = seen
        .keys()
        .filter(|id| !now_seen.contains_key(*id))
        .collect();
    // An Immich that lost most of the albums keepsake knew at once was
    // rebuilt, or this is another server or user: writing that back would
    // strip every sidecar of its albums. Stop and say what to do.
    if gone.len() >= 2 && gone.len() * 2 > seen.len() {
        return Err(StageError::Internal(format!(
            "Immich no longer lists {} of the {} albums keepsake knew: if Immich was rebuilt or the API key changed, run `keepsake immich sync --all` (the sidecars keep the albums and bring them back); nothing was changed",
            gone.len(),
            seen.len()
        )));
    }
    let mut changes = Vec::new();
    for (id, name) in to_read {
        let members = search(server, Some(&id), None)?
            .iter()
            .filter_map(|asset| asset["id"].as_str().and_then(job_of))
            .collect::<std::collections::BTreeSet<u64>>();
        changes.push(RemoteChange::Album(RemoteAlbum {
            id,
            name,
            members: members.into_iter().collect(),
        }));
    }
    for id in gone {
        changes.push(RemoteChange::AlbumGone(id.clone()));
    }
    if let Ok(bytes) = serde_json::to_vec(&now_seen) {
        host::kv_set("albums-seen", &bytes);
    }
    Ok(changes)
}

/// keepsake's assets updated since the last sweep (all of them on a full
/// sweep), as Immich has them now. Assets Immich has not read the metadata
/// of yet are left for a later sweep.
fn assets(server: &Server, full: bool) -> Result<Vec<RemoteChange>, StageError> {
    let after = host::kv_get("updated-after").and_then(|v| String::from_utf8(v).ok());
    let after = if full { None } else { after };
    let found = search(server, None, after.as_deref())?;
    let newest = found
        .iter()
        .filter_map(|asset| asset["updatedAt"].as_str())
        .max()
        .map(str::to_string);
    if let Some(newest) = newest
        && after.as_deref().is_none_or(|a| newest.as_str() > a)
    {
        host::kv_set("updated-after", newest.as_bytes());
    }
    Ok(found
        .iter()
        .filter(|asset| asset["hasMetadata"] != false)
        .filter_map(remote_asset)
        .map(RemoteChange::Asset)
        .collect())
}

/// Every asset `POST /search/metadata` finds, on the timeline and archived:
/// in an album, or updated after a time. Pages of 1000, up to `updatedBefore`
/// the sweep's start, so what changes meanwhile waits for the next sweep
/// instead of shifting the pages.
fn search(
    server: &Server,
    album: Option<&str>,
    updated_after: Option<&str>,
) -> Result<Vec<Value>, StageError> {
    let before = iso_utc(host::now() + 1);
    let mut out = Vec::new();
    for visibility in ["timeline", "archive"] {
        let mut page = 1;
        loop {
            let mut query = json!({
                "withExif": true,
                "size": PAGE,
                "page": page,
                "visibility": visibility,
                "updatedBefore": before,
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
            out.extend(items.iter().cloned());
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
    Ok(out)
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
