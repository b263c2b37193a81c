//! XMP sidecars keepsake writes next to library copies (`IMG.jpg.xmp`, the
//! name Immich reads first), so metadata the user cares about lives in files
//! and not only in the ledger. An existing sidecar is merged, never dropped:
//! the properties keepsake sets are removed from it and written again in a
//! `rdf:Description` of their own; everything else stays byte for byte.

/// The XMP properties stages may write, by namespace.
const NAMESPACES: &[(&str, &str)] = &[
    ("exif", "http://ns.adobe.com/exif/1.0/"),
    ("photoshop", "http://ns.adobe.com/photoshop/1.0/"),
    ("xmp", "http://ns.adobe.com/xap/1.0/"),
    ("dc", "http://purl.org/dc/elements/1.1/"),
    ("tiff", "http://ns.adobe.com/tiff/1.0/"),
    ("xmpDM", "http://ns.adobe.com/xmp/1.0/DynamicMedia/"),
    ("lr", "http://ns.adobe.com/lightroom/1.0/"),
];
/// Namespaces only the host writes: a stage asking for them is refused (see
/// [`validate`]), so no plugin can forge what keepsake records about a file.
const HOST_NAMESPACES: &[(&str, &str)] = &[("keepsake", "https://keepsake.invalid/ns/1.0/")];
/// The original's BLAKE3, embedded with the XMP keepsake writes into a JPEG:
/// `ledger rebuild` reads it back, so a later copy of the original is still
/// a duplicate.
pub const ORIGINAL_BLAKE3: &str = "keepsake:OriginalBlake3";
/// The BLAKE3 of every byte but the XMP segment, which embedding leaves
/// unchanged: the original's hash above is trusted only while the file
/// without its XMP still has this hash (an edit of its EXIF or pixels made
/// it another file).
pub const IMAGE_BLAKE3: &str = "keepsake:ImageBlake3";
/// The largest JPEG whose XMP keepsake embeds (it is rewritten in memory).
pub const MAX_EMBED: u64 = 64 << 20;
/// Language alternatives (`rdf:Alt` with `x-default`), not simple text.
const LANG_ALT: &[&str] = &["dc:title", "dc:description"];
/// Unordered lists (`rdf:Bag`): the value holds one item per line.
const BAGS: &[&str] = &["dc:subject", "lr:hierarchicalSubject"];

/// Check a property a stage asked to write.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some((prefix, local)) = name.split_once(':') else {
        return Err(format!("{name:?} is not a prefixed XMP property name"));
    };
    if !NAMESPACES.iter().any(|(p, _)| *p == prefix) {
        return Err(format!(
            "{name:?}: namespace {prefix:?} is not one keepsake writes ({})",
            NAMESPACES
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if local.is_empty() || local.len() > 64 || !local.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("{name:?} is not a valid XMP property name"));
    }
    if value.len() > 4096
        || value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(format!(
            "{name:?}: the value is too long or has control characters"
        ));
    }
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// keepsake's own `rdf:Description` with `properties`.
fn description(properties: &[(String, String)]) -> String {
    let mut prefixes: Vec<&str> = properties
        .iter()
        .filter_map(|(n, _)| n.split_once(':').map(|(p, _)| p))
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    let mut out = String::from("  <rdf:Description rdf:about=\"\"");
    for prefix in prefixes {
        if let Some((_, uri)) = NAMESPACES
            .iter()
            .chain(HOST_NAMESPACES)
            .find(|(p, _)| *p == prefix)
        {
            out.push_str(&format!("\n    xmlns:{prefix}=\"{uri}\""));
        }
    }
    out.push_str(">\n");
    for (name, value) in properties {
        if BAGS.contains(&name.as_str()) {
            out.push_str(&format!("   <{name}>\n    <rdf:Bag>\n"));
            for item in value.lines().filter(|i| !i.is_empty()) {
                out.push_str(&format!("     <rdf:li>{}</rdf:li>\n", escape(item)));
            }
            out.push_str(&format!("    </rdf:Bag>\n   </{name}>\n"));
        } else if LANG_ALT.contains(&name.as_str()) {
            out.push_str(&format!(
                "   <{name}>\n    <rdf:Alt>\n     <rdf:li xml:lang=\"x-default\">{}</rdf:li>\n    </rdf:Alt>\n   </{name}>\n",
                escape(value)
            ));
        } else {
            out.push_str(&format!("   <{name}>{}</{name}>\n", escape(value)));
        }
    }
    out.push_str("  </rdf:Description>\n");
    out
}

/// Whether merging `properties` into `existing` keeps every value it held:
/// each property keepsake sets is absent there or already says the same
/// (a list keeps all its items). Only then does the merged sidecar keep
/// everything the original said, so the original may leave a move inbox.
pub fn merge_keeps_everything(existing: &str, properties: &[(String, String)]) -> bool {
    properties.iter().all(|(name, value)| {
        if !existing.contains(name.as_str()) {
            return true;
        }
        if BAGS.contains(&name.as_str()) {
            let wanted: Vec<&str> = value.lines().collect();
            return keepsake_xmp::items(existing, name)
                .iter()
                .all(|item| wanted.contains(&item.as_str()));
        }
        if LANG_ALT.contains(&name.as_str()) && keepsake_xmp::items(existing, name).len() > 1 {
            return false; // other languages would be replaced
        }
        keepsake_xmp::property(existing, name).is_some_and(|had| had == *value)
    })
}

/// A fresh sidecar with `properties`.
pub fn fresh(properties: &[(String, String)]) -> String {
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\" x:xmptk=\"keepsake\">\n \
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n{} </rdf:RDF>\n\
         </x:xmpmeta>\n<?xpacket end=\"w\"?>\n",
        description(properties)
    )
}

/// `existing` with `properties` set, or `None` when `existing` is not an
/// XMP packet keepsake can merge into (then it must be kept as it is).
pub fn merge(existing: &str, properties: &[(String, String)]) -> Option<String> {
    merge_removing(existing, properties, &[])
}

/// [`merge`], also removing the properties named in `remove`. Descriptions
/// left empty by the removals (keepsake's own, from earlier writes) go too,
/// so rewriting a sidecar again and again does not grow it.
pub fn merge_removing(
    existing: &str,
    properties: &[(String, String)],
    remove: &[String],
) -> Option<String> {
    let close = existing.rfind("</rdf:RDF>")?;
    let mut head = existing[..close].to_string();
    for name in properties.iter().map(|(n, _)| n).chain(remove) {
        head = remove_property(&head, name);
    }
    // Its end trimmed: writing the same again gives the same bytes.
    let head = format!("{}\n", drop_empty_descriptions(&head).trim_end());
    let added = if properties.is_empty() {
        String::new()
    } else {
        description(properties)
    };
    Some(format!("{head}{added}{}", &existing[close..]))
}

/// Removes `rdf:Description` elements with nothing left in them: only
/// `xmlns:` and `rdf:about` attributes, and whitespace inside.
fn drop_empty_descriptions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("<rdf:Description") {
        let Some(open_len) = rest[at..].find('>') else {
            break;
        };
        let open = &rest[at..at + open_len + 1];
        let attributes_only_namespaces = open
            .trim_start_matches("<rdf:Description")
            .trim_end_matches('>')
            .trim_end_matches('/')
            .split_whitespace()
            .all(|a| a.starts_with("xmlns:") || a.starts_with("rdf:about="));
        let after = &rest[at + open.len()..];
        let end = if open.ends_with("/>") {
            Some(0)
        } else {
            let inner = after.len() - after.trim_start().len();
            after[inner..]
                .starts_with("</rdf:Description>")
                .then_some(inner + "</rdf:Description>".len())
        };
        match end {
            Some(end) if attributes_only_namespaces => {
                out.push_str(rest[..at].trim_end_matches([' ', '\t']));
                rest = &after[end..];
                rest = rest.strip_prefix('\n').unwrap_or(rest);
            }
            _ => {
                out.push_str(&rest[..at + open.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

const XMP_APP1: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
/// An XMP packet must fit one APP1 segment (65533 bytes with its header).
const MAX_XMP_SEGMENT: usize = 65_533 - XMP_APP1.len();

/// A JPEG with `properties` in its XMP segment: merged into the one it has,
/// or a new one after the EXIF segment. Every byte from the first
/// start-of-scan on (the image data) is copied unchanged. `None` when the
/// file is not a JPEG keepsake can rewrite safely (the caller then writes a
/// sidecar instead).
pub fn embed_jpeg(jpeg: &[u8], properties: &[(String, String)]) -> Option<Vec<u8>> {
    let Segments {
        existing,
        insert_at,
        ..
    } = segments(jpeg)?;
    let packet = match existing {
        Some((start, end)) => {
            let text = std::str::from_utf8(&jpeg[start + 4 + XMP_APP1.len()..end]).ok()?;
            merge(text, properties)?
        }
        None => fresh(properties),
    };
    if packet.len() > MAX_XMP_SEGMENT {
        return None;
    }
    let mut segment = vec![0xFF, 0xE1];
    segment.extend_from_slice(&((2 + XMP_APP1.len() + packet.len()) as u16).to_be_bytes());
    segment.extend_from_slice(XMP_APP1);
    segment.extend_from_slice(packet.as_bytes());
    let mut out = Vec::with_capacity(jpeg.len() + segment.len());
    match existing {
        Some((start, end)) => {
            out.extend_from_slice(&jpeg[..start]);
            out.extend_from_slice(&segment);
            out.extend_from_slice(&jpeg[end..]);
        }
        None => {
            out.extend_from_slice(&jpeg[..insert_at]);
            out.extend_from_slice(&segment);
            out.extend_from_slice(&jpeg[insert_at..]);
        }
    }
    Some(out)
}

/// The XMP packet in a JPEG's XMP segment, if it has one.
pub fn jpeg_xmp(jpeg: &[u8]) -> Option<&str> {
    let (start, end) = segments(jpeg)?.existing?;
    std::str::from_utf8(&jpeg[start + 4 + XMP_APP1.len()..end]).ok()
}

/// The BLAKE3 of a JPEG without its XMP segment: every other byte (EXIF,
/// ICC, tables, image data), which embedding XMP leaves unchanged.
pub fn blake3_without_xmp(jpeg: &[u8]) -> Option<String> {
    let mut hasher = blake3::Hasher::new();
    match segments(jpeg)?.existing {
        Some((start, end)) => {
            hasher.update(&jpeg[..start]);
            hasher.update(&jpeg[end..]);
        }
        None => {
            hasher.update(jpeg);
        }
    }
    Some(hasher.finalize().to_hex().to_string())
}

/// Where a JPEG's metadata segments stand.
struct Segments {
    /// The first XMP segment (start, end).
    existing: Option<(usize, usize)>,
    /// Where a new XMP segment goes (after APP0/APP1).
    insert_at: usize,
}

fn segments(jpeg: &[u8]) -> Option<Segments> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    // Walk the segments up to the image data.
    let mut at = 2usize;
    let mut insert_at = 2usize;
    let mut existing: Option<(usize, usize)> = None;
    loop {
        let marker = *jpeg.get(at + 1)?;
        if *jpeg.get(at)? != 0xFF {
            return None;
        }
        if marker == 0xDA {
            break;
        }
        if marker == 0xD8 || (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            return None; // not where metadata may stand
        }
        let len = u16::from_be_bytes([*jpeg.get(at + 2)?, *jpeg.get(at + 3)?]) as usize;
        let end = at.checked_add(2 + len)?;
        if len < 2 || end > jpeg.len() {
            return None;
        }
        let body = &jpeg[at + 4..end];
        if marker == 0xE1 && body.starts_with(XMP_APP1) && existing.is_none() {
            existing = Some((at, end));
        }
        if matches!(marker, 0xE0 | 0xE1) {
            insert_at = end;
        }
        at = end;
    }
    Some(Segments {
        existing,
        insert_at,
    })
}

/// [`blake3_without_xmp`] of the JPEG at `path` (at most
/// `max_len` bytes, never through a link).
pub fn image_blake3_of(path: &std::path::Path, max_len: u64) -> Option<String> {
    use std::io::Read;
    let mut file = crate::effects::fsops::open_nofollow(path).ok()?;
    if file.metadata().ok()?.len() > max_len {
        return None;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    blake3_without_xmp(&bytes)
}

/// Remove every definition of `name`: attributes (`name="…"`) and elements
/// (`<name …/>` or `<name …>…</name>`).
fn remove_property(text: &str, name: &str) -> String {
    let mut out = text.to_string();
    for _ in 0..64 {
        let Some(at) = find_name(&out, name) else {
            break;
        };
        let before = out[..at].chars().next_back();
        let after_name = at + name.len();
        let end = if before == Some('<') {
            let open_end = match out[after_name..].find('>') {
                Some(i) => after_name + i + 1,
                None => break,
            };
            if out[..open_end].ends_with("/>") {
                open_end
            } else {
                let closing = format!("</{name}>");
                match out[open_end..].find(&closing) {
                    Some(i) => open_end + i + closing.len(),
                    None => break,
                }
            }
        } else {
            // name="value" (or 'value'), with the whitespace before it.
            let rest = &out[after_name..];
            let trimmed = rest.trim_start();
            let Some(value) = trimmed.strip_prefix('=').map(str::trim_start) else {
                break;
            };
            let Some(quote) = value.chars().next().filter(|q| *q == '"' || *q == '\'') else {
                break;
            };
            let Some(close) = value[1..].find(quote) else {
                break;
            };
            out.len() - value.len() + 1 + close + 1
        };
        let start = if before == Some('<') {
            at - 1
        } else {
            out[..at].trim_end().len()
        };
        out.replace_range(start..end, "");
    }
    out
}

/// Where `name` starts as a whole property name (after `<` or whitespace,
/// followed by `=`, `>`, `/` or whitespace).
fn find_name(text: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        let opens = before.is_some_and(|c| c == '<' || c.is_whitespace());
        let closes = after.is_some_and(|c| matches!(c, '=' | '>' | '/') || c.is_whitespace());
        if opens
            && closes
            && (before == Some('<') || text[at + name.len()..].trim_start().starts_with('='))
        {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_merge_that_replaces_a_value_is_not_lossless() {
        let existing = "<rdf:Description xmp:Rating=\"5\">\n\
            <dc:subject><rdf:Bag><rdf:li>beach</rdf:li></rdf:Bag></dc:subject>\n\
            </rdf:Description>";
        let keeps = |list: &[(&str, &str)]| merge_keeps_everything(existing, &props(list));
        assert!(keeps(&[("exif:DateTimeOriginal", "2019-07-04T10:15:30")]));
        assert!(keeps(&[("xmp:Rating", "5")]));
        assert!(keeps(&[("dc:subject", "beach\nfamily")]));
        assert!(!keeps(&[("xmp:Rating", "3")]));
        assert!(!keeps(&[("dc:subject", "family")]));
    }

    #[test]
    fn embedding_changes_nothing_but_the_xmp_segment() {
        // SOI, APP0 (JFIF), a quantization table, SOS, data, EOI.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x07];
        jpeg.extend_from_slice(b"JFIF\0");
        jpeg.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x04, 0x01, 0x02]);
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x11, 0x22, 0x33, 0xFF, 0xD9]);
        let embedded = embed_jpeg(&jpeg, &props(&[("xmp:Rating", "4")])).unwrap();
        assert_ne!(embedded, jpeg);
        assert!(jpeg_xmp(&embedded).unwrap().contains("xmp:Rating"));
        let plain = blake3_without_xmp(&jpeg).unwrap();
        assert_eq!(blake3_without_xmp(&embedded).unwrap(), plain);
        // Embedding again over the first packet: still the same bytes.
        let again = embed_jpeg(&embedded, &props(&[("xmp:Rating", "2")])).unwrap();
        assert_eq!(blake3_without_xmp(&again).unwrap(), plain);
        // Another table (EXIF or pixels edited) is another file.
        let mut edited = embedded.clone();
        let at = edited.len() - 4;
        edited[at] ^= 1;
        assert_ne!(blake3_without_xmp(&edited).unwrap(), plain);
        assert!(blake3_without_xmp(b"not a jpeg").is_none());
    }

    #[test]
    fn merges_without_dropping_anything_else() {
        let existing = "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF xmlns:rdf=\"r\">\n\
            <rdf:Description rdf:about=\"\" xmlns:exif=\"e\" xmlns:xmp=\"x\" exif:DateTimeOriginal=\"2001-01-01T00:00:00\" xmp:Rating=\"5\">\n\
            <dc:subject><rdf:Bag><rdf:li>beach</rdf:li></rdf:Bag></dc:subject>\n\
            <photoshop:DateCreated>2001-01-01</photoshop:DateCreated>\n\
            </rdf:Description></rdf:RDF></x:xmpmeta>";
        let merged = merge(
            existing,
            &props(&[
                ("exif:DateTimeOriginal", "2019-07-04T10:15:30+02:00"),
                ("photoshop:DateCreated", "2019-07-04T10:15:30+02:00"),
            ]),
        )
        .unwrap();
        assert!(merged.contains("xmp:Rating=\"5\""), "{merged}");
        assert!(merged.contains("<rdf:li>beach</rdf:li>"), "{merged}");
        assert!(!merged.contains("2001-01-01"), "{merged}");
        assert_eq!(
            merged.matches("exif:DateTimeOriginal").count(),
            2,
            "one element, open and close: {merged}"
        );
        assert!(merged.ends_with("</rdf:RDF></x:xmpmeta>"));
        assert_eq!(
            merge("not xmp at all", &props(&[("exif:DateTimeOriginal", "x")])),
            None
        );
    }

    #[test]
    fn rewrites_lists_and_drops_what_it_emptied() {
        let first = fresh(&props(&[
            ("xmpDM:Album", "Summer"),
            ("lr:hierarchicalSubject", "People|Anna\nAlbums|Summer"),
        ]));
        assert_eq!(
            keepsake_xmp::items(&first, "lr:hierarchicalSubject"),
            ["People|Anna", "Albums|Summer"]
        );
        let mut text = first.clone();
        for _ in 0..3 {
            text = merge_removing(
                &text,
                &props(&[("xmp:Rating", "5")]),
                &[
                    "xmpDM:Album".to_string(),
                    "lr:hierarchicalSubject".to_string(),
                ],
            )
            .unwrap();
        }
        assert_eq!(text.matches("<rdf:Description").count(), 1, "{text}");
        assert_eq!(
            keepsake_xmp::property(&text, "xmp:Rating").as_deref(),
            Some("5")
        );
        assert!(keepsake_xmp::items(&text, "lr:hierarchicalSubject").is_empty());
        assert!(!text.contains("xmpDM:Album"), "{text}");
    }

    #[test]
    fn validates_names_and_values() {
        assert!(validate("exif:DateTimeOriginal", "2019-07-04T10:15:30").is_ok());
        assert!(validate("evil:Thing", "x").is_err());
        assert!(validate("exif:Date Time", "x").is_err());
        assert!(validate("exif:DateTimeOriginal", "a\u{0}b").is_err());
        let fresh = fresh(&props(&[("dc:title", "Tom & Jerry <3")]));
        assert!(fresh.contains("Tom &amp; Jerry &lt;3"), "{fresh}");
        assert!(fresh.contains("xmlns:dc=\"http://purl.org/dc/elements/1.1/\""));
    }
}
