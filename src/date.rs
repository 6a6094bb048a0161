//! Dates in RFC 5322 form (the greeting, the `Received:` trace header, syslog) and HTTP's form
//! (the metrics endpoint), without a calendar library: days since the epoch to a civil date is
//! a few lines of arithmetic.

use std::time::{SystemTime, UNIX_EPOCH};

/// `Tue, 24 Nov 2026 09:05:03 +0000`. Always UTC: the daemon runs as a service, and a trace
/// header in UTC is unambiguous.
pub fn rfc5322_date(t: SystemTime) -> String {
    // Every greeting and every `Received:` line has one: built by hand, not through `format!`.
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = String::with_capacity(32);
    out.push_str(WEEKDAYS[(days % 7) as usize]);
    out.push_str(", ");
    push_number(&mut out, d.into(), 1);
    out.push(' ');
    out.push_str(MONTHS[(m - 1) as usize]);
    out.push(' ');
    push_number(&mut out, y.unsigned_abs(), 4);
    for (sep, n) in [(' ', rem / 3600), (':', rem % 3600 / 60), (':', rem % 60)] {
        out.push(sep);
        push_number(&mut out, n, 2);
    }
    out.push_str(" +0000");
    out
}

/// `n` in decimal, zero-padded to `width` digits.
fn push_number(out: &mut String, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    let mut n = n;
    while n > 0 || digits.len() - i < width {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // ASCII digits only.
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

/// `Tue, 04 Nov 2026 09:05:03 GMT`: HTTP's IMF-fixdate (RFC 9110 §5.6.7), for the `Date`
/// header of the metrics endpoint.
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(
            rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "Thu, 29 Feb 2024 12:34:56 +0000"
        );
        // 2026-12-05 09:05:03 UTC: a one-digit day, leading zeros in the time.
        assert_eq!(
            rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_796_461_503)),
            "Sat, 5 Dec 2026 09:05:03 +0000"
        );
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
