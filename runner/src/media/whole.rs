//! Whether a file is whole: its structure reaches its end. A download or a
//! copy cut short keeps its first bytes (the EXIF intact), so it looks like
//! a photo; placing it would put half a photo in the library for good.
//!
//! The checks read the segment, chunk and box headers and the file's end,
//! never the image data: a JPEG's segments up to its scan and the last
//! 64 KiB for its end-of-image marker; a PNG's chunk headers up to `IEND`;
//! an ISO base media file's (HEIF, AVIF, MP4, MOV, CR3) top-level box
//! headers. Only a JPEG whose marker is not in its last 64 KiB (a motion
//! photo's video, or a maker's data, after the image) is read on from its
//! scan to find it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::MediaKind;

/// How much of a JPEG's end is looked at for its end-of-image marker.
const TAIL: u64 = 64 << 10;

/// Where and how the file ends early, for the quarantine reason; None when
/// it is whole, or is of a kind this does not check, or cannot be read
/// (the read that hashed it would have said).
pub fn cut_short(file: &File, kind: MediaKind, size: u64) -> Option<String> {
    let mut head = [0u8; 8];
    let got = file.read_at(&mut head, 0).ok()?;
    match kind {
        MediaKind::Jpeg => jpeg(file, size),
        MediaKind::Png => png(file, size),
        _ if got == 8 && is_bmff(kind, &head[4..8]) => bmff(file, size),
        _ => None,
    }
}

fn is_bmff(kind: MediaKind, first_box: &[u8]) -> bool {
    first_box == b"ftyp"
        || (kind == MediaKind::Video
            && matches!(
                first_box,
                b"moov" | b"mdat" | b"wide" | b"free" | b"skip" | b"pnot"
            ))
}

fn read_exact(file: &File, at: u64, buf: &mut [u8]) -> Option<()> {
    file.read_exact_at(buf, at).ok()
}

fn jpeg(file: &File, size: u64) -> Option<String> {
    let mut at = 2u64;
    let scan = loop {
        let mut marker = [0u8; 2];
        if at + 2 > size {
            return Some(format!(
                "a JPEG whose segments stop at byte {at} of {size}, before its image data"
            ));
        }
        read_exact(file, at, &mut marker)?;
        if marker[0] != 0xFF {
            // Not a marker where one must be: malformed, not cut short;
            // the stages say what they make of it.
            return None;
        }
        match marker[1] {
            // Fill bytes before a marker.
            0xFF => at += 1,
            0x01 | 0xD0..=0xD8 => at += 2,
            // The end before any scan: a header without image, not cut.
            0xD9 => return None,
            kind => {
                let mut len = [0u8; 2];
                if at + 4 > size {
                    return Some(format!(
                        "a JPEG cut short in the header of its segment at byte {at} (the file has {size} bytes)"
                    ));
                }
                read_exact(file, at + 2, &mut len)?;
                let len = u64::from(u16::from_be_bytes(len));
                if len < 2 {
                    return None;
                }
                let end = at + 2 + len;
                if end > size {
                    return Some(format!(
                        "a JPEG whose {} segment at byte {at} claims {len} bytes, past the end of the file ({size} bytes)",
                        segment_name(kind)
                    ));
                }
                if kind == 0xDA {
                    break end;
                }
                at = end;
            }
        }
    };
    // The image data, then the end-of-image marker, then perhaps a trailer.
    let from = scan.max(size.saturating_sub(TAIL));
    if has_eoi(file, from, size)? {
        return None;
    }
    if from > scan && has_eoi(file, scan, from + 1)? {
        return None;
    }
    Some(format!(
        "a JPEG whose image data runs to the end of the file ({size} bytes) without its end-of-image marker"
    ))
}

/// Whether `FF D9` is in `[from, to)`.
fn has_eoi(file: &File, from: u64, to: u64) -> Option<bool> {
    let mut buf = vec![0u8; (to.saturating_sub(from)).min(1 << 20) as usize];
    let mut at = from;
    let mut last_ff = false;
    while at < to && !buf.is_empty() {
        let want = ((to - at) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], at).ok()?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if (last_ff && chunk[0] == 0xD9) || chunk.windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Some(true);
        }
        last_ff = chunk[n - 1] == 0xFF;
        at += n as u64;
    }
    Some(false)
}

fn segment_name(marker: u8) -> String {
    match marker {
        0xE0..=0xEF => format!("APP{}", marker - 0xE0),
        0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => "SOF".into(),
        0xC4 => "DHT".into(),
        0xDB => "DQT".into(),
        0xDA => "SOS".into(),
        0xDD => "DRI".into(),
        0xFE => "COM".into(),
        other => format!("FF{other:02X}"),
    }
}

fn png(file: &File, size: u64) -> Option<String> {
    let mut at = 8u64;
    loop {
        if at + 8 > size {
            return Some(format!(
                "a PNG that ends at byte {size} without its IEND chunk"
            ));
        }
        let mut header = [0u8; 8];
        read_exact(file, at, &mut header)?;
        let len = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let end = at + 12 + len;
        let name = String::from_utf8_lossy(&header[4..8]).into_owned();
        if &header[4..8] == b"IEND" {
            // The end, even if a writer left out its checksum.
            return None;
        }
        if end > size {
            return Some(format!(
                "a PNG whose {name} chunk at byte {at} claims {len} bytes, past the end of the file ({size} bytes)"
            ));
        }
        at = end;
    }
}

/// The boxes that stand at the top level of a HEIF, AVIF, MP4, MOV, 3GP or
/// CR3 file: a header that names another is read as a trailer, not a box.
const TOP_LEVEL: [&[u8]; 18] = [
    b"ftyp", b"mdat", b"moov", b"meta", b"moof", b"mfra", b"free", b"skip", b"wide", b"uuid",
    b"udta", b"sidx", b"styp", b"pnot", b"prfl", b"junk", b"emsg", b"pdin",
];

fn bmff(file: &File, size: u64) -> Option<String> {
    let mut at = 0u64;
    while at + 8 <= size {
        let mut header = [0u8; 16];
        let want = if at + 16 <= size { 16 } else { 8 };
        read_exact(file, at, &mut header[..want])?;
        let name = String::from_utf8_lossy(&header[4..8]).into_owned();
        let (len, header_len) = match u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]) {
            // The last box, to the end of the file.
            0 => return None,
            1 if want == 16 => (
                u64::from_be_bytes([
                    header[8], header[9], header[10], header[11], header[12], header[13],
                    header[14], header[15],
                ]),
                16,
            ),
            1 => {
                return Some(format!(
                    "a file whose `{name}` box at byte {at} is cut short in its header (the file has {size} bytes)"
                ));
            }
            n => (u64::from(n), 8),
        };
        if len < header_len || !TOP_LEVEL.contains(&&header[4..8]) {
            // Not a box: a maker's trailer after the last one (Samsung's,
            // a dashcam's GPS), or malformed, which the stages judge.
            return None;
        }
        match at.checked_add(len) {
            Some(end) if end <= size => at = end,
            _ => {
                return Some(format!(
                    "a file whose `{name}` box at byte {at} claims {len} bytes, past the end of the file ({size} bytes)"
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn check(kind: MediaKind, bytes: &[u8]) -> Option<String> {
        let mut f = tempfile::NamedTempFile::new().expect("a temp file");
        f.write_all(bytes).expect("written");
        cut_short(f.as_file(), kind, bytes.len() as u64)
    }

    fn jpeg_bytes(trailer: &[u8]) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, b'E', b'x', b'i', b'f'];
        b.extend([0xFF, 0xDA, 0x00, 0x04, 1, 2]);
        b.extend(std::iter::repeat_n(0x55u8, 100_000));
        b.extend([0xFF, 0x00, 0x12, 0xFF, 0xD9]);
        b.extend(trailer);
        b
    }

    #[test]
    fn a_whole_jpeg_passes_with_or_without_a_trailer() {
        assert_eq!(check(MediaKind::Jpeg, &jpeg_bytes(b"")), None);
        assert_eq!(check(MediaKind::Jpeg, &jpeg_bytes(&[0u8; 44_758])), None);
        // A motion photo: a video of megabytes after the image.
        assert_eq!(
            check(MediaKind::Jpeg, &jpeg_bytes(&vec![7u8; 3 << 20])),
            None
        );
    }

    #[test]
    fn a_jpeg_cut_short_is_named_with_where_it_ends() {
        let whole = jpeg_bytes(b"");
        let half = &whole[..whole.len() / 2];
        let why = check(MediaKind::Jpeg, half).expect("cut");
        assert!(why.contains("end-of-image"), "{why}");
        let why = check(MediaKind::Jpeg, &whole[..8]).expect("cut");
        assert!(why.contains("APP1 segment at byte 2"), "{why}");
    }

    #[test]
    fn png_and_iso_boxes_must_reach_their_end() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (name, len) in [(b"IHDR", 13u32), (b"IDAT", 1000), (b"IEND", 0)] {
            png.extend(len.to_be_bytes());
            png.extend(name);
            png.extend(vec![0u8; len as usize + 4]);
        }
        assert_eq!(check(MediaKind::Png, &png), None);
        let why = check(MediaKind::Png, &png[..600]).expect("cut");
        assert!(why.contains("IDAT chunk"), "{why}");
        let why = check(MediaKind::Png, &png[..png.len() - 12]).expect("no IEND");
        assert!(why.contains("IEND"), "{why}");

        let mut mp4 = Vec::new();
        for (name, len) in [(b"ftyp", 24u32), (b"moov", 500), (b"mdat", 20_000)] {
            mp4.extend(len.to_be_bytes());
            mp4.extend(name);
            mp4.extend(vec![0u8; len as usize - 8]);
        }
        assert_eq!(check(MediaKind::Video, &mp4), None);
        let why = check(MediaKind::Video, &mp4[..10_000]).expect("cut");
        assert!(
            why.contains("`mdat` box at byte 524 claims 20000 bytes"),
            "{why}"
        );
        assert!(check(MediaKind::Heic, &mp4[..10_000]).is_some());
        // A maker's trailer after the last box is no box.
        let mut trailed = mp4.clone();
        trailed.extend(b"\x12\x34\x56\x78SEFHtrailer of a phone");
        assert_eq!(check(MediaKind::Video, &trailed), None);
        // Kinds without a check pass.
        assert_eq!(check(MediaKind::Gif, b"GIF89a"), None);
    }
}
