//! Formatting shared by the reports: aligned text tables, UTC timestamps, relative times
//! and durations.

/// Left-aligned columns separated by two spaces; no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `2026-11-28T23:15:00.123Z` from unix milliseconds (UTC).
pub fn fmt_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Gregorian date of a day count since 1970-01-01 (proleptic, era-based arithmetic).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `in 4.5s` / `12.0s ago` relative to `now_ms`.
pub fn fmt_relative(at_ms: u64, now_ms: u64) -> String {
    if at_ms >= now_ms {
        format!("in {:.1}s", (at_ms - now_ms) as f64 / 1000.0)
    } else {
        format!("{:.1}s ago", (now_ms - at_ms) as f64 / 1000.0)
    }
}

/// `300s`, `1.5s` for a millisecond count.
pub fn fmt_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.3}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    #[test]
    fn dates_are_utc_iso8601() {
        assert_eq!(fmt_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt_unix_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(fmt_unix_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(fmt_unix_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn relative_times() {
        assert_eq!(fmt_relative(NOW + 4_500, NOW), "in 4.5s");
        assert_eq!(fmt_relative(NOW - 12_000, NOW), "12.0s ago");
        assert_eq!(fmt_ms(300_000), "300s");
        assert_eq!(fmt_ms(1_500), "1.500s");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "".into()],
            ],
        );
        assert_eq!(t, "A          LONGER\nwide cell  x\ny\n");
    }
}
