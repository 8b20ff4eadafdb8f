//! `strftime` over a UTC timestamp, as Python's `datetime.now().strftime(fmt)` prints a naive
//! datetime on glibc in the C locale (HF's `strftime_now` global).

use std::fmt::Write as _;
use std::time::Duration;

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A broken-down UTC time.
#[derive(Debug, PartialEq)]
struct Civil {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micros: u32,
    /// 0 = Sunday
    weekday: u32,
    /// 0-based day of the year
    yday: u32,
}

impl Civil {
    fn from_unix(since_epoch: Duration) -> Civil {
        let secs = since_epoch.as_secs();
        let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
        let rem = (secs % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        let jan1 = days_from_civil(year, 1, 1);
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            micros: since_epoch.subsec_micros(),
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
            yday: (days - jan1) as u32,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats `since_epoch` (UTC, naive: `%z` and `%Z` are empty) with a strftime pattern.
///
/// Supports the C-locale directives Python documents plus glibc's `%-d`-style unpadded forms,
/// `%e`, `%F`, `%T`, `%D`, `%R`, `%h`, `%n`, `%t`, `%s`; unknown directives are kept verbatim.
pub fn strftime(format: &str, since_epoch: Duration) -> String {
    let t = Civil::from_unix(since_epoch);
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.next_if_eq(&'-').is_some();
        let Some(directive) = chars.next() else {
            out.push('%');
            break;
        };
        if !write_directive(&mut out, directive, unpadded, &t, since_epoch) {
            out.push('%');
            if unpadded {
                out.push('-');
            }
            out.push(directive);
        }
    }
    out
}

/// Writes one directive; false when it is not one we know.
fn write_directive(out: &mut String, d: char, unpadded: bool, t: &Civil, raw: Duration) -> bool {
    let num = |out: &mut String, n: i64, width: usize| {
        let _ = if unpadded {
            write!(out, "{n}")
        } else {
            write!(out, "{n:0width$}")
        };
    };
    let hour12 = match t.hour % 12 {
        0 => 12,
        h => h,
    };
    let weekday = WEEKDAYS[t.weekday as usize % 7];
    let month = MONTHS[(t.month as usize + 11) % 12];
    match d {
        'a' => out.push_str(&weekday[..3]),
        'A' => out.push_str(weekday),
        'b' | 'h' => out.push_str(&month[..3]),
        'B' => out.push_str(month),
        'd' => num(out, t.day.into(), 2),
        'e' if unpadded => num(out, t.day.into(), 1),
        'e' => {
            let _ = write!(out, "{:>2}", t.day);
        }
        'm' => num(out, t.month.into(), 2),
        'y' => num(out, t.year.rem_euclid(100), 2),
        'Y' => num(out, t.year, 1),
        'H' => num(out, t.hour.into(), 2),
        'I' => num(out, hour12.into(), 2),
        'M' => num(out, t.minute.into(), 2),
        'S' => num(out, t.second.into(), 2),
        'f' => num(out, t.micros.into(), 6),
        'p' => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
        'j' => num(out, i64::from(t.yday) + 1, 3),
        'w' => num(out, t.weekday.into(), 1),
        'u' => num(out, (i64::from(t.weekday) + 6) % 7 + 1, 1),
        'U' => num(out, (i64::from(t.yday) + 7 - i64::from(t.weekday)) / 7, 2),
        'W' => num(
            out,
            (i64::from(t.yday) + 7 - (i64::from(t.weekday) + 6) % 7) / 7,
            2,
        ),
        'z' | 'Z' => {}
        's' => num(out, i64::try_from(raw.as_secs()).unwrap_or(i64::MAX), 1),
        'c' => out.push_str(&strftime("%a %b %e %H:%M:%S %Y", raw)),
        'x' | 'D' => out.push_str(&strftime("%m/%d/%y", raw)),
        'X' | 'T' => out.push_str(&strftime("%H:%M:%S", raw)),
        'F' => out.push_str(&strftime("%Y-%m-%d", raw)),
        'R' => out.push_str(&strftime("%H:%M", raw)),
        'n' => out.push('\n'),
        't' => out.push('\t'),
        '%' => out.push('%'),
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14 22:13:20.5 UTC, a Tuesday.
    const T: Duration = Duration::from_millis(1_700_000_000_500);

    #[test]
    fn civil_dates_round_trip_across_leap_days_and_centuries() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (2000, 3, 1),
            (2100, 3, 1),
            (2024, 12, 31),
        ] {
            assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1
        );
    }

    #[test]
    fn strftime_matches_python_for_common_chat_template_formats() {
        // Expected values from Python: datetime.utcfromtimestamp(1700000000.5).strftime(f)
        let cases = [
            ("%d %b %Y", "14 Nov 2023"),
            ("%B %d, %Y", "November 14, 2023"),
            ("%Y-%m-%d", "2023-11-14"),
            ("%A %H:%M:%S.%f %p %I", "Tuesday 22:13:20.500000 PM 10"),
            ("%j %U %W %w %u %y", "318 46 46 2 2 23"),
            ("%c|%x|%X", "Tue Nov 14 22:13:20 2023|11/14/23|22:13:20"),
            ("%-d/%-m %z%Z %% %Q", "14/11  % %Q"),
        ];
        for (format, expected) in cases {
            assert_eq!(strftime(format, T), expected, "{format}");
        }
    }

    #[test]
    fn strftime_week_numbers_count_from_first_sunday_and_monday() {
        // 2023-01-01 was a Sunday: week 1 for %U, still week 0 for %W.
        let jan1 = Duration::from_secs(days_from_civil(2023, 1, 1) as u64 * 86_400);
        assert_eq!(strftime("%U %W %a %e", jan1), "01 00 Sun  1");
    }
}
