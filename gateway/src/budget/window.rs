//! Calendar-aligned budget windows in UTC, computed from an injected [`Clock`].
//!
//! A `daily` window runs from 00:00:00 UTC to the next midnight, a `monthly` one from the first
//! of the month to the first of the next, and `total` never resets. Counters are keyed by the
//! window's start, so a roll-over needs no timer: the first request after midnight simply lands on
//! a new key. The civil-date arithmetic is Howard Hinnant's `days_from_civil`/`civil_from_days`,
//! exact for the proleptic Gregorian calendar, so no date crate is needed.
//!
//! What it does not do: time zones other than UTC, leap seconds (Unix time has none), or any
//! sleeping — tests drive a [`ManualClock`] instead (the shape of linkerd2-proxy's
//! `local_rate_limit`, which takes its clock from the caller).

use policy_engine::pack::BudgetWindow;

const SECS_PER_DAY: i64 = 86_400;

pub use crate::clock::{Clock, ManualClock, SystemClock};

/// One occurrence of a window: `[start, end)`. `end` is `None` for `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpan {
    pub start: i64,
    pub end: Option<i64>,
}

impl WindowSpan {
    /// The occurrence of `window` that contains `now`.
    pub fn containing(window: BudgetWindow, now: i64) -> Self {
        match window {
            BudgetWindow::Minute => {
                let start = now.div_euclid(60) * 60;
                Self {
                    start,
                    end: Some(start + 60),
                }
            }
            BudgetWindow::Daily => {
                let start = now.div_euclid(SECS_PER_DAY) * SECS_PER_DAY;
                Self {
                    start,
                    end: Some(start + SECS_PER_DAY),
                }
            }
            BudgetWindow::Monthly => {
                let (y, m, _) = civil_from_days(now.div_euclid(SECS_PER_DAY));
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Self {
                    start: days_from_civil(y, m, 1) * SECS_PER_DAY,
                    end: Some(days_from_civil(ny, nm, 1) * SECS_PER_DAY),
                }
            }
            BudgetWindow::Total => Self {
                start: 0,
                end: None,
            },
        }
    }

    /// Seconds a store should keep a counter of this window: until its end plus a grace of a
    /// day (an hour for a minute's rate limit), so a reservation taken just before the end can
    /// still be settled. `None`: forever.
    pub fn ttl_from(&self, now: i64) -> Option<i64> {
        self.end.map(|end| {
            let grace = (end - self.start).saturating_mul(60).min(SECS_PER_DAY);
            (end - now).max(0).saturating_add(grace)
        })
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date of a day number (Hinnant's `civil_from_days`): `(year, month 1..=12, day 1..=31)`.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both are in range by construction; the fallbacks are unreachable.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// `2025-03-01T00:00:00Z` for a Unix time, as sent in a `budget_exceeded` error.
pub fn format_rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(SECS_PER_DAY);
    let secs = unix.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: u32, d: u32, h: i64, min: i64, s: i64) -> i64 {
        days_from_civil(y, m, d) * SECS_PER_DAY + h * 3600 + min * 60 + s
    }

    #[test]
    fn civil_round_trips_over_eight_centuries() {
        for z in (-200_000..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn daily_window_rolls_at_utc_midnight() {
        let clock = ManualClock::new(at(2025, 6, 30, 23, 59, 59));
        let w = WindowSpan::containing(BudgetWindow::Daily, clock.now_unix());
        assert_eq!(w.start, at(2025, 6, 30, 0, 0, 0));
        assert_eq!(w.end, Some(at(2025, 7, 1, 0, 0, 0)));
        clock.advance(1);
        let next = WindowSpan::containing(BudgetWindow::Daily, clock.now_unix());
        assert_eq!(next.start, at(2025, 7, 1, 0, 0, 0));
        assert_ne!(next, w);
    }

    #[test]
    fn monthly_window_handles_leap_february_and_year_end() {
        let feb = WindowSpan::containing(BudgetWindow::Monthly, at(2024, 2, 29, 12, 0, 0));
        assert_eq!(feb.start, at(2024, 2, 1, 0, 0, 0));
        assert_eq!(feb.end, Some(at(2024, 3, 1, 0, 0, 0)));
        let dec = WindowSpan::containing(BudgetWindow::Monthly, at(2025, 12, 31, 23, 59, 59));
        assert_eq!(dec.start, at(2025, 12, 1, 0, 0, 0));
        assert_eq!(dec.end, Some(at(2026, 1, 1, 0, 0, 0)));
        let jan = WindowSpan::containing(BudgetWindow::Monthly, at(2026, 1, 1, 0, 0, 0));
        assert_eq!(jan.start, at(2026, 1, 1, 0, 0, 0));
    }

    #[test]
    fn total_window_never_resets() {
        let w = WindowSpan::containing(BudgetWindow::Total, at(2030, 1, 1, 0, 0, 0));
        assert_eq!(
            w,
            WindowSpan {
                start: 0,
                end: None
            }
        );
        assert_eq!(w.ttl_from(5), None);
    }

    #[test]
    fn ttl_outlives_the_window_by_a_day() {
        let now = at(2025, 6, 30, 23, 0, 0);
        let w = WindowSpan::containing(BudgetWindow::Daily, now);
        assert_eq!(w.ttl_from(now), Some(3600 + SECS_PER_DAY));
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(at(2025, 3, 1, 7, 8, 9)),
            "2025-03-01T07:08:09Z"
        );
    }
}
