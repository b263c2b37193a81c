//! Dates as the metadata spells them, and the checks that throw out the
//! ones that cannot be capture times.

use keepsake_sdk::calendar::{civil_from_days, days_from_civil};

/// A wall-clock date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

/// Camera defaults after a clock reset (battery out, factory settings):
/// values that are valid dates but never the moment a photo was taken.
/// Matched exactly, to the second.
pub const CLOCK_RESET_DEFAULTS: &[(i32, u32, u32, u32, u32, u32)] = &[
    (1980, 1, 1, 0, 0, 0),   // FAT/DOS epoch, many cheap cameras and phones
    (2000, 1, 1, 0, 0, 0),   // common firmware default
    (2001, 1, 1, 0, 0, 0),   // some Nikon and Canon compacts
    (2002, 12, 8, 12, 0, 0), // Motorola and other phones (seen in the corpus)
    (2004, 1, 1, 0, 0, 0),   // some Samsung and Sony models
    (2010, 1, 1, 0, 0, 0),   // some action cameras
];

impl Stamp {
    pub fn new(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Stamp {
        Stamp {
            year,
            month,
            day,
            hour,
            minute,
            second,
            nanos: 0,
        }
    }

    /// Why this cannot be a capture time, if it cannot. `now` is Unix
    /// seconds; a naive time is compared as if it were UTC, with a day of slack.
    pub fn invalid_reason(&self, offset_minutes: Option<i16>, now: i64) -> Option<&'static str> {
        if self.year == 0 && self.month == 0 && self.day == 0 {
            return Some("zero date");
        }
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
            || self.nanos >= 1_000_000_000
        {
            return Some("out-of-range field");
        }
        if self.year < 1970 {
            return Some("before 1970 (a clock reset)");
        }
        if self.is_unix_epoch(offset_minutes) {
            return Some("the Unix epoch (a reset clock)");
        }
        if CLOCK_RESET_DEFAULTS.contains(&(
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
        )) {
            return Some("a camera's clock-reset default");
        }
        if self.unix(offset_minutes.unwrap_or(0)) > now + 86_400 {
            return Some("more than a day in the future");
        }
        None
    }

    /// Whether this is the Unix epoch, the time a clock that lost its
    /// setting counts from: 1970-01-01 00:00:00 as written, the instant 0
    /// where an offset is stated, and, without one, the epoch in the local
    /// time of any zone (up to 14 h ahead; the hours behind fall before
    /// 1970): 1970-01-01 at a whole hour, or at :30 or :45, with no seconds.
    fn is_unix_epoch(&self, offset_minutes: Option<i16>) -> bool {
        if (self.year, self.month, self.day) != (1970, 1, 1) || self.second != 0 {
            return false;
        }
        if (self.hour, self.minute) == (0, 0) {
            return true;
        }
        match offset_minutes {
            Some(offset) => self.unix(offset) == 0,
            None => self.hour <= 14 && matches!(self.minute, 0 | 30 | 45),
        }
    }

    /// Unix seconds, reading the stamp at `offset_minutes` from UTC.
    pub fn unix(&self, offset_minutes: i16) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        days * 86_400 + (self.hour * 3600 + self.minute * 60 + self.second.min(59)) as i64
            - offset_minutes as i64 * 60
    }

    /// The UTC wall time of a Unix instant.
    pub fn from_unix(secs: i64) -> Stamp {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Stamp::new(year, month, day, rem / 3600, rem / 60 % 60, rem % 60)
    }

    pub fn with_fraction(mut self, digits: &str) -> Stamp {
        let digits: String = digits
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .take(9)
            .collect();
        if !digits.is_empty()
            && let Ok(n) = format!("{digits:0<9}").parse::<u32>()
        {
            self.nanos = n;
        }
        self
    }
}

impl Stamp {
    /// ISO 8601 as XMP writes it; the offset only when known.
    pub fn iso(&self, offset_minutes: Option<i16>) -> String {
        let mut out = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.nanos > 0 {
            let fraction = format!("{:09}", self.nanos);
            out.push('.');
            out.push_str(fraction.trim_end_matches('0'));
        }
        if let Some(offset) = offset_minutes {
            let sign = if offset < 0 { '-' } else { '+' };
            let abs = offset.unsigned_abs();
            out.push_str(&format!("{sign}{:02}:{:02}", abs / 60, abs % 60));
        }
        out
    }
}

pub fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `+02:00`, `-0500`, `+02`, `Z` → minutes east of UTC.
pub fn parse_offset(text: &str) -> Option<i16> {
    let text = text.trim();
    if !text.is_ascii() {
        return None;
    }
    if text == "Z" || text == "z" {
        return Some(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    let (h, m) = match digits.len() {
        2 => (number(&digits)?, 0),
        4 => (number(&digits[..2])?, number(&digits[2..])?),
        _ => return None,
    };
    if h > 18 || m > 59 {
        return None;
    }
    Some(sign * (h * 60 + m) as i16)
}

/// `YYYY:MM:DD HH:MM:SS[.fff][offset]` as EXIF, XMP and QuickTime write it
/// (`-` or `:` between date parts, ` ` or `T` before the time). A date with
/// no time is taken at midnight. Returns the stamp and the offset if given.
pub fn parse_datetime(text: &str) -> Option<(Stamp, Option<i16>)> {
    // Metadata dates are ASCII; whatever follows a non-ASCII byte is not a
    // date, and cutting there keeps every slice below on a char boundary.
    let text = &text[..text.find(|c: char| !c.is_ascii()).unwrap_or(text.len())];
    let text = text.trim().trim_end_matches('\0').trim();
    if text.len() < 10 || !text.is_char_boundary(10) {
        return None;
    }
    let date = &text[..10];
    let sep = date.as_bytes()[4];
    if !(sep == b':' || sep == b'-') || date.as_bytes()[7] != sep {
        return None;
    }
    let year = number(&date[..4])? as i32;
    let month = number(&date[5..7])?;
    let day = number(&date[8..10])?;
    let rest = &text[10..];
    if rest.is_empty() {
        return Some((Stamp::new(year, month, day, 0, 0, 0), None));
    }
    let rest = rest.strip_prefix([' ', 'T'])?;
    if rest.len() < 5 || !rest.is_char_boundary(5) {
        return None;
    }
    let hour = number(&rest[..2])?;
    if rest.as_bytes()[2] != b':' {
        return None;
    }
    let minute = number(&rest[3..5])?;
    let mut rest = &rest[5..];
    let mut second = 0;
    if let Some(after) = rest.strip_prefix(':') {
        if after.len() < 2 || !after.is_char_boundary(2) {
            return None;
        }
        second = number(&after[..2])?;
        rest = &after[2..];
    }
    let mut stamp = Stamp::new(year, month, day, hour, minute, second);
    if let Some(after) = rest.strip_prefix('.') {
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        stamp = stamp.with_fraction(&digits);
        rest = &after[digits.len()..];
    }
    // Trailing words some writers add (exiftool shows "+02:00 DST").
    let rest = rest.split_whitespace().next().unwrap_or("");
    let offset = if rest.is_empty() {
        None
    } else {
        Some(parse_offset(rest)?)
    };
    Some((stamp, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_metadata_writes() {
        let (s, o) = parse_datetime("2019:07:24 11:25:40+03:00").unwrap();
        assert_eq!((s, o), (Stamp::new(2019, 7, 24, 11, 25, 40), Some(180)));
        let (s, o) = parse_datetime("2022-01-10T15:15:44.31").unwrap();
        assert_eq!(s.nanos, 310_000_000);
        assert_eq!(o, None);
        assert_eq!(parse_datetime("2012-12-31T04:35:10Z").unwrap().1, Some(0));
        assert_eq!(
            parse_datetime("2023-02-02").unwrap().0,
            Stamp::new(2023, 2, 2, 0, 0, 0)
        );
        assert_eq!(
            parse_datetime("2019:04:24 22:24:00+02:00 DST").unwrap().1,
            Some(120)
        );
        for bad in [
            "",
            "    :  :     :  :  ",
            "2019:07:24 1",
            "abcd:ef:gh",
            "2019:07:24X11:25:40",
            "é2019:07:24",
        ] {
            assert!(parse_datetime(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_what_cannot_be_a_capture_time() {
        let now = Stamp::new(2026, 1, 1, 0, 0, 0).unix(0);
        assert_eq!(
            Stamp::new(0, 0, 0, 0, 0, 0).invalid_reason(None, now),
            Some("zero date")
        );
        assert!(
            Stamp::new(2019, 2, 29, 0, 0, 0)
                .invalid_reason(None, now)
                .is_some()
        );
        assert!(
            Stamp::new(1969, 12, 31, 0, 0, 0)
                .invalid_reason(None, now)
                .is_some()
        );
        assert!(
            Stamp::new(2002, 12, 8, 12, 0, 0)
                .invalid_reason(None, now)
                .is_some()
        );
        assert!(
            Stamp::new(2026, 1, 3, 0, 0, 0)
                .invalid_reason(None, now)
                .is_some()
        );
        assert_eq!(
            Stamp::new(2020, 2, 29, 23, 59, 59).invalid_reason(Some(-300), now),
            None
        );
    }

    #[test]
    fn the_unix_epoch_is_a_reset_clock_in_any_zone() {
        let now = Stamp::new(2026, 1, 1, 0, 0, 0).unix(0);
        let epoch = Some("the Unix epoch (a reset clock)");
        for (stamp, offset) in [
            (Stamp::new(1970, 1, 1, 0, 0, 0), None),
            (Stamp::new(1970, 1, 1, 0, 0, 0), Some(-300)),
            (Stamp::new(1970, 1, 1, 0, 0, 0), Some(540)),
            (Stamp::new(1970, 1, 1, 9, 0, 0), None),
            (Stamp::new(1970, 1, 1, 9, 0, 0), Some(540)),
            (Stamp::new(1970, 1, 1, 5, 30, 0), None),
            (Stamp::new(1970, 1, 1, 5, 45, 0), Some(345)),
            (Stamp::new(1970, 1, 1, 14, 0, 0), None),
        ] {
            assert_eq!(
                stamp.invalid_reason(offset, now),
                epoch,
                "{stamp:?} {offset:?}"
            );
        }
        // The epoch behind UTC falls before 1970.
        assert!(
            Stamp::new(1969, 12, 31, 19, 0, 0)
                .invalid_reason(None, now)
                .is_some()
        );
        // Real moments of that day stay.
        for (stamp, offset) in [
            (Stamp::new(1970, 1, 1, 9, 0, 0), Some(0)),
            (Stamp::new(1970, 1, 1, 10, 17, 0), None),
            (Stamp::new(1970, 1, 1, 3, 0, 12), None),
            (Stamp::new(1970, 1, 1, 15, 0, 0), None),
            (Stamp::new(1970, 1, 2, 0, 0, 0), None),
        ] {
            assert_eq!(
                stamp.invalid_reason(offset, now),
                None,
                "{stamp:?} {offset:?}"
            );
        }
    }

    #[test]
    fn unix_round_trips() {
        for secs in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(Stamp::from_unix(secs).unix(0), secs);
        }
        assert_eq!(
            Stamp::new(2019, 7, 24, 11, 25, 40).unix(180),
            Stamp::new(2019, 7, 24, 8, 25, 40).unix(0)
        );
    }
}
