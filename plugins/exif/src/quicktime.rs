//! Dates in QuickTime / MP4 / 3GP files, read from the atom tree with a few
//! small reads: the movie header's CreateDate (UTC, seconds since 1904), the
//! Apple `com.apple.quicktime.creationdate` key and the `©day` user data
//! (local time with an offset).

use crate::source::Budgeted;
use crate::time::{Stamp, parse_datetime};

/// Seconds from 1904-01-01 (QuickTime's epoch) to 1970-01-01.
const QT_EPOCH_OFFSET: i64 = 2_082_844_800;
/// No file has more boxes at one level than this; a loop is an attack.
const MAX_BOXES: usize = 4096;
/// The largest metadata box read whole.
const MAX_META: u64 = 256 << 10;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VideoDates {
    /// `com.apple.quicktime.creationdate`: local time, usually with offset.
    pub keys_creation: Option<(Stamp, Option<i16>)>,
    /// `©day` user data.
    pub user_day: Option<(Stamp, Option<i16>)>,
    /// `mvhd` creation time, UTC; `None` when 0 (unset).
    pub create_utc: Option<Stamp>,
    pub make: Option<String>,
    pub model: Option<String>,
    /// `com.apple.quicktime.content.identifier`: a Live Photo video's link
    /// to its still (the still's Apple MediaGroupUUID).
    pub content_id: Option<String>,
}

struct BoxHeader {
    kind: [u8; 4],
    /// Offset of the payload.
    body: u64,
    /// End of the box.
    end: u64,
}

fn header_at(bytes: &Budgeted<'_>, at: u64, limit: u64) -> Option<BoxHeader> {
    let head = bytes.read_at(at, 16).ok()?;
    if head.len() < 8 {
        return None;
    }
    let size32 = u32::from_be_bytes(head[..4].try_into().ok()?) as u64;
    let kind: [u8; 4] = head[4..8].try_into().ok()?;
    let (size, header_len) = match size32 {
        0 => (limit.checked_sub(at)?, 8),
        1 => (u64::from_be_bytes(head.get(8..16)?.try_into().ok()?), 16),
        n => (n, 8),
    };
    if size < header_len || at.checked_add(size)? > limit {
        return None;
    }
    Some(BoxHeader {
        kind,
        body: at + header_len,
        end: at + size,
    })
}

/// The children of a container between `start` and `end`.
fn children(bytes: &Budgeted<'_>, start: u64, end: u64) -> Vec<BoxHeader> {
    let mut out = Vec::new();
    let mut at = start;
    while at + 8 <= end && out.len() < MAX_BOXES {
        let Some(header) = header_at(bytes, at, end) else {
            break;
        };
        at = header.end;
        out.push(header);
    }
    out
}

fn body(bytes: &Budgeted<'_>, header: &BoxHeader) -> Option<Vec<u8>> {
    let len = header.end - header.body;
    if len > MAX_META {
        return None;
    }
    bytes.read_at(header.body, len as usize).ok()
}

pub fn is_quicktime(head: &[u8]) -> bool {
    head.get(4..8)
        .is_some_and(|k| matches!(k, b"ftyp" | b"moov" | b"mdat" | b"wide" | b"free" | b"skip"))
}

pub fn read(bytes: &Budgeted<'_>) -> VideoDates {
    let mut dates = VideoDates::default();
    let size = bytes.len();
    let Some(moov) = children(bytes, 0, size)
        .into_iter()
        .find(|b| &b.kind == b"moov")
    else {
        return dates;
    };
    for child in children(bytes, moov.body, moov.end) {
        match &child.kind {
            b"mvhd" => {
                if let Some(data) = body(bytes, &child) {
                    dates.create_utc = movie_header_time(&data);
                }
            }
            b"meta" => read_meta(bytes, &child, false, &mut dates),
            b"udta" => {
                for item in children(bytes, child.body, child.end) {
                    match &item.kind {
                        b"\xa9day" => {
                            if let Some(data) = body(bytes, &item) {
                                dates.user_day = dates.user_day.or_else(|| {
                                    user_data_text(&data).and_then(|t| parse_datetime(&t))
                                });
                            }
                        }
                        // Android/Samsung: plain text, e.g. 2020-11-20T15:04:02+0100.
                        b"date" => {
                            if let Some(data) = body(bytes, &item) {
                                let text = String::from_utf8_lossy(&data).into_owned();
                                dates.user_day = dates.user_day.or_else(|| parse_datetime(&text));
                            }
                        }
                        b"\xa9mak" => {
                            dates.make = dates
                                .make
                                .take()
                                .or_else(|| body(bytes, &item).and_then(|d| user_data_text(&d)))
                        }
                        b"\xa9mod" => {
                            dates.model = dates
                                .model
                                .take()
                                .or_else(|| body(bytes, &item).and_then(|d| user_data_text(&d)))
                        }
                        b"meta" => read_meta(bytes, &item, true, &mut dates),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    dates
}

fn movie_header_time(data: &[u8]) -> Option<Stamp> {
    let version = *data.first()?;
    let secs = if version == 1 {
        u64::from_be_bytes(data.get(4..12)?.try_into().ok()?) as i64
    } else {
        u32::from_be_bytes(data.get(4..8)?.try_into().ok()?) as i64
    };
    // 0 means "not set"; some cameras count from 1970 instead of 1904.
    if secs == 0 {
        return None;
    }
    let unix = secs - QT_EPOCH_OFFSET;
    Some(Stamp::from_unix(if unix < 0 { secs } else { unix }))
}

/// `©xyz` user data: [len u16][language u16][text].
fn user_data_text(data: &[u8]) -> Option<String> {
    let len = u16::from_be_bytes(data.get(..2)?.try_into().ok()?) as usize;
    let text = data.get(4..4 + len)?;
    Some(String::from_utf8_lossy(text).into_owned())
}

/// A `meta` box: `keys` names and `ilst` values (Apple), or `ilst` with
/// `©day` items (iTunes style). In `udta/meta` the box is a full box.
fn read_meta(bytes: &Budgeted<'_>, meta: &BoxHeader, _in_udta: bool, dates: &mut VideoDates) {
    // Full box or not: QuickTime's `meta` has no version/flags, ISO's has.
    let probe = bytes.read_at(meta.body, 8).unwrap_or_default();
    let start = if probe
        .get(4..8)
        .is_some_and(|k| k.iter().all(u8::is_ascii_alphanumeric))
    {
        meta.body
    } else {
        meta.body + 4
    };
    let items = children(bytes, start, meta.end);
    let mut keys: Vec<String> = Vec::new();
    if let Some(keys_box) = items.iter().find(|b| &b.kind == b"keys")
        && let Some(data) = body(bytes, keys_box)
    {
        let count = data
            .get(4..8)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap_or_default()))
            .unwrap_or(0);
        let mut at = 8usize;
        for _ in 0..count.min(MAX_BOXES as u32) {
            let Some(len) = data
                .get(at..at + 4)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap_or_default()) as usize)
            else {
                break;
            };
            if len < 8 || at + len > data.len() {
                break;
            }
            keys.push(String::from_utf8_lossy(&data[at + 8..at + len]).into_owned());
            at += len;
        }
    }
    let Some(ilst) = items.iter().find(|b| &b.kind == b"ilst") else {
        return;
    };
    for item in children(bytes, ilst.body, ilst.end) {
        let name =
            if &item.kind == b"\xa9day" || &item.kind == b"\xa9mak" || &item.kind == b"\xa9mod" {
                String::from_utf8_lossy(&item.kind).into_owned()
            } else {
                let index = u32::from_be_bytes(item.kind) as usize;
                match index.checked_sub(1).and_then(|i| keys.get(i)) {
                    Some(key) => key.clone(),
                    None => continue,
                }
            };
        let Some(data_box) = children(bytes, item.body, item.end)
            .into_iter()
            .find(|b| &b.kind == b"data")
        else {
            continue;
        };
        let Some(data) = body(bytes, &data_box) else {
            continue;
        };
        let Some(value) = data
            .get(8..)
            .map(|v| String::from_utf8_lossy(v).into_owned())
        else {
            continue;
        };
        match name.as_str() {
            "com.apple.quicktime.creationdate" => {
                dates.keys_creation = dates.keys_creation.or_else(|| parse_datetime(&value))
            }
            "\u{fffd}day" | "©day" => {
                dates.user_day = dates.user_day.or_else(|| parse_datetime(&value))
            }
            "com.apple.quicktime.make" => dates.make = Some(value),
            "com.apple.quicktime.model" => dates.model = Some(value),
            "com.apple.quicktime.content.identifier" => {
                dates.content_id = Some(value.trim().to_string())
            }
            _ => {}
        }
    }
}
