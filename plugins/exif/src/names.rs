//! Capture times that phones and apps write into file and folder names.

use crate::time::Stamp;

/// A date read from a name: the stamp, whether it is UTC, whether it has a
/// time of day, and which pattern matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameDate {
    pub stamp: Stamp,
    pub utc: bool,
    pub has_time: bool,
    pub pattern: &'static str,
}

fn digits(bytes: &[u8], at: usize, n: usize) -> Option<u32> {
    let part = bytes.get(at..at + n)?;
    if !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(part).ok()?.parse().ok()
}

fn is_digit_at(bytes: &[u8], at: usize) -> bool {
    bytes.get(at).is_some_and(u8::is_ascii_digit)
}

/// A date `YYYYMMDD` at `at` that is not part of a longer number.
fn compact_date(bytes: &[u8], at: usize) -> Option<(i32, u32, u32)> {
    if at > 0 && is_digit_at(bytes, at - 1) {
        return None;
    }
    let year = digits(bytes, at, 4)? as i32;
    let month = digits(bytes, at + 4, 2)?;
    let day = digits(bytes, at + 6, 2)?;
    ((1970..=2100).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day))
        .then_some((year, month, day))
}

/// A date `YYYY-MM-DD` (or with `_`/`.`) at `at`.
fn dashed_date(bytes: &[u8], at: usize) -> Option<(i32, u32, u32)> {
    if at > 0 && is_digit_at(bytes, at - 1) {
        return None;
    }
    let sep = *bytes.get(at + 4)?;
    if !matches!(sep, b'-' | b'_' | b'.') || bytes.get(at + 7) != Some(&sep) {
        return None;
    }
    let year = digits(bytes, at, 4)? as i32;
    let month = digits(bytes, at + 5, 2)?;
    let day = digits(bytes, at + 8, 2)?;
    ((1970..=2100).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day))
        .then_some((year, month, day))
}

/// `HHMMSS` at `at`, or `HH?MM?SS` with one separator byte between parts.
fn time_at(bytes: &[u8], at: usize) -> Option<((u32, u32, u32), usize)> {
    if let (Some(h), Some(m), Some(s)) = (
        digits(bytes, at, 2),
        digits(bytes, at + 2, 2),
        digits(bytes, at + 4, 2),
    ) {
        return (h < 24 && m < 60 && s < 60).then_some(((h, m, s), 6));
    }
    let sep = *bytes.get(at + 2)?;
    if !matches!(sep, b'-' | b'.' | b':' | b'_') || bytes.get(at + 5) != Some(&sep) {
        return None;
    }
    let (h, m, s) = (
        digits(bytes, at, 2)?,
        digits(bytes, at + 3, 2)?,
        digits(bytes, at + 6, 2)?,
    );
    (h < 24 && m < 60 && s < 60).then_some(((h, m, s), 8))
}

/// The capture time in a file name, if it follows a known pattern.
pub fn from_file_name(name: &str) -> Option<NameDate> {
    let bytes = name.as_bytes();
    let upper = name.to_ascii_uppercase();
    // Pixel: PXL_20230101_120000123 is UTC, with milliseconds.
    if let Some(at) = upper.find("PXL_")
        && let Some((y, mo, d)) = compact_date(bytes, at + 4)
        && bytes.get(at + 12) == Some(&b'_')
        && let Some(((h, mi, s), _)) = time_at(bytes, at + 13)
    {
        let mut stamp = Stamp::new(y, mo, d, h, mi, s);
        if let Some(ms) = digits(bytes, at + 19, 3) {
            stamp.nanos = ms * 1_000_000;
        }
        return Some(NameDate {
            stamp,
            utc: true,
            has_time: true,
            pattern: "pixel",
        });
    }
    // WhatsApp: IMG-20230101-WA0001 has the date only.
    if let Some(at) = upper.find("-WA")
        && at >= 9
        && bytes[at - 9] == b'-'
        && let Some((y, mo, d)) = compact_date(bytes, at - 8)
        && is_digit_at(bytes, at + 3)
    {
        return Some(NameDate {
            stamp: Stamp::new(y, mo, d, 0, 0, 0),
            utc: false,
            has_time: false,
            pattern: "whatsapp",
        });
    }
    for at in 0..bytes.len() {
        // 20230101_120000 / 20230101-120000 (IMG_, VID_, Samsung,
        // Android screenshots, phockup) and 20230101120000 (DJI).
        if let Some((y, mo, d)) = compact_date(bytes, at) {
            let time = match bytes.get(at + 8) {
                Some(b'_' | b'-') => time_at(bytes, at + 9).filter(|(_, n)| *n == 6),
                Some(c) if c.is_ascii_digit() => time_at(bytes, at + 8).filter(|(_, n)| *n == 6),
                _ => None,
            };
            if let Some(((h, mi, s), _)) = time {
                return Some(NameDate {
                    stamp: Stamp::new(y, mo, d, h, mi, s),
                    utc: false,
                    has_time: true,
                    pattern: "compact",
                });
            }
        }
        // 2023-01-01 at 12.00.00 (macOS/iOS screenshots), signal-2023-01-01-120000,
        // photo_2023-01-01_12-00-00 (Telegram).
        if let Some((y, mo, d)) = dashed_date(bytes, at) {
            let after = at + 10;
            let time_start = if upper.get(after..after + 4) == Some(" AT ") {
                Some(after + 4)
            } else if matches!(bytes.get(after), Some(b'-' | b'_' | b' ' | b'T')) {
                Some(after + 1)
            } else {
                None
            };
            if let Some(((h, mi, s), _)) = time_start.and_then(|t| time_at(bytes, t)) {
                return Some(NameDate {
                    stamp: Stamp::new(y, mo, d, h, mi, s),
                    utc: false,
                    has_time: true,
                    pattern: "dashed",
                });
            }
        }
    }
    None
}

/// A dated folder: `2019/07/04/…` or `2019-07-04 Trip/…` (the deepest wins).
pub fn from_folders(relative_path: &str) -> Option<NameDate> {
    let parts: Vec<&str> = relative_path.split('/').collect();
    let folders = &parts[..parts.len().saturating_sub(1)];
    for i in (0..folders.len()).rev() {
        let part = folders[i].as_bytes();
        if let Some((y, mo, d)) = dashed_date(part, 0) {
            return Some(NameDate {
                stamp: Stamp::new(y, mo, d, 0, 0, 0),
                utc: false,
                has_time: false,
                pattern: "folder",
            });
        }
        if i >= 2
            && folders[i].len() == 2
            && folders[i - 1].len() == 2
            && folders[i - 2].len() == 4
            && let (Some(y), Some(mo), Some(d)) = (
                digits(folders[i - 2].as_bytes(), 0, 4),
                digits(folders[i - 1].as_bytes(), 0, 2),
                digits(part, 0, 2),
            )
            && (1970..=2100).contains(&(y as i32))
            && (1..=12).contains(&mo)
            && (1..=31).contains(&d)
        {
            return Some(NameDate {
                stamp: Stamp::new(y as i32, mo, d, 0, 0, 0),
                utc: false,
                has_time: false,
                pattern: "folder",
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(name: &str) -> Option<(Stamp, bool, bool)> {
        from_file_name(name).map(|d| (d.stamp, d.utc, d.has_time))
    }

    #[test]
    fn every_pattern() {
        let mut pixel = Stamp::new(2023, 1, 2, 3, 4, 5);
        pixel.nanos = 678_000_000;
        assert_eq!(
            stamp("PXL_20230102_030405678.jpg"),
            Some((pixel, true, true))
        );
        let t = Stamp::new(2019, 7, 4, 10, 15, 30);
        for name in [
            "IMG_20190704_101530.jpg",
            "VID_20190704_101530.mp4",
            "20190704_101530.jpg",
            "Screenshot_20190704-101530.png",
            "Screenshot 2019-07-04 at 10.15.30.png",
            "signal-2019-07-04-101530.jpg",
            "photo_2019-07-04_10-15-30.jpg",
            "DJI_20190704101530_0001_W.JPG",
            "date_20190704_101530.jpg",
        ] {
            assert_eq!(stamp(name), Some((t, false, true)), "{name}");
        }
        assert_eq!(
            stamp("IMG-20190704-WA0007.jpg"),
            Some((Stamp::new(2019, 7, 4, 0, 0, 0), false, false))
        );
        for name in [
            "IMG_1234.JPG",
            "DSC01234.JPG",
            "120190704_101530.jpg",
            "IMG_20191304_101530.jpg",
            "IMG_20190704_256100.jpg",
        ] {
            assert_eq!(stamp(name), None, "{name}");
        }
    }

    #[test]
    fn dated_folders() {
        assert_eq!(
            from_folders("2019/07/04/IMG_1.jpg").map(|d| d.stamp),
            Some(Stamp::new(2019, 7, 4, 0, 0, 0))
        );
        assert_eq!(
            from_folders("trips/2019-07-04 Beach/IMG_1.jpg").map(|d| d.stamp),
            Some(Stamp::new(2019, 7, 4, 0, 0, 0))
        );
        assert_eq!(from_folders("2019/IMG_1.jpg"), None);
        assert_eq!(from_folders("IMG_1.jpg"), None);
    }
}
