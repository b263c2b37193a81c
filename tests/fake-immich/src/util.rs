//! Small helpers: checksums, timestamps, ids, file types, LIKE patterns, XMP.

use std::ffi::OsStr;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use sha1::Digest as _;

/// Extensions Immich 2.4.1 accepts as images (`server/src/utils/mime-types.ts`).
const IMAGE_EXTENSIONS: &[&str] = &[
    "3fr", "ari", "arw", "cap", "cin", "cr2", "cr3", "crw", "dcr", "dng", "erf", "fff", "iiq",
    "k25", "kdc", "mrw", "nef", "nrw", "orf", "ori", "pef", "psd", "raf", "raw", "rw2", "rwl",
    "sr2", "srf", "srw", "x3f", "avif", "gif", "jpeg", "jpg", "png", "webp", "bmp", "heic", "heif",
    "hif", "insp", "jp2", "jpe", "jxl", "svg", "tif", "tiff",
];

/// Extensions Immich 2.4.1 accepts as videos.
const VIDEO_EXTENSIONS: &[&str] = &[
    "3gp", "3gpp", "avi", "flv", "insv", "m2t", "m2ts", "m4v", "mkv", "mov", "mp4", "mpe", "mpeg",
    "mpg", "mts", "vob", "webm", "wmv",
];

const OCTET_STREAM: &str = "application/octet-stream";

/// The SHA-1 of `data`, as Immich stores checksums (20 raw bytes).
pub(crate) fn sha1_of(data: &[u8]) -> [u8; 20] {
    sha1::Sha1::digest(data).into()
}

/// Base64, the way Immich's API shows a checksum.
pub(crate) fn to_base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// A checksum as Immich reads one from a client: 28 characters are base64,
/// anything else hex (`fromChecksum` in `server/src/utils/request.ts`).
pub(crate) fn decode_checksum_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len() == 28 {
        STANDARD.decode(text).ok()
    } else {
        decode_hex(text)
    }
}

/// [`decode_checksum_bytes`] for a full SHA-1.
pub(crate) fn decode_checksum(text: &str) -> Option<[u8; 20]> {
    decode_checksum_bytes(text)?.try_into().ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// A timestamp as JavaScript's `Date.toJSON` writes it: UTC, milliseconds.
pub(crate) fn fmt_ts(t: Timestamp) -> String {
    format!("{t:.3}")
}

/// Midnight UTC of the day of `t`, as Immich shows a Postgres `date`.
pub(crate) fn fmt_day(t: Timestamp) -> String {
    let day = t.as_second().div_euclid(86_400) * 86_400;
    Timestamp::from_second(day).map_or_else(|_| fmt_ts(t), fmt_ts)
}

/// `t` cut to whole milliseconds, the precision of a JavaScript `Date`.
pub(crate) fn to_millis(t: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond()).unwrap_or(t)
}

/// A date string as Immich accepts one (an ISO 8601 date or date-time; one
/// without an offset is taken as UTC), cut to milliseconds.
pub(crate) fn parse_date(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let t = text
        .parse::<Timestamp>()
        .ok()
        .or_else(|| format!("{text}Z").parse::<Timestamp>().ok())
        .or_else(|| format!("{text}T00:00:00Z").parse::<Timestamp>().ok())?;
    Some(to_millis(t))
}

/// What class-validator's `IsUUID('4')` accepts.
pub(crate) fn is_uuid_v4(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            14 => *c == b'4',
            19 => matches!(c.to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b'),
            _ => c.is_ascii_hexdigit(),
        })
}

/// A version 4 UUID made from the SHA-1 of `seed`: random-looking, repeatable.
pub(crate) fn uuid_from(seed: &[u8]) -> String {
    let hash = sha1_of(seed);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = to_hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Lowercase hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0x0f), 16).unwrap_or('0'));
    }
    out
}

/// Eight base-36 characters, like the ids nestjs-cls gives each request.
pub(crate) fn correlation_id(n: u64) -> String {
    let mut x = n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    let mut out = String::with_capacity(8);
    for _ in 0..8 {
        let digit = u32::try_from(x % 36).unwrap_or(0);
        out.push(char::from_digit(digit, 36).unwrap_or('0'));
        x /= 36;
    }
    out
}

fn extension(name: &str) -> Option<String> {
    Path::new(name)
        .extension()
        .and_then(OsStr::to_str)
        .map(str::to_ascii_lowercase)
}

fn has_extension(name: &str, list: &[&str]) -> bool {
    extension(name).is_some_and(|ext| list.contains(&ext.as_str()))
}

/// An image or video file name (`mimeTypes.isAsset`).
pub(crate) fn is_asset_file(name: &str) -> bool {
    has_extension(name, IMAGE_EXTENSIONS) || has_extension(name, VIDEO_EXTENSIONS)
}

/// A sidecar file name (`mimeTypes.isSidecar`: `.xmp`).
pub(crate) fn is_sidecar_file(name: &str) -> bool {
    extension(name).is_some_and(|ext| ext == "xmp")
}

/// `AssetTypeEnum` for a file name.
pub(crate) fn asset_type(name: &str) -> &'static str {
    if has_extension(name, IMAGE_EXTENSIONS) {
        "IMAGE"
    } else if has_extension(name, VIDEO_EXTENSIONS) {
        "VIDEO"
    } else {
        "OTHER"
    }
}

/// The extension with its dot, as Node's `path.extname` gives it ("" if none).
pub(crate) fn extension_with_dot(name: &str) -> String {
    Path::new(name)
        .extension()
        .and_then(OsStr::to_str)
        .map(|ext| format!(".{ext}"))
        .unwrap_or_default()
}

/// `mimeTypes.lookup`: the first MIME type Immich lists for the extension.
pub(crate) fn mime_type(name: &str) -> String {
    let Some(ext) = extension(name) else {
        return OCTET_STREAM.to_owned();
    };
    let listed = match ext.as_str() {
        "jpg" | "jpeg" | "jpe" | "insp" => Some("image/jpeg"),
        "tif" | "tiff" => Some("image/tiff"),
        "3gp" | "3gpp" => Some("video/3gpp"),
        "flv" => Some("video/x-flv"),
        "insv" | "mp4" => Some("video/mp4"),
        "m2t" | "m2ts" | "mts" => Some("video/mp2t"),
        "m4v" => Some("video/x-m4v"),
        "mkv" => Some("video/x-matroska"),
        "mov" => Some("video/quicktime"),
        "mpe" | "mpeg" | "mpg" | "vob" => Some("video/mpeg"),
        "wmv" => Some("video/x-ms-wmv"),
        "xmp" => Some("application/xml"),
        _ => None,
    };
    if let Some(mime) = listed {
        mime.to_owned()
    } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        format!("image/{ext}")
    } else if VIDEO_EXTENSIONS.contains(&ext.as_str()) {
        format!("video/{ext}")
    } else {
        OCTET_STREAM.to_owned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Any,
    One,
    Literal(char),
}

/// `text ILIKE '%' || pattern || '%'`, as Immich searches `originalPath`
/// and `originalFileName`: the value is not escaped, so `%` and `_` in it
/// are wildcards and `\` escapes the next character. Case-insensitive;
/// unlike Postgres with `f_unaccent`, accents are not folded.
pub(crate) fn ilike_contains(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.to_lowercase().chars().collect();
    let mut tokens = vec![Token::Any];
    let lowered = pattern.to_lowercase();
    let mut chars = lowered.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => tokens.push(Token::Any),
            '_' => tokens.push(Token::One),
            '\\' => match chars.next() {
                Some(escaped) => tokens.push(Token::Literal(escaped)),
                // Postgres: "LIKE pattern must not end with escape character".
                None => return false,
            },
            other => tokens.push(Token::Literal(other)),
        }
    }
    tokens.push(Token::Any);
    like(&text, &tokens)
}

fn like(text: &[char], pattern: &[Token]) -> bool {
    let (mut t, mut p) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::Any) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Literal(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match backtrack {
                Some((star, from)) => {
                    p = star + 1;
                    t = from + 1;
                    backtrack = Some((star, from + 1));
                }
                None => return false,
            },
        }
    }
    while pattern.get(p) == Some(&Token::Any) {
        p += 1;
    }
    p == pattern.len()
}

/// What Immich's metadata extraction reads from an XMP sidecar, as far as
/// the fake keeps it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Xmp {
    pub(crate) description: Option<String>,
    pub(crate) rating: Option<i32>,
}

/// A plain string search, not an XML parser: `xmp:Rating` and
/// `dc:description` as attributes or elements.
pub(crate) fn parse_xmp(bytes: &[u8]) -> Xmp {
    let text = String::from_utf8_lossy(bytes);
    let rating = xmp_value(&text, "xmp:Rating")
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|value| value.is_finite())
        .map(|value| value.round() as i32);
    Xmp {
        description: xmp_description(&text),
        rating,
    }
}

fn xmp_value(text: &str, name: &str) -> Option<String> {
    let start = text.find(name)? + name.len();
    let rest = text.get(start..)?.trim_start();
    if let Some(attribute) = rest.strip_prefix('=') {
        let attribute = attribute.trim_start();
        let quote = attribute
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')?;
        let body = attribute.get(1..)?;
        let end = body.find(quote)?;
        Some(unescape_xml(body.get(..end)?))
    } else {
        let body = rest.strip_prefix('>')?;
        let end = body.find('<')?;
        Some(unescape_xml(body.get(..end)?))
    }
}

fn xmp_description(text: &str) -> Option<String> {
    if let Some(value) = xmp_value(text, "dc:description")
        && !value.trim().is_empty()
    {
        return Some(value);
    }
    let rest = text.get(text.find("dc:description")?..)?;
    let item = rest.get(rest.find("<rdf:li")?..)?;
    let body = item.get(item.find('>')? + 1..)?;
    let end = body.find("</rdf:li>")?;
    Some(unescape_xml(body.get(..end)?))
}

fn unescape_xml(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_wildcards() {
        assert!(ilike_contains("/x/IMG_1.jpg", "IMG_1"));
        assert!(ilike_contains("/x/IMGX1.jpg", "IMG_1"));
        assert!(ilike_contains("/x/img_10.JPG", "IMG_1"));
        assert!(!ilike_contains("/x/IMGX1.jpg", "IMG\\_1"));
        assert!(ilike_contains("/x/IMG_1.jpg", "IMG\\_1"));
        assert!(ilike_contains("/a/b/c.jpg", "a%c"));
        assert!(!ilike_contains("/a/b/c.jpg", "c%a"));
        assert!(ilike_contains("anything", ""));
        assert!(!ilike_contains("abc", "abc\\"));
    }

    #[test]
    fn checksums_are_hex_or_base64() {
        let raw = sha1_of(b"hello");
        assert_eq!(decode_checksum(&to_hex(&raw)), Some(raw));
        assert_eq!(decode_checksum(&to_base64(&raw)), Some(raw));
        assert_eq!(decode_checksum("zz"), None);
    }

    #[test]
    fn uuids_and_dates() {
        assert!(is_uuid_v4("00000000-0000-4000-8000-00000000000a"));
        assert!(!is_uuid_v4("00000000-0000-1000-8000-00000000000a"));
        assert!(is_uuid_v4(&uuid_from(b"seed")));
        let t = parse_date("2024-05-01T10:00:00.123456Z").expect("a date");
        assert_eq!(fmt_ts(t), "2024-05-01T10:00:00.123Z");
        assert_eq!(fmt_day(t), "2024-05-01T00:00:00.000Z");
        assert!(parse_date("2024-05-01T10:00:00").is_some());
        assert!(parse_date("yesterday").is_none());
    }

    #[test]
    fn xmp_fields() {
        let xmp = br#"<rdf:Description xmp:Rating="4"><dc:description><rdf:Alt>
            <rdf:li xml:lang="x-default">Beach &amp; sun</rdf:li></rdf:Alt></dc:description>"#;
        let parsed = parse_xmp(xmp);
        assert_eq!(parsed.rating, Some(4));
        assert_eq!(parsed.description.as_deref(), Some("Beach & sun"));
        let element = parse_xmp(b"<xmp:Rating>2</xmp:Rating><x dc:description='hi'/>");
        assert_eq!(element.rating, Some(2));
        assert_eq!(element.description.as_deref(), Some("hi"));
    }

    #[test]
    fn file_types() {
        assert_eq!(asset_type("a.JPG"), "IMAGE");
        assert_eq!(asset_type("a.mov"), "VIDEO");
        assert_eq!(mime_type("a.MOV"), "video/quicktime");
        assert_eq!(mime_type("a.dng"), "image/dng");
        assert!(!is_asset_file("notes.txt"));
        assert!(is_sidecar_file("a.jpg.XMP"));
        assert_eq!(extension_with_dot("a.b.JPG"), ".JPG");
    }
}
