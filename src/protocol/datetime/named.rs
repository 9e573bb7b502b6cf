//! Dates written with a month's name, as PostgreSQL reads them: `Jan 5 2020`, `5 January
//! 2020`, `January 5, 2020`, `05-Jan-2020`, `2020-Jan-05`, and the Postgres DateStyle's
//! own output (`Sun Jan 05 10:00:00.5 2020 UTC`). A weekday's name is ignored, the number
//! of more than two digits is the year and the other the day; a time and a zone may stand
//! before or after the year. A date whose year has two digits or fewer is refused here
//! (which number is the day would depend on the DateStyle).

use super::super::datestyle::{DAYS, MONTHS};
use super::{Parsed, Res, digits, era_days, time_part, zone_part};

/// Month names in full (their first three letters are [`MONTHS`]).
const FULL: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
/// Weekday names in full (their first three letters are [`DAYS`]).
const FULL_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// The month a word names (`jan`, `january`, `sept`), from 1.
fn month(word: &str) -> Option<i64> {
    let named = |m: &&str| m.eq_ignore_ascii_case(word);
    let i = (MONTHS.iter().position(named))
        .or_else(|| FULL.iter().position(named))
        .or_else(|| word.eq_ignore_ascii_case("sept").then_some(8))?;
    i64::try_from(i + 1).ok()
}

/// True when a word names a weekday (`sun`, `Sunday`).
fn weekday(word: &str) -> bool {
    let named = |d: &&str| d.eq_ignore_ascii_case(word);
    DAYS.iter().any(named) || FULL_DAYS.iter().any(named)
}

/// The words of `t`: split at white space and commas, and a word holding a month's name at
/// `-` and `/` too (`05-Jan-2020`).
fn words(t: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in t
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
    {
        let parts: Vec<&str> = w.split(['-', '/']).collect();
        if parts.len() > 1 && parts.iter().any(|p| month(p).is_some()) {
            out.extend(parts);
        } else {
            out.push(w);
        }
    }
    out
}

/// `t` read as a date with a month's name, `None` when it names no month.
pub(super) fn parse(t: &str, bc: bool) -> Res<Option<Parsed>> {
    const UNREAD: &str = "not a date phigate reads (write it as YYYY-MM-DD)";
    let words = words(t);
    if !words.iter().any(|w| month(w).is_some()) {
        return Ok(None);
    }
    let (mut mon, mut year, mut day) = (None, None, None);
    let (mut usecs, mut offset) = (None, None);
    for w in words {
        if let Some(m) = month(w) {
            mon = mon.xor(Some(m)).ok_or(UNREAD).map(Some)?;
        } else if weekday(w) {
        } else if w.contains(':') {
            // a zone may follow the time at once (`10:00:00-05`)
            let at = (w.char_indices().skip(1))
                .find(|(_, c)| matches!(c, '+' | '-'))
                .map_or(w.len(), |(i, _)| i);
            usecs = usecs
                .xor(Some(time_part(&w[..at])?))
                .ok_or(UNREAD)
                .map(Some)?;
            if at < w.len() {
                offset = offset
                    .xor(Some(zone_part(&w[at..])?))
                    .ok_or(UNREAD)
                    .map(Some)?;
            }
        } else if w.len() <= 4 && w.bytes().all(|b| b.is_ascii_digit()) {
            // (PostgreSQL reads five digits or more as a date or time run together)
            let slot = if w.len() > 2 { &mut year } else { &mut day };
            *slot = slot.xor(Some(digits(w, 7)?)).ok_or(UNREAD).map(Some)?;
        } else {
            offset = offset.xor(Some(zone_part(w)?)).ok_or(UNREAD).map(Some)?;
        }
    }
    let (Some(m), Some(y), Some(d)) = (mon, year, day) else {
        return Err(UNREAD);
    };
    Ok(Some(Parsed::At {
        days: era_days(y, m, d, bc)?,
        usecs: usecs.unwrap_or(0),
        offset,
        named: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{DateOrder, Zone, parse_date, parse_timestamp};

    /// The forms PostgreSQL 15 reads as 2020-01-05 (and 10:00:00.5), in any DateStyle.
    #[test]
    fn month_names_are_read_as_postgres_reads_them() {
        let day = parse_date("2020-01-05", DateOrder::Ymd);
        for s in [
            "Jan 5 2020",
            "5 Jan 2020",
            "January 5, 2020",
            "05-Jan-2020",
            "2020-Jan-05",
            "Jan-05-2020",
            "Sun Jan 05 2020",
            "05 JANUARY 2020",
        ] {
            for order in [DateOrder::Mdy, DateOrder::Dmy] {
                assert_eq!(parse_date(s, order), day, "{s}");
            }
        }
        let at = parse_timestamp(
            "2020-01-05 10:00:00.5",
            false,
            Some(Zone::UTC),
            DateOrder::Ymd,
        );
        for s in [
            "Sun Jan 05 10:00:00.5 2020",
            "Sun 05 Jan 10:00:00.5 2020",
            "05-Jan-2020 10:00:00.5",
        ] {
            assert_eq!(
                parse_timestamp(s, false, Some(Zone::UTC), DateOrder::Mdy),
                at,
                "{s}"
            );
        }
        let utc = parse_timestamp("2020-01-05 10:00:00+00", true, None, DateOrder::Ymd);
        assert_eq!(
            parse_timestamp("Sun Jan 05 10:00:00 2020 UTC", true, None, DateOrder::Mdy),
            utc
        );
        assert_eq!(
            parse_timestamp("Sun Jan 05 12:00:00+02 2020", true, None, DateOrder::Mdy),
            utc
        );
        for s in [
            "jan 5 20",
            "Jan 2020",
            "Jan Feb 5 2020",
            "Jan 5 2020 2021",
            "Jan 32 2020",
            "Jan 5 2020 PST",
            "é:1 Jan 5 2020",
            "Jan 5",
            "Jan 5 2020 10:00 11:00",
            "Jan 5 2020 10:00+01 UTC",
            "mar 9, 101510",
        ] {
            assert!(parse_date(s, DateOrder::Mdy).is_err(), "{s}");
        }
    }
}
