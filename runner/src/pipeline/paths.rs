//! Validation of paths that come from plugins: they are untrusted.

/// Longest relative path a stage may ask for, in bytes.
const MAX_PATH: usize = 1024;
/// Longest single name (most filesystems allow 255 bytes).
pub const MAX_NAME: usize = 255;
/// Longest name keepsake gives a placed file: room is left for a number
/// (`_12`) and for the names of its sidecars (`.xmp`,
/// `.supplemental-metadata.json`), which follow the placed name.
pub const MAX_PLACED_NAME: usize = MAX_NAME - 32;

/// `name` cut to at most `max` bytes: the stem is shortened on a UTF-8
/// boundary and the extension (up to 16 bytes) is kept.
pub fn fit_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    let mut cut = max.saturating_sub(ext.len()).min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &stem[..cut])
}

/// A placement's path with its file name cut to [`MAX_PLACED_NAME`].
pub fn fit_placed(path: &str) -> String {
    match path.rfind('/') {
        Some(slash) => format!(
            "{}{}",
            &path[..=slash],
            fit_name(&path[slash + 1..], MAX_PLACED_NAME)
        ),
        None => fit_name(path, MAX_PLACED_NAME),
    }
}

/// Check a `/`-separated path relative to a root: no `..`, not absolute, no
/// NUL or control characters, no empty or dot components, sane lengths, and
/// nothing under keepsake's own `.keepsake` folder.
pub fn validate_relative(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!(
            "the path is {} bytes long (at most {MAX_PATH})",
            path.len()
        ));
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(format!(
            "{path:?} is absolute; paths are relative to their root"
        ));
    }
    if path.chars().any(|c| c == '\0' || c.is_control()) {
        return Err(format!("{path:?} contains a NUL or control character"));
    }
    for part in path.split('/') {
        match part {
            "" => return Err(format!("{path:?} has an empty component")),
            "." | ".." => {
                return Err(format!(
                    "{path:?} leaves its folder ({part:?} is not allowed)"
                ));
            }
            _ if part.len() > MAX_NAME => {
                return Err(format!("{path:?} has a name longer than {MAX_NAME} bytes"));
            }
            _ if part.starts_with(".keepsake") => {
                return Err(format!("{path:?} is inside keepsake's own state"));
            }
            _ if part.contains('\\') => {
                return Err(format!("{path:?} contains a backslash"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `name` with ` (n)`-free numbering before the extension: `a.jpg` → `a_1.jpg`.
pub fn numbered(path: &str, n: u32) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(slash) => (&path[..=slash], &path[slash + 1..]),
        None => ("", path),
    };
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{dir}{}_{n}{}", &name[..dot], &name[dot..]),
        _ => format!("{dir}{name}_{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\0b",
            "a/.keepsake/x",
            "a\\..\\b",
        ] {
            assert!(validate_relative(bad).is_err(), "{bad:?}");
        }
        assert!(validate_relative(&"x/".repeat(600)).is_err());
        assert!(validate_relative(&"n".repeat(256)).is_err());
        for good in [
            "2024/05/a.jpg",
            "screens/Screenshot 1.png",
            "undated/ünïcödé.heic",
        ] {
            assert!(validate_relative(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary_keeping_the_extension() {
        let stem = format!("{}é", "a".repeat(240));
        let name = format!("20031204_064652_{stem}.jpg");
        let fitted = fit_placed(&format!("2003/12/{name}"));
        let file = fitted.rsplit('/').next().unwrap();
        assert!(file.len() <= MAX_PLACED_NAME, "{}", file.len());
        assert!(file.ends_with(".jpg") && file.starts_with("20031204_064652_aaa"));
        assert!(numbered(&fitted, 99).len() - "2003/12/".len() <= MAX_NAME);
        // A cut inside a two-byte character moves before it.
        let tight = fit_name("ééé.jpg", 7);
        assert_eq!(tight, "é.jpg");
        assert_eq!(fit_name("short.jpg", 200), "short.jpg");
    }

    #[test]
    fn numbers_before_the_extension() {
        assert_eq!(numbered("2024/05/a.jpg", 1), "2024/05/a_1.jpg");
        assert_eq!(numbered("noext", 2), "noext_2");
        assert_eq!(numbered(".hidden", 2), ".hidden_2");
    }
}
