//! PostgreSQL's date and timestamp text forms, over chrono's calendar: what is
//! PostgreSQL-specific stays here (its epoch, `infinity`, `epoch`, BC years, the time of a
//! date literal being ignored, an offset on a timestamp without time zone being ignored,
//! 24:00:00, rounding to microseconds); the calendar is chrono's.
//!
//! Accepted input (with surrounding white space, any case): a date `Y-M-D` or `YYYYMMDD`,
//! optionally followed by `T` or white space and a time `H:MM[:SS[.fraction]]`, then a zone
//! (`Z`, `UTC`, `GMT`, `+HH`, `+HHMM`, `+HH:MM`, `+HH:MM:SS`, with or without a space before
//! it, also straight after the date) or an IANA zone name (`Europe/Paris`, after a space),
//! then `BC` or `AD`; `infinity`, `-infinity`, `epoch`.
//! A date of numbers only may also be written in the session's DateStyle order
//! (`01/05/2020`, `5.1.99`, see `datestyle`), a date with a month's name as `named` says.
//! Zone abbreviations (`PST`), which PostgreSQL reads from its own table, are refused.

use chrono::{Datelike, NaiveDate};

use super::datestyle::DateOrder;
use super::zone::Zone;

mod named;

type Res<T> = Result<T, &'static str>;

/// Microseconds in a day.
pub(super) const USECS_PER_DAY: i64 = 86_400_000_000;

/// 2000-01-01, PostgreSQL's epoch, as chrono counts days from 0001-01-01 (day 1).
const PG_EPOCH_FROM_CE: i64 = 730_120;

/// A field of a date or time out of its range: PostgreSQL's 22008 (see
/// [`field_out_of_range`]).
const DATE_RANGE: &str = "date out of range";
const TIME_RANGE: &str = "time out of range";
const TIMESTAMP_RANGE: &str = "timestamp out of range";
const NUMBER_RANGE: &str = "number out of range";
const NO_YEAR_ZERO: &str = "there is no year 0 (1 BC is followed by 1 AD)";

/// True when `problem` (a date/time parse error) is a field out of its range, which
/// PostgreSQL reports as 22008 rather than as bad syntax.
pub(super) fn field_out_of_range(problem: &str) -> bool {
    [
        DATE_RANGE,
        TIME_RANGE,
        TIMESTAMP_RANGE,
        NUMBER_RANGE,
        NO_YEAR_ZERO,
    ]
    .contains(&problem)
}

const NOT_ISO: &str = "not a date/time phigate reads (YYYY-MM-DD HH:MM:SS, numbers in the DateStyle's order, or a month's name)";

/// A date/time literal's parts.
enum Parsed {
    /// `infinity` (true) or `-infinity`
    Infinite(bool),
    /// days since 2000-01-01, microseconds into the day (up to a whole day for 24:00),
    /// the zone's offset in seconds east of UTC when one was written, or the zone when an
    /// IANA name was (`Europe/Paris`)
    At {
        days: i64,
        usecs: i64,
        offset: Option<i64>,
        named: Option<Zone>,
    },
}

fn digits(s: &str, max: usize) -> Res<i64> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NOT_ISO);
    }
    s.parse().map_err(|_| NUMBER_RANGE)
}

/// Days since 2000-01-01 of a proleptic Gregorian date (year 0 is 1 BC).
fn days_of(year: i64, month: i64, day: i64) -> Res<i64> {
    let date = i32::try_from(year)
        .ok()
        .zip(u32::try_from(month).ok())
        .zip(u32::try_from(day).ok())
        .and_then(|((y, m), d)| NaiveDate::from_ymd_opt(y, m, d))
        .ok_or(DATE_RANGE)?;
    Ok(i64::from(date.num_days_from_ce()) - PG_EPOCH_FROM_CE)
}

/// The date part: `YYYYMMDD`, or three numbers separated by `-`, `/` or `.`: year first
/// when the first has more than two digits (`2020-01-05`, `2020/01/05`), else in the
/// session's DateStyle `order` (`01/05/2020` is January 5th in MDY, May 1st in DMY). `bc`
/// counts years before Christ.
fn date_part(s: &str, bc: bool, order: DateOrder) -> Res<i64> {
    let sep = s
        .chars()
        .find(|c| matches!(c, '-' | '/' | '.'))
        .unwrap_or('-');
    let (y, m, d) = match s.split(sep).collect::<Vec<_>>().as_slice() {
        [y, m, d] if y.len() > 2 => (digits(y, 7)?, digits(m, 2)?, digits(d, 2)?),
        [a, b, c] => {
            let (y, m, d) = match order {
                DateOrder::Mdy => (c, a, b),
                DateOrder::Dmy => (c, b, a),
                DateOrder::Ymd => (a, b, c),
            };
            (year(y, bc)?, digits(m, 2)?, digits(d, 2)?)
        }
        [ymd] if ymd.len() == 8 => (
            digits(&ymd[..4], 4)?,
            digits(&ymd[4..6], 2)?,
            digits(&ymd[6..], 2)?,
        ),
        _ => return Err(NOT_ISO),
    };
    era_days(y, m, d, bc)
}

/// Days since 2000-01-01 of a date written with its era: year `y` before Christ when `bc`.
fn era_days(y: i64, m: i64, d: i64, bc: bool) -> Res<i64> {
    if y == 0 {
        return Err(NO_YEAR_ZERO);
    }
    days_of(if bc { 1 - y } else { y }, m, d)
}

/// A year written in a date of numbers: one or two digits name a year of 1970 to 2069, as
/// PostgreSQL reads them (not before Christ).
fn year(y: &str, bc: bool) -> Res<i64> {
    let n = digits(y, 7)?;
    Ok(match n {
        _ if y.len() > 2 || bc => n,
        0..70 => n + 2000,
        _ => n + 1900,
    })
}

/// `H:MM[:SS[.fraction]]` in microseconds, rounded as PostgreSQL rounds.
fn time_part(s: &str) -> Res<i64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut f = hms.split(':');
    let h = digits(f.next().unwrap_or(""), 2)?;
    let mi = digits(f.next().unwrap_or(""), 2)?;
    let sec = f.next().map_or(Ok(0), |x| digits(x, 2))?;
    if f.next().is_some() || mi > 59 || sec > 60 {
        return Err(TIME_RANGE);
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NOT_ISO);
    }
    let usecs = ((h * 60 + mi) * 60 + sec) * 1_000_000 + fraction_micros(frac);
    if usecs > USECS_PER_DAY {
        return Err(TIME_RANGE);
    }
    Ok(usecs)
}

/// The microseconds of a second's fraction (its digits after the point), as PostgreSQL
/// computes them: read as a double and rounded to the nearest, ties to even (`rint`), so
/// that `.6886265` is 688626 as in PostgreSQL (the double is just below the tie).
fn fraction_micros(digits: &str) -> i64 {
    // more digits than a double holds change nothing
    let digits = digits.get(..digits.len().min(30)).unwrap_or(digits);
    let x: f64 = format!("0.{digits}").parse().unwrap_or(0.0);
    // at most 1,000,000: a second
    #[allow(clippy::cast_possible_truncation)]
    let micros = (x * 1_000_000.0).round_ties_even() as i64;
    micros
}

/// A zone: `Z`, `UTC`, `GMT` or a numeric offset, in seconds east of UTC.
fn zone_part(z: &str) -> Res<i64> {
    if ["z", "utc", "gmt"]
        .iter()
        .any(|n| z.eq_ignore_ascii_case(n))
    {
        return Ok(0);
    }
    let (sign, body) = match z.as_bytes().first() {
        Some(b'+') => (1, &z[1..]),
        Some(b'-') => (-1, &z[1..]),
        _ => return Err("bad time zone (phigate reads numeric offsets, Z, UTC and GMT only)"),
    };
    let fields: Vec<&str> = body.split(':').collect();
    let (h, m, s) = match fields.as_slice() {
        [hm] if hm.len() == 4 => (digits(&hm[..2], 2)?, digits(&hm[2..], 2)?, 0),
        [h] => (digits(h, 2)?, 0, 0),
        [h, m] => (digits(h, 2)?, digits(m, 2)?, 0),
        [h, m, s] => (digits(h, 2)?, digits(m, 2)?, digits(s, 2)?),
        _ => return Err("bad UTC offset"),
    };
    if h > 15 || m > 59 || s > 59 {
        return Err("bad UTC offset");
    }
    Ok(sign * (h * 3600 + m * 60 + s))
}

fn parse(s: &str, order: DateOrder) -> Res<Parsed> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Ok(Parsed::Infinite(true)),
        "-infinity" => return Ok(Parsed::Infinite(false)),
        "epoch" => {
            return Ok(Parsed::At {
                days: days_of(1970, 1, 1)?,
                usecs: 0,
                offset: Some(0),
                named: None,
            });
        }
        _ => {}
    }
    let (t, bc) = match t.rsplit_once(char::is_whitespace) {
        Some((head, era)) if era.eq_ignore_ascii_case("bc") => (head.trim_end(), true),
        Some((head, era)) if era.eq_ignore_ascii_case("ad") => (head.trim_end(), false),
        _ => (t, false),
    };
    if let Some(parsed) = named::parse(t, bc)? {
        return Ok(parsed);
    }
    let date_end = t
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '/' | '.')))
        .unwrap_or(t.len());
    // a `-` straight after the day begins an offset, not more of the date
    let date = &t[..date_end];
    let (date, rest) = match date.match_indices('-').nth(2) {
        Some((i, _)) => (&date[..i], &t[i..]),
        None => (date, &t[date_end..]),
    };
    let days = date_part(date, bc, order)?;
    let rest = match rest.strip_prefix(['T', 't']) {
        // `T` stands only before a time
        Some(time) if !time.starts_with(|c: char| c.is_ascii_digit()) => return Err(NOT_ISO),
        Some(time) => time,
        None => rest.trim_start(),
    };
    let time_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (time, zone) = if rest.starts_with(|c: char| c.is_ascii_digit()) {
        (&rest[..time_end], rest[time_end..].trim())
    } else {
        ("", rest.trim())
    };
    let usecs = if time.is_empty() { 0 } else { time_part(time)? };
    let (offset, named) = if zone.is_empty() {
        (None, None)
    } else {
        match zone_part(zone) {
            Ok(offset) => (Some(offset), None),
            Err(e) => (None, Some(Zone::named(zone).ok_or(e)?)),
        }
    };
    Ok(Parsed::At {
        days,
        usecs,
        offset,
        named,
    })
}

/// A date literal to days since 2000-01-01 (`i32::MAX`/`MIN` for ±infinity). A time or
/// zone after the date is checked and ignored, as PostgreSQL does.
pub(super) fn parse_date(s: &str, order: DateOrder) -> Res<i32> {
    match parse(s, order)? {
        Parsed::Infinite(true) => Ok(i32::MAX),
        Parsed::Infinite(false) => Ok(i32::MIN),
        Parsed::At { days, .. } => i32::try_from(days).map_err(|_| DATE_RANGE),
    }
}

/// A timestamp literal to microseconds since 2000-01-01 (UTC for `with_zone`;
/// `i64::MAX`/`MIN` for ±infinity). Without time zone, a written zone is ignored, as
/// PostgreSQL does. With time zone and none written, the time is read in `zone`, the
/// session's (`None`: phigate could not resolve it, and refuses).
pub(super) fn parse_timestamp(
    s: &str,
    with_zone: bool,
    zone: Option<Zone>,
    order: DateOrder,
) -> Res<i64> {
    let (days, usecs, offset, named) = match parse(s, order)? {
        Parsed::Infinite(true) => return Ok(i64::MAX),
        Parsed::Infinite(false) => return Ok(i64::MIN),
        Parsed::At {
            days,
            usecs,
            offset,
            named,
        } => (days, usecs, offset, named),
    };
    let local = days
        .checked_mul(USECS_PER_DAY)
        .and_then(|d| d.checked_add(usecs))
        .ok_or(TIMESTAMP_RANGE)?;
    match (with_zone, offset) {
        (false, _) => Ok(local),
        (true, Some(o)) => Ok(local - o * 1_000_000),
        (true, None) => match named.or(zone) {
            Some(z) => Ok(local - i64::from(z.offset_of_local(local)) * 1_000_000),
            None => Err(
                "give an explicit UTC offset (phigate could not resolve the session's TimeZone)",
            ),
        },
    }
}

/// The wall clock in `zone` at the instant `utc` (both in microseconds since 2000-01-01);
/// ±infinity stay as they are.
pub(super) fn wall_clock(utc: i64, zone: Zone) -> i64 {
    if utc == i64::MAX || utc == i64::MIN {
        return utc;
    }
    at_offset(utc, zone.offset_at(utc))
}

/// The wall clock at `offset` seconds east of UTC of the instant `utc`.
pub(super) fn at_offset(utc: i64, offset: i32) -> i64 {
    utc.saturating_add(i64::from(offset) * 1_000_000)
}

/// The date `days` after 2000-01-01 (year 0 is 1 BC).
pub(super) fn date_of(days: i64) -> Option<NaiveDate> {
    i32::try_from(days + PG_EPOCH_FROM_CE)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
}

/// `YYYY-MM-DD` (with ` BC` before year 1) of days since 2000-01-01.
fn ymd(days: i64) -> (String, bool) {
    match date_of(days) {
        Some(d) if d.year() <= 0 => (
            format!("{:04}-{:02}-{:02}", 1 - d.year(), d.month(), d.day()),
            true,
        ),
        Some(d) => (
            format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
            false,
        ),
        None => ("out-of-range".to_owned(), false),
    }
}

/// A date as PostgreSQL prints it (DateStyle ISO).
pub(super) fn format_date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        _ => {
            let (date, bc) = ymd(i64::from(days));
            if bc { format!("{date} BC") } else { date }
        }
    }
}

/// A timestamp as PostgreSQL prints it (DateStyle ISO): `ts` on the wall clock, followed
/// for a timestamptz by its zone's `offset` east of UTC in seconds (`+00`, `-04:56:02`).
pub(super) fn format_timestamp(ts: i64, offset: Option<i32>) -> String {
    match ts {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let (date, bc) = ymd(ts.div_euclid(USECS_PER_DAY));
    let mut out = format!("{date} {}", time_text(ts.rem_euclid(USECS_PER_DAY)));
    if let Some(offset) = offset {
        push_offset(offset, &mut out);
    }
    if bc {
        out.push_str(" BC");
    }
    out
}

/// An offset east of UTC as PostgreSQL prints it in ISO: `+HH`, then `:MM` and `:SS` when
/// not zero.
fn push_offset(offset: i32, out: &mut String) {
    let a = offset.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    out.push(if offset < 0 { '-' } else { '+' });
    out.push_str(&format!("{h:02}"));
    if m != 0 || s != 0 {
        out.push_str(&format!(":{m:02}"));
    }
    if s != 0 {
        out.push_str(&format!(":{s:02}"));
    }
}

/// `HH:MM:SS[.fraction]` of microseconds into a day, as PostgreSQL prints a time: the
/// fraction without trailing zeros.
pub(super) fn time_text(usecs: i64) -> String {
    let secs = usecs / 1_000_000;
    let micros = usecs % 1_000_000;
    let mut out = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if micros != 0 {
        let frac = format!("{micros:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MDY: DateOrder = DateOrder::Mdy;
    const UTC: Option<Zone> = Some(Zone::UTC);

    fn ts(s: &str) -> i64 {
        parse_timestamp(s, true, UTC, MDY).expect(s)
    }

    #[test]
    fn every_iso_spelling_postgres_accepts() {
        let day = parse_date("1906-12-09", MDY).unwrap();
        for s in [
            " 1906-12-09 ",
            "1906-12-9",
            "19061209",
            "1906-12-09T00:00:00.000+00:00",
            "1906-12-09 00:00:00",
            "1906-12-09 +00",
            "1906-12-09 13:14:15.123456789-07:30",
            "1906-12-09 AD",
        ] {
            assert_eq!(parse_date(s, MDY), Ok(day), "{s}");
        }
        assert_eq!(
            parse_date("1815-12-10 +00", MDY),
            parse_date("1815-12-10", MDY)
        );
        let noon = ts("2020-01-01 12:00:00Z");
        for s in [
            "2020-01-01T12:00:00Z",
            "2020-01-01 12:00+00",
            "2020-01-01 14:00:00 +02",
            "2020-01-01 14:00:00+0200",
            "2020-01-01 07:00:00-05:00",
            "2020-01-01 11:30:00-00:30",
            "2020-01-01 12:00:00 UTC",
            "2020-01-01 12:00:00.0000001 GMT",
            "2020-01-01 11:59:59.9999996Z",
            "2020-01-01 12:00",
        ] {
            assert_eq!(ts(s), noon, "{s}");
        }
        assert_eq!(
            parse_timestamp("2020-01-01 12:00:00+05", false, None, MDY),
            parse_timestamp("2020-01-01 12:00:00", false, None, MDY)
        );
        assert_eq!(ts("2019-12-31 24:00:00"), ts("2020-01-01 00:00:00"));
        assert_eq!(ts("epoch"), ts("1970-01-01 00:00:00+00"));
        assert_eq!(parse_date("-infinity", MDY), Ok(i32::MIN));
    }

    #[test]
    fn bc_years_round_trip() {
        let d = parse_date("0044-03-15 BC", MDY).unwrap();
        assert_eq!(format_date(d), "0044-03-15 BC");
        assert_eq!(
            parse_date("0001-12-31 BC", MDY).unwrap() + 1,
            parse_date("0001-01-01", MDY).unwrap()
        );
        let t = parse_timestamp("0044-03-15 10:00:00+00 BC", true, UTC, MDY).unwrap();
        assert_eq!(format_timestamp(t, Some(0)), "0044-03-15 10:00:00+00 BC");
        assert_eq!(format_timestamp(0, None), "2000-01-01 00:00:00");
        assert_eq!(format_date(0), "2000-01-01");
    }

    #[test]
    fn what_postgres_refuses() {
        for s in [
            "2021-02-29",
            "13/45/2020",
            "2020-13-01",
            "0000-01-01",
            "2020-01-01 25:00",
            "2020-01-01 10:61",
            "2020-01-01 10:00 Europe/Nowhere",
            "2020-01-01 10:00+16",
            "2020-01-01T",
            "12.10.1446T ",
            "today",
            "",
        ] {
            assert!(parse_timestamp(s, true, UTC, MDY).is_err(), "{s}");
        }
        assert!(parse_timestamp("2020-01-01 10:00", true, None, MDY).is_err());
        // an IANA name written in the value: read in that zone, whatever the session's
        let paris = parse_timestamp("2020-07-05 10:00 europe/paris", true, None, MDY);
        assert_eq!(paris, Ok(ts("2020-07-05 10:00+02")));
        assert_eq!(
            parse_timestamp("2020-01-05 10:00 Europe/Paris", true, UTC, MDY),
            Ok(ts("2020-01-05 10:00+01"))
        );
        // ignored by a timestamp, as PostgreSQL ignores it
        assert_eq!(
            parse_timestamp("2020-07-05 10:00 Europe/Paris", false, None, MDY),
            parse_timestamp("2020-07-05 10:00", false, None, MDY)
        );
        // abbreviations and unknown names are not read
        for s in [
            "2020-07-05 10:00 CET",
            "2020-07-05 10:00 Mars/Base",
            "2020-07-05 10:00 PST",
        ] {
            assert!(parse_timestamp(s, true, UTC, MDY).is_err(), "{s}");
        }
    }
}
