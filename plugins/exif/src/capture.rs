//! Gathering every source of a capture time, in precedence order, and
//! taking the first valid one.

use exif::{Context, Field, Value};

use crate::source::{Budgeted, Bytes};
use crate::time::{Stamp, parse_datetime, parse_offset};
use crate::{embedded, names, quicktime, takeout, xmp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confidence {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub stamp: Stamp,
    pub offset_minutes: Option<i16>,
    pub source: String,
    pub confidence: Confidence,
}

pub struct Sidecar {
    pub name: String,
    pub text: String,
}

pub struct Inputs<'a> {
    pub relative_path: &'a str,
    pub sidecars: Vec<Sidecar>,
    /// The file's modification time (local) and its offset, when it may be used.
    pub mtime: Option<(Stamp, i16)>,
    /// Unix seconds now, for the "more than a day in the future" check.
    pub now: i64,
}

#[derive(Debug, Default)]
pub struct Found {
    pub capture: Option<Candidate>,
    /// Sources that were present but not valid, with why.
    pub rejected: Vec<String>,
    pub facts: Vec<(String, String)>,
    /// XMP properties to record in the library copy's sidecar: only what the
    /// file itself does not already say in a form Immich reads.
    pub xmp: Vec<(String, String)>,
    pub bytes_read: u64,
}

impl Found {
    fn set_position(&mut self, lat: f64, lon: f64) {
        self.facts
            .push(("gps.latitude".into(), format!("{lat:.7}")));
        self.facts
            .push(("gps.longitude".into(), format!("{lon:.7}")));
    }
}

/// Capture times that come from outside the file's own metadata; written to
/// the sidecar so Immich (and any other tool) sees the same date.
fn worth_writing(source: &str) -> bool {
    source.starts_with("takeout:") || source.starts_with("filename:") || source == "folder"
}

/// `38.8895` → `38,53.37N`, XMP's GPS coordinate form.
fn xmp_coordinate(value: f64, positive: char, negative: char) -> String {
    let letter = if value < 0.0 { negative } else { positive };
    let value = value.abs();
    let degrees = value.trunc();
    format!("{},{:.6}{letter}", degrees as u32, (value - degrees) * 60.0)
}

fn candidate(
    stamp: Stamp,
    offset: Option<i16>,
    source: impl Into<String>,
    confidence: Confidence,
) -> Candidate {
    Candidate {
        stamp,
        offset_minutes: offset,
        source: source.into(),
        confidence,
    }
}

/// The field with this tag number, in the EXIF IFD or IFD0 (`gps`: the GPS
/// IFD), from the first image. CR3 stores the Exif IFD as its own IFD0, so
/// the context is not checked beyond GPS or not.
fn field(exif: &exif::Exif, number: u16, gps: bool) -> Option<&Field> {
    exif.fields()
        .filter(|f| f.tag.number() == number && (f.tag.context() == Context::Gps) == gps)
        .min_by_key(|f| f.ifd_num.index())
}

fn ascii(exif: &exif::Exif, number: u16) -> Option<String> {
    match &field(exif, number, false)?.value {
        Value::Ascii(parts) => parts
            .first()
            .map(|s| {
                String::from_utf8_lossy(s)
                    .trim_end_matches('\0')
                    .trim()
                    .to_string()
            })
            .filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// DateTimeOriginal or DateTimeDigitized with their sub-seconds and offset.
fn exif_datetime(
    exif: &exif::Exif,
    date_tag: u16,
    subsec_tag: u16,
    offset_tag: u16,
) -> Option<(Stamp, Option<i16>)> {
    let (mut stamp, inline_offset) = parse_datetime(&ascii(exif, date_tag)?)?;
    if let Some(subsec) = ascii(exif, subsec_tag) {
        stamp = stamp.with_fraction(&subsec);
    }
    let offset = ascii(exif, offset_tag)
        .and_then(|o| parse_offset(&o))
        .or(inline_offset);
    Some((stamp, offset))
}

fn gps_datetime(exif: &exif::Exif) -> Option<Stamp> {
    let date = match &field(exif, 0x001D, true)?.value {
        Value::Ascii(parts) => String::from_utf8_lossy(parts.first()?).into_owned(),
        _ => return None,
    };
    let (day, _) = parse_datetime(&date)?;
    let time = match &field(exif, 0x0007, true)?.value {
        Value::Rational(parts) if parts.len() == 3 => {
            parts.iter().map(|r| r.to_f64()).collect::<Vec<_>>()
        }
        _ => return None,
    };
    if time.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return None;
    }
    let mut stamp = Stamp::new(
        day.year,
        day.month,
        day.day,
        time[0] as u32,
        time[1] as u32,
        time[2] as u32,
    );
    stamp.nanos = ((time[2].fract()) * 1e9) as u32;
    Some(stamp)
}

fn gps_position(exif: &exif::Exif) -> Option<(f64, f64)> {
    let coordinate = |value_tag: u16, ref_tag: u16, negative: u8| -> Option<f64> {
        let degrees = match &field(exif, value_tag, true)?.value {
            Value::Rational(parts) if parts.len() == 3 => {
                parts[0].to_f64() + parts[1].to_f64() / 60.0 + parts[2].to_f64() / 3600.0
            }
            _ => return None,
        };
        let sign = match &field(exif, ref_tag, true)?.value {
            Value::Ascii(parts) if parts.first().and_then(|p| p.first()) == Some(&negative) => -1.0,
            _ => 1.0,
        };
        Some(sign * degrees).filter(|v| v.is_finite())
    };
    let lat = coordinate(0x0002, 0x0001, b'S')?;
    let lon = coordinate(0x0004, 0x0003, b'W')?;
    (lat.abs() <= 90.0 && lon.abs() <= 180.0 && (lat != 0.0 || lon != 0.0)).then_some((lat, lon))
}

/// A Live Photo link is a UUID; anything else is not trusted as one.
fn valid_content_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Apple's MakerNote (`Apple iOS\0`, version, `MM`, then an IFD whose
/// offsets count from the MakerNote's start): tag 0x0011 is the
/// MediaGroupUUID a Live Photo's video repeats as its content identifier.
fn apple_media_group(exif: &exif::Exif) -> Option<String> {
    let note = match &field(exif, 0x927C, false)?.value {
        Value::Undefined(bytes, _) => bytes.as_slice(),
        _ => return None,
    };
    if !note.starts_with(b"Apple iOS\0") || note.get(12..14) != Some(b"MM") {
        return None;
    }
    let u16_at = |at: usize| {
        note.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        note.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let count = u16_at(14)? as usize;
    for i in 0..count.min(512) {
        let entry = 16 + i * 12;
        if u16_at(entry)? != 0x0011 || u16_at(entry + 2)? != 2 {
            continue;
        }
        let len = u32_at(entry + 4)? as usize;
        let text = if len <= 4 {
            note.get(entry + 8..entry + 8 + len)?
        } else {
            let offset = u32_at(entry + 8)? as usize;
            note.get(offset..offset.checked_add(len)?)?
        };
        let text = String::from_utf8_lossy(text)
            .trim_end_matches('\0')
            .trim()
            .to_string();
        return Some(text);
    }
    None
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn stem(name: &str) -> &str {
    match name.rfind('.') {
        Some(dot) if dot > 0 => &name[..dot],
        _ => name,
    }
}

/// Look at every source; the first valid one in precedence order wins.
pub fn examine(file: &dyn Bytes, budget: u64, inputs: &Inputs<'_>) -> Found {
    let bytes = Budgeted::new(file, budget);
    let head = bytes.read_at(0, 256).unwrap_or_default();
    let name = base_name(inputs.relative_path);
    let mut found = Found::default();
    let mut ordered: Vec<Candidate> = Vec::new();

    // 1. An XMP sidecar overrides everything embedded. Like Immich, read
    // one: `IMG.jpg.xmp` when it exists, else `IMG.xmp`.
    let lower_name = name.to_ascii_lowercase();
    let xmp_sidecars = || {
        inputs
            .sidecars
            .iter()
            .filter(|s| s.name.to_ascii_lowercase().ends_with(".xmp"))
    };
    let sidecar = xmp_sidecars()
        .find(|s| s.name.to_ascii_lowercase() == format!("{lower_name}.xmp"))
        .or_else(|| xmp_sidecars().next());
    if let Some(sidecar) = sidecar
        && let Some((property, value)) = xmp::first_date(&sidecar.text)
        && let Some((stamp, offset)) = parse_datetime(&value)
    {
        ordered.push(candidate(
            stamp,
            offset,
            format!("xmp-sidecar:{property}"),
            Confidence::High,
        ));
    }

    // 2-4. Embedded EXIF and XMP.
    let embedded = embedded::read(&bytes, &head);
    if let Some(exif) = &embedded.exif {
        if let Some((stamp, offset)) = exif_datetime(exif, 0x9003, 0x9291, 0x9011) {
            ordered.push(candidate(
                stamp,
                offset,
                "exif:DateTimeOriginal",
                Confidence::High,
            ));
        }
        if let Some((stamp, offset)) = exif_datetime(exif, 0x9004, 0x9292, 0x9012) {
            ordered.push(candidate(
                stamp,
                offset,
                "exif:CreateDate",
                Confidence::High,
            ));
        }
        if let Some(id) = apple_media_group(exif).filter(|id| valid_content_id(id)) {
            found.facts.push(("live.content_id".into(), id));
        }
        for (key, tag) in [("camera.make", 0x010F), ("camera.model", 0x0110)] {
            if let Some(value) = ascii(exif, tag) {
                found.facts.push((key.into(), value));
            }
        }
        if let Some(orientation) = field(exif, 0x0112, false).and_then(|f| f.value.get_uint(0)) {
            found
                .facts
                .push(("orientation".into(), orientation.to_string()));
        }
        for (key, tag) in [("pixel.width", 0xA002), ("pixel.height", 0xA003)] {
            if let Some(v) = field(exif, tag, false).and_then(|f| f.value.get_uint(0)) {
                found.facts.push((key.into(), v.to_string()));
            }
        }
        if let Some((lat, lon)) = gps_position(exif) {
            found.set_position(lat, lon);
        }
    }
    // IPTC DateCreated + TimeCreated, as exiftool's and Immich's composite
    // DateTimeCreated read it.
    if let Some((stamp, offset)) = embedded.iptc {
        ordered.push(candidate(
            stamp,
            offset,
            "iptc:DateCreated",
            Confidence::High,
        ));
    }
    if let Some(text) = &embedded.xmp
        && let Some((property, value)) = xmp::first_date(text)
        && let Some((stamp, offset)) = parse_datetime(&value)
    {
        ordered.push(candidate(
            stamp,
            offset,
            format!("xmp:{property}"),
            Confidence::Medium,
        ));
    }

    // 5-6. Video: local time with offset, then the UTC movie header.
    if quicktime::is_quicktime(&head) {
        let video = quicktime::read(&bytes);
        if let Some((stamp, offset)) = video.keys_creation {
            ordered.push(candidate(
                stamp,
                offset,
                "quicktime:CreationDate",
                Confidence::High,
            ));
        }
        if let Some((stamp, offset)) = video.user_day {
            ordered.push(candidate(stamp, offset, "quicktime:©day", Confidence::High));
        }
        if let Some(stamp) = video.create_utc {
            ordered.push(candidate(
                stamp,
                Some(0),
                "quicktime:CreateDate(UTC)",
                Confidence::Medium,
            ));
        }
        if let Some(id) = video.content_id.filter(|id| valid_content_id(id)) {
            found.facts.push(("live.content_id".into(), id));
        }
        for (key, value) in [("camera.make", video.make), ("camera.model", video.model)] {
            if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
                found.facts.push((key.into(), value.trim().to_string()));
            }
        }
    }

    // 7. Google Takeout.
    for sidecar in inputs
        .sidecars
        .iter()
        .filter(|s| s.name.to_ascii_lowercase().ends_with(".json"))
    {
        let Some(takeout) = takeout::parse(&sidecar.text) else {
            continue;
        };
        if let Some(secs) = takeout.taken_unix {
            ordered.push(candidate(
                Stamp::from_unix(secs),
                Some(0),
                "takeout:photoTakenTime(UTC)",
                Confidence::Medium,
            ));
        }
        if !found.facts.iter().any(|(k, _)| k == "gps.latitude")
            && let (Some(lat), Some(lon)) = (takeout.latitude, takeout.longitude)
        {
            found.set_position(lat, lon);
            found
                .xmp
                .push(("exif:GPSLatitude".into(), xmp_coordinate(lat, 'N', 'S')));
            found
                .xmp
                .push(("exif:GPSLongitude".into(), xmp_coordinate(lon, 'E', 'W')));
        }
        if let Some(title) = takeout.title.filter(|t| t != name) {
            found.facts.push(("takeout.title".into(), title.clone()));
            found.xmp.push(("dc:title".into(), title));
        }
        if let Some(description) = takeout.description {
            found
                .facts
                .push(("takeout.description".into(), description.clone()));
            found.xmp.push(("dc:description".into(), description));
        }
    }

    // 8. GPS date and time (UTC), from EXIF or XMP.
    if let Some(stamp) = embedded.exif.as_ref().and_then(gps_datetime) {
        ordered.push(candidate(
            stamp,
            Some(0),
            "exif:GPSDateTime(UTC)",
            Confidence::Medium,
        ));
    } else if let Some(text) = &embedded.xmp
        && let Some(value) = xmp::property(text, "exif:GPSTimeStamp")
        && let Some((stamp, offset)) = parse_datetime(&value)
        && offset.is_some()
    {
        ordered.push(candidate(
            stamp,
            offset,
            "xmp:exif:GPSTimeStamp(UTC)",
            Confidence::Medium,
        ));
    }

    // 9-11. The name, the folder, the modification time.
    if let Some(date) = names::from_file_name(stem(name)) {
        let confidence = if date.has_time {
            Confidence::Medium
        } else {
            Confidence::Low
        };
        let offset = date.utc.then_some(0);
        ordered.push(candidate(
            date.stamp,
            offset,
            format!("filename:{}", date.pattern),
            confidence,
        ));
    }
    if let Some(date) = names::from_folders(inputs.relative_path) {
        ordered.push(candidate(date.stamp, None, "folder", Confidence::Low));
    }
    if let Some((stamp, offset)) = inputs.mtime {
        ordered.push(candidate(
            stamp,
            Some(offset),
            "file:mtime",
            Confidence::Low,
        ));
    }

    for option in ordered {
        match option
            .stamp
            .invalid_reason(option.offset_minutes, inputs.now)
        {
            None => {
                if worth_writing(&option.source) {
                    let value = option.stamp.iso(option.offset_minutes);
                    found
                        .xmp
                        .push(("exif:DateTimeOriginal".into(), value.clone()));
                    found.xmp.push(("photoshop:DateCreated".into(), value));
                }
                found.capture = Some(option);
                break;
            }
            Some(reason) => found.rejected.push(format!("{}: {reason}", option.source)),
        }
    }
    if !found.rejected.is_empty() {
        found
            .facts
            .push(("capture.rejected".into(), found.rejected.join("; ")));
    }
    found.bytes_read = bytes.used();
    found
}
