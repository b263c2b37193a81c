//! XMP as keepsake reads it, on the host and in stages alike: the text of a
//! property in either of XMP's spellings, an attribute
//! (`exif:DateTimeOriginal="…"`) or an element
//! (`<exif:DateTimeOriginal>…</exif:DateTimeOriginal>`), and the items of a
//! list property (`rdf:Bag`, `rdf:Seq`, `rdf:Alt`).
//!
//! A string search, not an XML parser: prefixes are taken as written (every
//! writer keepsake has met uses the usual ones), and anything it cannot read
//! is simply absent.

/// The text of a simple property, if present. For a language alternative
/// (`dc:description`), the first item.
pub fn property(xmp: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(at) = find_name(xmp, name, from) {
        from = at + name.len();
        let before = xmp[..at].chars().next_back();
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
            if let Some(first) = list_at(xmp, at, name).into_iter().next() {
                return Some(first);
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

/// The items of a list property (`<name><rdf:Bag><rdf:li>…</rdf:li>…`), in
/// order, from every place it is defined; empty when there is none.
pub fn items(xmp: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = find_name(xmp, name, from) {
        from = at + name.len();
        if xmp[..at].ends_with('<') {
            out.extend(list_at(xmp, at, name));
        }
    }
    out
}

/// The `rdf:li` texts of the element `name` that starts at `at`.
fn list_at(xmp: &str, at: usize, name: &str) -> Vec<String> {
    let rest = &xmp[at + name.len()..];
    let Some(open_end) = rest.find('>') else {
        return Vec::new();
    };
    if rest[..open_end].ends_with('/') {
        return Vec::new();
    }
    let body = &rest[open_end + 1..];
    let body = match body.find(&format!("</{name}>")) {
        Some(end) => &body[..end],
        None => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = body[from..].find("<rdf:li") {
        let start = from + i + "<rdf:li".len();
        let Some(tag_end) = body[start..].find('>') else {
            break;
        };
        let text_start = start + tag_end + 1;
        from = text_start;
        if body[start..text_start].ends_with("/>") {
            continue;
        }
        let Some(text_end) = body[text_start..].find("</rdf:li>") else {
            break;
        };
        out.push(unescape(body[text_start..text_start + text_end].trim()));
        from = text_start + text_end;
    }
    out
}

/// Where `name` stands alone as a property name from `from` on: after `<`
/// or whitespace, and followed by `=`, `>`, `/` or whitespace.
fn find_name(xmp: &str, name: &str, mut from: usize) -> Option<usize> {
    while let Some(i) = xmp.get(from..)?.find(name) {
        let at = from + i;
        from = at + name.len();
        let before = xmp[..at].chars().next_back();
        let after = xmp[from..].chars().next();
        if matches!(before, Some('<' | ' ' | '\t' | '\n' | '\r'))
            && after.is_some_and(|c| matches!(c, '=' | '>' | '/') || c.is_whitespace())
        {
            return Some(at);
        }
    }
    None
}

/// XML's five entities and numeric references.
pub fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "amp" => Some('&'),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The albums a sidecar names: `lr:hierarchicalSubject` items under
/// `Albums|` (keepsake's write-back, which Immich shows as tags), else
/// `xmpDM:Album` (elodie's and others' single album). Sorted, without
/// repeats.
pub fn albums(xmp: &str) -> Vec<String> {
    let mut names: Vec<String> = items(xmp, "lr:hierarchicalSubject")
        .into_iter()
        .filter_map(|item| item.strip_prefix(ALBUM_TAG).map(str::to_string))
        .filter(|name| !name.is_empty())
        .collect();
    if names.is_empty()
        && let Some(album) = property(xmp, "xmpDM:Album").filter(|a| !a.is_empty())
    {
        names.push(album);
    }
    names.sort();
    names.dedup();
    names
}

/// The `lr:hierarchicalSubject` prefix of album tags.
pub const ALBUM_TAG: &str = "Albums|";

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

    #[test]
    fn lists_and_language_alternatives() {
        let xmp = "<rdf:Description>\n\
            <dc:description><rdf:Alt><rdf:li xml:lang=\"x-default\">Tom &amp; Jerry &#233;t&#xE9;</rdf:li></rdf:Alt></dc:description>\n\
            <lr:hierarchicalSubject>\n <rdf:Bag>\n  <rdf:li>Albums|Summer 2024</rdf:li>\n  <rdf:li>People|Anna</rdf:li>\n  <rdf:li>Albums|Family</rdf:li>\n </rdf:Bag>\n</lr:hierarchicalSubject>\n\
            <xmpDM:Album>Ignored when tags name albums</xmpDM:Album>\n\
            </rdf:Description>";
        assert_eq!(
            property(xmp, "dc:description").as_deref(),
            Some("Tom & Jerry été")
        );
        assert_eq!(
            items(xmp, "lr:hierarchicalSubject"),
            ["Albums|Summer 2024", "People|Anna", "Albums|Family"]
        );
        assert_eq!(albums(xmp), ["Family", "Summer 2024"]);
        assert_eq!(albums("<x xmpDM:Album=\"Trip\"/>"), ["Trip"]);
        assert!(items("<lr:hierarchicalSubject/>", "lr:hierarchicalSubject").is_empty());
        assert_eq!(unescape("a & b &bogus; &#xZZ;"), "a & b &bogus; &#xZZ;");
    }
}
