//! Dates in XMP packets (sidecars and embedded), by the property names
//! Immich and exiftool read, in either of XMP's spellings: an attribute
//! (`exif:DateTimeOriginal="…"`) or an element (`<exif:DateTimeOriginal>…<`).

/// XMP date properties, most specific first.
pub const DATE_PROPERTIES: &[&str] = &[
    "exif:DateTimeOriginal",
    "photoshop:DateCreated",
    "xmp:CreateDate",
];

pub use keepsake_sdk::xmp::property;

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
    fn first_date_takes_the_most_specific() {
        let elem = "<rdf:Description>\n <photoshop:DateCreated>2019-07-04</photoshop:DateCreated>\n</rdf:Description>";
        assert_eq!(
            first_date(elem),
            Some(("photoshop:DateCreated", "2019-07-04".into()))
        );
    }
}
