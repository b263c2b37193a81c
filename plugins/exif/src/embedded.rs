//! EXIF and XMP embedded in an image, found by walking the container with
//! small reads (segment and chunk headers), never reading pixel data:
//! JPEG segments up to the image data, PNG and WebP chunks, TIFF-based RAWs
//! from a bounded prefix, CR3's metadata boxes, and HEIF through kamadak-exif.

use crate::source::Budgeted;
use crate::time::{Stamp, parse_offset};

/// TIFF-based files (and RAWs) keep their IFDs near the start.
const TIFF_PREFIX: usize = 512 << 10;
/// The largest metadata block read whole (EXIF in JPEG is at most 64 KiB).
const MAX_BLOCK: usize = 1 << 20;
const MAX_CHUNKS: usize = 4096;

#[derive(Default)]
pub struct Embedded {
    pub exif: Option<exif::Exif>,
    pub xmp: Option<String>,
    /// IPTC DateCreated + TimeCreated (JPEG APP13), with the offset it states.
    pub iptc: Option<(Stamp, Option<i16>)>,
}

fn parse_tiff(data: Vec<u8>) -> Option<exif::Exif> {
    let mut reader = exif::Reader::new();
    reader.continue_on_error(true);
    match reader.read_raw(data) {
        Ok(exif) => Some(exif),
        // Damaged IFDs: keep what could be read.
        Err(exif::Error::PartialResult(partial)) => Some(partial.into_inner().0),
        Err(_) => None,
    }
}

pub fn read(bytes: &Budgeted<'_>, head: &[u8]) -> Embedded {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, &[0xFF, 0xD8]) {
        jpeg(bytes)
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        png(bytes)
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        webp(bytes)
    } else if at(0, b"II*\0") || at(0, b"MM\0*") {
        Embedded {
            exif: bytes.read_at(0, TIFF_PREFIX).ok().and_then(parse_tiff),
            ..Embedded::default()
        }
    } else if at(0, b"IIU\0") || at(0, b"IIRO") || at(0, b"IIRS") {
        // Panasonic RW2 and Olympus ORF: TIFF with another magic number.
        let mut data = bytes.read_at(0, TIFF_PREFIX).unwrap_or_default();
        if data.len() > 4 {
            data[2] = 0x2A;
            data[3] = 0;
        }
        Embedded {
            exif: parse_tiff(data),
            ..Embedded::default()
        }
    } else if at(4, b"ftypcrx ") {
        cr3(bytes)
    } else if at(4, b"ftyp") {
        let mut stream = bytes.stream();
        let exif = exif::Reader::new().read_from_container(&mut stream).ok();
        Embedded {
            exif,
            ..Embedded::default()
        }
    } else {
        Embedded::default()
    }
}

fn jpeg(bytes: &Budgeted<'_>) -> Embedded {
    let mut found = Embedded::default();
    let mut at = 2u64;
    for _ in 0..MAX_CHUNKS {
        let Ok(marker) = bytes.read_at(at, 4) else {
            break;
        };
        if marker.len() < 4 || marker[0] != 0xFF {
            break;
        }
        let kind = marker[1];
        // Fill bytes and markers without a length.
        if kind == 0xFF {
            at += 1;
            continue;
        }
        if (0xD0..=0xD9).contains(&kind) || kind == 0x01 {
            at += 2;
            continue;
        }
        // Start of scan: the image data follows; metadata is before it.
        if kind == 0xDA {
            break;
        }
        let len = u16::from_be_bytes([marker[2], marker[3]]) as u64;
        if len < 2 {
            break;
        }
        if kind == 0xED && found.iptc.is_none() {
            let Ok(data) = bytes.read_at(at + 4, (len - 2) as usize) else {
                break;
            };
            if let Some(irb) = data.strip_prefix(b"Photoshop 3.0\0") {
                found.iptc = iptc_date(irb);
            }
        }
        if kind == 0xE1 && (found.exif.is_none() || found.xmp.is_none()) {
            let Ok(data) = bytes.read_at(at + 4, (len - 2) as usize) else {
                break;
            };
            if let Some(tiff) = data.strip_prefix(b"Exif\0\0") {
                if found.exif.is_none() {
                    found.exif = parse_tiff(tiff.to_vec());
                }
            } else if let Some(xmp) = data.strip_prefix(b"http://ns.adobe.com/xap/1.0/\0")
                && found.xmp.is_none()
            {
                found.xmp = Some(String::from_utf8_lossy(xmp).into_owned());
            }
        }
        at += 2 + len;
    }
    found
}

fn png(bytes: &Budgeted<'_>) -> Embedded {
    let mut found = Embedded::default();
    let mut at = 8u64;
    for _ in 0..MAX_CHUNKS {
        let Ok(header) = bytes.read_at(at, 8) else {
            break;
        };
        if header.len() < 8 {
            break;
        }
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let kind = &header[4..8];
        let wanted = kind == b"eXIf" || kind == b"iTXt" || kind == b"zTXt";
        if wanted && len as usize <= MAX_BLOCK {
            let Ok(data) = bytes.read_at(at + 8, len as usize) else {
                break;
            };
            if kind == b"eXIf" && found.exif.is_none() {
                found.exif = parse_tiff(data);
            } else if kind == b"iTXt"
                && let Some(text) = data.strip_prefix(b"XML:com.adobe.xmp\0")
                && text.len() > 4
                && text[0] == 0
            {
                // Uncompressed iTXt: flag, method, language\0, translated\0, text.
                let mut rest = &text[2..];
                for _ in 0..2 {
                    let Some(nul) = rest.iter().position(|&b| b == 0) else {
                        break;
                    };
                    rest = &rest[nul + 1..];
                }
                found.xmp = Some(String::from_utf8_lossy(rest).into_owned());
            }
        }
        if kind == b"IEND" {
            break;
        }
        at += 12 + len;
    }
    found
}

fn webp(bytes: &Budgeted<'_>) -> Embedded {
    let mut found = Embedded::default();
    let mut at = 12u64;
    for _ in 0..MAX_CHUNKS {
        let Ok(header) = bytes.read_at(at, 8) else {
            break;
        };
        if header.len() < 8 {
            break;
        }
        let kind = &header[..4];
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as u64;
        if (kind == b"EXIF" || kind == b"XMP ") && len as usize <= MAX_BLOCK {
            let Ok(data) = bytes.read_at(at + 8, len as usize) else {
                break;
            };
            if kind == b"EXIF" {
                let tiff = data
                    .strip_prefix(b"Exif\0\0")
                    .map(<[u8]>::to_vec)
                    .unwrap_or(data);
                found.exif = parse_tiff(tiff);
            } else {
                found.xmp = Some(String::from_utf8_lossy(&data).into_owned());
            }
        }
        at += 8 + len + (len & 1);
    }
    found
}

/// Canon CR3: `moov/uuid(85c0b687-…)/CMT1` holds IFD0, `CMT2` the Exif IFD,
/// each as a little TIFF file.
fn cr3(bytes: &Budgeted<'_>) -> Embedded {
    const CANON_UUID: [u8; 16] = [
        0x85, 0xc0, 0xb6, 0x87, 0x82, 0x0f, 0x11, 0xe0, 0x81, 0x11, 0xf4, 0xce, 0x46, 0x2b, 0x6a,
        0x48,
    ];
    let mut found = Embedded::default();
    let boxes = |start: u64, end: u64| -> Vec<(Vec<u8>, u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        while at + 8 <= end && out.len() < MAX_CHUNKS {
            let Ok(h) = bytes.read_at(at, 8) else { break };
            if h.len() < 8 {
                break;
            }
            let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
            if size < 8 || at + size > end {
                break;
            }
            out.push((h[4..8].to_vec(), at + 8, at + size));
            at += size;
        }
        out
    };
    let Some((_, moov_start, moov_end)) = boxes(0, bytes.len())
        .into_iter()
        .find(|(k, _, _)| k == b"moov")
    else {
        return found;
    };
    for (kind, start, end) in boxes(moov_start, moov_end) {
        if kind != b"uuid" || bytes.read_at(start, 16).ok().as_deref() != Some(&CANON_UUID[..]) {
            continue;
        }
        for (kind, start, end) in boxes(start + 16, end) {
            if kind == b"CMT2" && (end - start) as usize <= MAX_BLOCK {
                found.exif = bytes
                    .read_at(start, (end - start) as usize)
                    .ok()
                    .and_then(parse_tiff);
            }
        }
    }
    found
}

/// IPTC DateCreated (2:55, `YYYYMMDD`) and TimeCreated (2:60, `HHMMSS±HHMM`)
/// from a Photoshop image-resource block (resource 0x0404).
fn iptc_date(irb: &[u8]) -> Option<(Stamp, Option<i16>)> {
    let mut at = 0usize;
    let mut iptc = None;
    while at + 12 <= irb.len() {
        if &irb[at..at + 4] != b"8BIM" {
            return None;
        }
        let id = u16::from_be_bytes([irb[at + 4], irb[at + 5]]);
        let name_len = irb[at + 6] as usize;
        let name_total = (1 + name_len + 1) & !1;
        let size_at = at + 6 + name_total;
        let size = u32::from_be_bytes(irb.get(size_at..size_at + 4)?.try_into().ok()?) as usize;
        let data = irb.get(size_at + 4..size_at + 4 + size)?;
        if id == 0x0404 {
            iptc = Some(data);
            break;
        }
        at = size_at + 4 + ((size + 1) & !1);
    }
    let iptc = iptc?;
    let (mut date, mut time) = (None, None);
    let mut at = 0usize;
    while at + 5 <= iptc.len() && iptc[at] == 0x1C {
        let (record, dataset) = (iptc[at + 1], iptc[at + 2]);
        let len = u16::from_be_bytes([iptc[at + 3], iptc[at + 4]]) as usize;
        if len & 0x8000 != 0 {
            return None; // extended lengths are never used for dates
        }
        let value = iptc.get(at + 5..at + 5 + len)?;
        match (record, dataset) {
            (2, 55) => date = Some(String::from_utf8_lossy(value).into_owned()),
            (2, 60) => time = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        at += 5 + len;
    }
    let date = date?;
    let digits =
        |s: &str, from: usize, n: usize| s.get(from..from + n).and_then(|d| d.parse::<u32>().ok());
    let mut stamp = Stamp::new(
        digits(&date, 0, 4)? as i32,
        digits(&date, 4, 2)?,
        digits(&date, 6, 2)?,
        0,
        0,
        0,
    );
    let mut offset = None;
    if let Some(time) = time
        && let (Some(h), Some(m), Some(s)) = (
            digits(&time, 0, 2),
            digits(&time, 2, 2),
            digits(&time, 4, 2),
        )
    {
        stamp.hour = h;
        stamp.minute = m;
        stamp.second = s;
        offset = time.get(6..).and_then(parse_offset);
    }
    Some((stamp, offset))
}
