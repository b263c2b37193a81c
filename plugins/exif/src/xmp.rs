//! Dates in XMP packets (sidecars and embedded), by the property names
//! Immich and exiftool read, in either of XMP's spellings: an attribute
//! (`exif:DateTimeOriginal="…"`) or an element (`<exif:DateTimeOriginal>…<`).

/// XMP date properties, most specific first.
pub const DATE_PROPERTIES: &[&str] = &[
    "exif:DateTimeOriginal",
    "photoshop:DateCreated",
    "xmp:CreateDate",
];

/// The text of an XMP property, if present.
pub fn property(xmp: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(found) = xmp[from..].find(name) {
        let at = from + found;
        from = at + name.len();
        // The name must stand alone (not a prefix of a longer name).
        let before = xmp[..at].chars().next_back();
        if !matches!(before, Some('<' | ' ' | '\t' | '\n' | '\r')) {
            continue;
        }
        let rest = &xmp[at + name.len()..];
        if before == Some('<') {
            // <name ...>value</name>
            let Some(close) = rest.find('>') else {
                continue;
            };
            if rest[..close].ends_with('/') {
                continue;
            }
            let value = &rest[close + 1..];
            let Some(end) = value.find('<') else { continue };
            let text = value[..end].trim();
            if !text.is_empty() {
                return Some(unescape(text));
            }
        } else {
            // name="value"
            let rest = rest.trim_start();
            let Some(rest) = rest.strip_prefix('=') else {
                continue;
            };
            let rest = rest.trim_start();
            let quote = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => q,
                _ => continue,
            };
            let value = &rest[1..];
            let Some(end) = value.find(quote) else {
                continue;
            };
            return Some(unescape(&value[..end]));
        }
    }
    None
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The first date property present, with its name.
pub fn first_date(xmp: &str) -> Option<(&'static str, String)> {
    DATE_PROPERTIES
        .iter()
        .find_map(|name| property(xmp, name).map(|value| (*name, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings() {
        let attr = r#"<rdf:Description xmlns:exif="x" exif:DateTimeOriginal="2019-07-04T10:15:30+02:00"/>"#;
        assert_eq!(
            property(attr, "exif:DateTimeOriginal").as_deref(),
            Some("2019-07-04T10:15:30+02:00")
        );
        let elem = "<rdf:Description>\n <photoshop:DateCreated>2019-07-04</photoshop:DateCreated>\n</rdf:Description>";
        assert_eq!(
            first_date(elem),
            Some(("photoshop:DateCreated", "2019-07-04".into()))
        );
        assert_eq!(
            property("<x exif:DateTimeOriginalX=\"1\"/>", "exif:DateTimeOriginal"),
            None
        );
        assert_eq!(
            property("<a><exif:DateTimeOriginal/></a>", "exif:DateTimeOriginal"),
            None
        );
        assert_eq!(
            property(
                "exif:DateTimeOriginal=\"unterminated",
                "exif:DateTimeOriginal"
            ),
            None
        );
    }
}
