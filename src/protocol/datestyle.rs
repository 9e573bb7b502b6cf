//! DateStyle: how PostgreSQL prints dates and timestamps as text (ISO, SQL, Postgres,
//! German) and in which order it reads a date written with numbers only (MDY, DMY, YMD).
//! phigate prints decrypted values, so it prints them as the session's DateStyle says,
//! and reads written dates in the session's order.

use chrono::Datelike;

use super::datetime::{self, USECS_PER_DAY};
use super::zone::Zone;

/// How dates are printed: DateStyle's first part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DateOutput {
    /// `2020-01-05 10:00:00+00`
    #[default]
    Iso,
    /// `01/05/2020 10:00:00 UTC`
    Sql,
    /// `Sun Jan 05 10:00:00 2020 UTC`
    Postgres,
    /// `05.01.2020 10:00:00 UTC`
    German,
}

/// In which order day and month are read and printed: DateStyle's second part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DateOrder {
    /// month, day, year (PostgreSQL's default)
    #[default]
    Mdy,
    /// day, month, year
    Dmy,
    /// year, month, day
    Ymd,
}

/// A session's DateStyle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateStyle {
    /// how dates are printed
    pub output: DateOutput,
    /// in which order day and month are read and printed
    pub order: DateOrder,
}

impl DateStyle {
    /// The style of a DateStyle setting as the server reports it (`ISO, MDY`,
    /// `German, DMY`); a part it does not name stays at its default, but for German,
    /// which is DMY unless told otherwise, as in PostgreSQL.
    pub fn from_setting(value: &str) -> Self {
        let german = value.to_ascii_lowercase().contains("german");
        let mut style = Self {
            order: if german {
                DateOrder::Dmy
            } else {
                DateOrder::Mdy
            },
            ..Self::default()
        };
        for part in value.split(',').map(|p| p.trim().to_ascii_lowercase()) {
            match part.as_str() {
                "iso" => style.output = DateOutput::Iso,
                "sql" => style.output = DateOutput::Sql,
                "postgres" => style.output = DateOutput::Postgres,
                "german" => style.output = DateOutput::German,
                "mdy" | "us" | "noneuropean" | "non-european" => style.order = DateOrder::Mdy,
                "dmy" | "european" | "euro" => style.order = DateOrder::Dmy,
                "ymd" => style.order = DateOrder::Ymd,
                _ => {}
            }
        }
        style
    }

    /// A date (days since 2000-01-01) as PostgreSQL prints it in this style.
    pub(super) fn date(self, days: i32) -> String {
        let Some(d) = parts(i64::from(days)).filter(|_| self.output != DateOutput::Iso) else {
            return datetime::format_date(days);
        };
        let mut out = self.day(&d);
        if d.bc {
            out.push_str(" BC");
        }
        out
    }

    /// A timestamp (microseconds since 2000-01-01) as PostgreSQL prints it in this style;
    /// a timestamptz (`ts` in UTC) in `zone`, the session's: its wall clock there, then its
    /// offset (ISO) or its abbreviation (the other styles).
    pub(super) fn timestamp(self, ts: i64, zone: Option<Zone>) -> String {
        if ts == i64::MAX || ts == i64::MIN {
            return datetime::format_timestamp(ts, None);
        }
        let iso = self.output == DateOutput::Iso;
        // ISO prints the offset only, the other styles the abbreviation
        let label = zone.filter(|_| !iso).map(|z| z.label_at(ts));
        let offset = match &label {
            Some(l) => Some(l.offset),
            None => zone.map(|z| z.offset_at(ts)),
        };
        let local = datetime::at_offset(ts, offset.unwrap_or(0));
        let date = parts(local.div_euclid(USECS_PER_DAY)).filter(|_| !iso);
        let Some(d) = date else {
            return datetime::format_timestamp(local, offset);
        };
        let time = datetime::time_text(local.rem_euclid(USECS_PER_DAY));
        let mut out = match self.output {
            DateOutput::Postgres if self.order == DateOrder::Dmy => {
                format!("{} {:02} {} {time} {:04}", d.dow, d.day, d.mon, d.year)
            }
            DateOutput::Postgres => {
                format!("{} {} {:02} {time} {:04}", d.dow, d.mon, d.day, d.year)
            }
            _ => format!("{} {time}", self.day(&d)),
        };
        if let Some(l) = label {
            out.push(' ');
            out.push_str(&l.abbreviation);
        }
        if d.bc {
            out.push_str(" BC");
        }
        out
    }

    /// The date part in the SQL, German or Postgres style (without an era).
    fn day(self, d: &Parts) -> String {
        let dmy = self.order == DateOrder::Dmy;
        let (first, second) = if dmy {
            (d.day, d.month)
        } else {
            (d.month, d.day)
        };
        match self.output {
            DateOutput::German => format!("{:02}.{:02}.{:04}", d.day, d.month, d.year),
            DateOutput::Postgres => format!("{first:02}-{second:02}-{:04}", d.year),
            _ => format!("{first:02}/{second:02}/{:04}", d.year),
        }
    }
}

/// A date's parts as PostgreSQL prints them: the year counted from 1 BC backwards when
/// `bc`.
struct Parts {
    year: i32,
    month: u32,
    day: u32,
    bc: bool,
    dow: &'static str,
    mon: &'static str,
}

/// Month names as PostgreSQL prints them (and reads them, in any case).
pub(super) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Weekday names as PostgreSQL prints them, from Monday.
pub(super) const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The parts of the date `days` after 2000-01-01; `None` for the infinities and dates
/// chrono cannot hold.
fn parts(days: i64) -> Option<Parts> {
    if days == i64::from(i32::MAX) || days == i64::from(i32::MIN) {
        return None;
    }
    let d = datetime::date_of(days)?;
    let dow = DAYS.get(usize::try_from(d.weekday().num_days_from_monday()).ok()?)?;
    let month = d.month();
    Some(Parts {
        year: if d.year() <= 0 {
            1 - d.year()
        } else {
            d.year()
        },
        month,
        day: d.day(),
        bc: d.year() <= 0,
        dow,
        mon: MONTHS.get(usize::try_from(month).ok()?.checked_sub(1)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::datetime::{parse_date, parse_timestamp};

    /// The values of the module's examples in each style, as PostgreSQL 15 prints them.
    #[test]
    fn every_style_prints_as_postgres() {
        let date = |s| parse_date(s, DateOrder::Ymd).expect(s);
        let ts = |s| parse_timestamp(s, true, Some(Zone::UTC), DateOrder::Ymd).expect(s);
        let cases = [
            (
                "SQL, MDY",
                "01/05/2020",
                "01/05/2020 10:00:00.5",
                "03/15/0044 10:20:30 UTC BC",
            ),
            (
                "SQL, DMY",
                "05/01/2020",
                "05/01/2020 10:00:00.5",
                "15/03/0044 10:20:30 UTC BC",
            ),
            (
                "SQL, YMD",
                "01/05/2020",
                "01/05/2020 10:00:00.5",
                "03/15/0044 10:20:30 UTC BC",
            ),
            (
                "Postgres, MDY",
                "01-05-2020",
                "Sun Jan 05 10:00:00.5 2020",
                "Fri Mar 15 10:20:30 0044 UTC BC",
            ),
            (
                "Postgres, DMY",
                "05-01-2020",
                "Sun 05 Jan 10:00:00.5 2020",
                "Fri 15 Mar 10:20:30 0044 UTC BC",
            ),
            (
                "German, DMY",
                "05.01.2020",
                "05.01.2020 10:00:00.5",
                "15.03.0044 10:20:30 UTC BC",
            ),
            (
                "ISO, DMY",
                "2020-01-05",
                "2020-01-05 10:00:00.5",
                "0044-03-15 10:20:30+00 BC",
            ),
        ];
        for (setting, d, t, tz) in cases {
            let style = DateStyle::from_setting(setting);
            assert_eq!(style.date(date("2020-01-05")), d, "{setting}");
            assert_eq!(
                style.timestamp(ts("2020-01-05 10:00:00.5"), None),
                t,
                "{setting}"
            );
            assert_eq!(
                style.timestamp(ts("0044-03-15 10:20:30+00 BC"), Some(Zone::UTC)),
                tz,
                "{setting}"
            );
            assert_eq!(style.date(i32::MAX), "infinity");
            assert_eq!(style.timestamp(i64::MIN, Some(Zone::UTC)), "-infinity");
        }
    }

    /// A date of numbers only is read in the session's order, as PostgreSQL reads it; a
    /// year written first (more than two digits) is read first in any order.
    #[test]
    fn dates_are_read_in_the_session_order() {
        let iso = parse_date("2020-01-05", DateOrder::Ymd).expect("iso");
        let may = parse_date("2020-05-01", DateOrder::Ymd).expect("iso");
        for (s, order, want) in [
            ("01/05/2020", DateOrder::Mdy, iso),
            ("01/05/2020", DateOrder::Dmy, may),
            ("05.01.2020", DateOrder::Dmy, iso),
            ("1-5-2020", DateOrder::Mdy, iso),
            ("2020/01/05", DateOrder::Dmy, iso),
            ("2020.01.05", DateOrder::Mdy, iso),
        ] {
            assert_eq!(parse_date(s, order), Ok(want), "{s} {order:?}");
        }
        let t = parse_timestamp(
            "05.01.2020 10:00:00.5",
            false,
            Some(Zone::UTC),
            DateOrder::Dmy,
        );
        assert_eq!(
            t,
            parse_timestamp(
                "2020-01-05 10:00:00.5",
                false,
                Some(Zone::UTC),
                DateOrder::Mdy
            )
        );
        // one or two digits of a year name 1970 to 2069 (PostgreSQL 15)
        let day = |s| parse_date(s, DateOrder::Ymd).expect(s);
        for (s, order, want) in [
            ("01/05/20", DateOrder::Mdy, "2020-01-05"),
            ("01/05/69", DateOrder::Mdy, "2069-01-05"),
            ("01/05/70", DateOrder::Mdy, "1970-01-05"),
            ("01/05/5", DateOrder::Mdy, "2005-01-05"),
            ("01/05/020", DateOrder::Mdy, "0020-01-05"),
            ("20/01/05", DateOrder::Ymd, "2020-01-05"),
            ("5.1.99", DateOrder::Dmy, "1999-01-05"),
        ] {
            assert_eq!(parse_date(s, order), Ok(day(want)), "{s} {order:?}");
        }
        for (s, order) in [
            ("13/05/2020", DateOrder::Mdy),
            ("01/05-2020", DateOrder::Mdy),
            ("01/05/", DateOrder::Mdy),
        ] {
            assert!(parse_date(s, order).is_err(), "{s} {order:?}");
        }
    }

    /// What phigate prints in a style reads back as the same value in that style (the SQL
    /// style in YMD prints month first, which PostgreSQL does not read back either).
    #[test]
    fn what_each_style_prints_reads_back() {
        for setting in [
            "ISO, MDY",
            "SQL, MDY",
            "SQL, DMY",
            "Postgres, MDY",
            "Postgres, DMY",
            "German",
        ] {
            let style = DateStyle::from_setting(setting);
            // every 1009th day from 1000 BC to 3000 AD, at a time with a fraction
            for days in (-1_100_000..365_000).step_by(1009) {
                let printed = style.date(days);
                assert_eq!(
                    parse_date(&printed, style.order),
                    Ok(days),
                    "{setting} {printed}"
                );
                let at = i64::from(days) * USECS_PER_DAY + 37_230_000_123;
                for zoned in [false, true] {
                    let printed = style.timestamp(at, zoned.then_some(Zone::UTC));
                    let back = parse_timestamp(&printed, zoned, None, style.order);
                    assert_eq!(back, Ok(at), "{setting} {printed}");
                }
            }
        }
    }
}
