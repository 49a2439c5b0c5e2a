//! Seconds since the epoch as RFC 3339 UTC, second precision
//! (`2026-11-27T08:15:54Z`). Hand-written (Howard Hinnant's civil_from_days)
//! instead of pulling in a date crate for one format.

use crate::prelude::*;

/// The last second RFC 3339 can write with a four-digit year:
/// 9999-12-31T23:59:59Z.
pub const MAX_SECONDS: u64 = 253_402_300_799;

/// Formats `seconds` since 1970-01-01T00:00:00Z; `None` past year 9999.
pub fn format_utc(seconds: u64) -> Option<String> {
    if seconds > MAX_SECONDS {
        return None;
    }
    let days = seconds / 86_400;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    ))
}

/// (year, month, day) of the `days`-th day after 1970-01-01, proleptic
/// Gregorian calendar. Eras are 400-year cycles starting on March 1st.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        for (seconds, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_799, "2000-02-29T23:59:59Z"),
            (951_868_800, "2000-03-01T00:00:00Z"),
            (1_300_819_380, "2011-03-22T18:43:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (1_798_761_599, "2026-12-31T23:59:59Z"),
            (1_795_767_354, "2026-11-27T08:15:54Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (MAX_SECONDS, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(format_utc(seconds).as_deref(), Some(text), "{seconds}");
        }
        assert_eq!(format_utc(MAX_SECONDS + 1), None);
        assert_eq!(format_utc(u64::MAX), None);
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walk 1970..2400 day by day: dates strictly increase, months and
        // days stay in range, and leap days appear exactly where expected.
        let mut previous = civil_from_days(0);
        for days in 1..(430 * 366) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert!((y, m, d) > previous, "{days}");
            if (m, d) == (2, 29) {
                assert!(
                    y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400)),
                    "{y}"
                );
            }
            previous = (y, m, d);
        }
    }
}
