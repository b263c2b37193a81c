//! What a file is, from its first bytes; never from its name.

use serde::Serialize;

pub mod whole;

/// How many leading bytes [`sniff`] looks at.
pub const SNIFF_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Jpeg,
    Heic,
    Avif,
    Png,
    Gif,
    Webp,
    Tiff,
    Raw,
    Video,
    Unknown,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Jpeg => "jpeg",
            MediaKind::Heic => "heic",
            MediaKind::Avif => "avif",
            MediaKind::Png => "png",
            MediaKind::Gif => "gif",
            MediaKind::Webp => "webp",
            MediaKind::Tiff => "tiff",
            MediaKind::Raw => "raw",
            MediaKind::Video => "video",
            MediaKind::Unknown => "unknown",
        }
    }
}

/// Identify a file by its magic bytes.
pub fn sniff(head: &[u8]) -> MediaKind {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        return MediaKind::Jpeg;
    }
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return MediaKind::Png;
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return MediaKind::Gif;
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return MediaKind::Webp;
    }
    if at(0, b"RIFF") && at(8, b"AVI ") {
        return MediaKind::Video;
    }
    // ISO base media: [size][ftyp][major brand]...
    if at(4, b"ftyp") {
        let brand = head.get(8..12).unwrap_or_default();
        return match brand {
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1" => {
                MediaKind::Heic
            }
            b"avif" | b"avis" => MediaKind::Avif,
            b"crx " => MediaKind::Raw,
            _ => MediaKind::Video,
        };
    }
    // QuickTime without ftyp starts with another atom.
    if at(4, b"moov") || at(4, b"mdat") || at(4, b"wide") || at(4, b"free") || at(4, b"skip") {
        return MediaKind::Video;
    }
    // Matroska / WebM.
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        return MediaKind::Video;
    }
    // MPEG-2 transport stream as AVCHD writes it (.mts/.m2ts): 192-byte
    // packets with the 0x47 sync byte after a 4-byte timestamp.
    if head.len() > 196 && head[4] == 0x47 && head[196] == 0x47 {
        return MediaKind::Video;
    }
    if at(0, &[0x47]) && head.get(188) == Some(&0x47) {
        return MediaKind::Video;
    }
    if at(0, b"II*\0") || at(0, b"MM\0*") {
        // TIFF container: camera RAWs (CR2, NEF, DNG, ARW, ...) or plain TIFF.
        return if at(8, b"CR") {
            MediaKind::Raw
        } else {
            MediaKind::Tiff
        };
    }
    if at(0, b"IIU\0") || at(0, b"IIRO") || at(0, b"IIRS") || at(0, b"FUJIFILMCCD-RAW") {
        return MediaKind::Raw;
    }
    MediaKind::Unknown
}

/// Whether a TIFF-container file is a camera RAW rather than a plain TIFF:
/// decided by extension only among TIFF containers, where the bytes alone
/// cannot tell (a NEF and a TIFF share their header).
pub fn refine_tiff(kind: MediaKind, file_name: &str) -> MediaKind {
    if kind != MediaKind::Tiff {
        return kind;
    }
    let ext = file_name
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "tif" | "tiff" => MediaKind::Tiff,
        _ => MediaKind::Raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_common_formats() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE1]), MediaKind::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), MediaKind::Png);
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0\0\0"), MediaKind::Heic);
        assert_eq!(sniff(b"\0\0\0\x14ftypqt  \0\0\0\0"), MediaKind::Video);
        assert_eq!(sniff(b"\0\0\0\x18ftypcrx \0\0\0\0"), MediaKind::Raw);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), MediaKind::Webp);
        assert_eq!(sniff(b"II*\0\x10\0\0\0CR\x02\0"), MediaKind::Raw);
        assert_eq!(sniff(b"hello world"), MediaKind::Unknown);
        assert_eq!(sniff(b""), MediaKind::Unknown);
    }
}
