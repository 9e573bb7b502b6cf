//! The session's time zone, as PostgreSQL's `TimeZone` setting names it, resolved in the
//! IANA time zone database: the host's (`/usr/share/zoneinfo`, which PostgreSQL on Debian
//! reads too), or the copy built into phigate where the host has none. With it a
//! timestamptz is printed in the session's zone, and one written without an offset is read
//! in it, as PostgreSQL does.
//!
//! A [`Zone`] is a small copyable handle: the zones a process meets are kept in one table
//! (at most 1,024 of them; a setting past that is left unresolved, and phigate
//! then treats the session as it treats a zone it cannot resolve).

use std::sync::RwLock;

use jiff::Timestamp;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};

/// How many distinct zones a process resolves; settings are few (one per database,
/// role or application), so the bound only stops a client that sets thousands.
const MAX_ZONES: usize = 1024;

/// Seconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// The zones resolved so far; `Zone(i)` is entry `i - 1` (`Zone(0)` is UTC).
static ZONES: RwLock<Vec<Entry>> = RwLock::new(Vec::new());

/// A resolved zone: the setting that named it, its rules, and for a zone PostgreSQL made of
/// an offset (`<+05:30>-05:30`) the abbreviation it prints.
#[derive(Debug)]
struct Entry {
    name: String,
    tz: TimeZone,
    abbreviation: Option<String>,
}

/// A time zone PostgreSQL's `TimeZone` named, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Zone(u16);

/// How a timestamptz's zone is printed at one instant: its offset east of UTC in seconds
/// and its abbreviation (`CET`, `-03`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Label {
    pub(super) offset: i32,
    pub(super) abbreviation: String,
}

impl Zone {
    /// UTC.
    pub const UTC: Zone = Zone(0);

    /// The zone a `TimeZone` setting (as the server reports it) names: an IANA name in
    /// any case (`Europe/Paris`), or a POSIX zone (`<+05>-05`, `UTC+3`, which PostgreSQL
    /// reports for offsets set by number); `None` when phigate cannot resolve it.
    pub fn from_setting(value: &str) -> Option<Zone> {
        if value == "UTC" {
            return Some(Self::UTC);
        }
        if let Some(z) = Self::known(value) {
            return Some(z);
        }
        if let Some(z) = Self::iana(value) {
            return Some(z);
        }
        let (tz, abbreviation) = match numeric(value) {
            Some((abbreviation, offset)) => (TimeZone::fixed(offset), Some(abbreviation.into())),
            None => (TimeZone::posix(value).ok()?, None),
        };
        // rules a client makes up could be endless: they get half the table, so the IANA
        // zones (some 600) always find room
        Self::keep(value, tz, abbreviation, MAX_ZONES / 2)
    }

    /// The zone an IANA name written in a value names (`Europe/Paris`, in any case; only
    /// names with a `/`, so that no abbreviation, which PostgreSQL reads from its own
    /// table, is read as a zone of the same name: `CET` the zone keeps summer time, `CET`
    /// the abbreviation does not).
    pub(super) fn named(value: &str) -> Option<Zone> {
        value.contains('/').then(|| Self::iana(value)).flatten()
    }

    /// The zone of the IANA database named `value`, in any case.
    fn iana(value: &str) -> Option<Zone> {
        let tz = TimeZone::get(value).ok()?;
        if is_utc(&tz) {
            return Some(Self::UTC);
        }
        let name = tz.iana_name().unwrap_or(value).to_owned();
        Self::known(&name).or_else(|| Self::keep(&name, tz, None, MAX_ZONES))
    }

    fn known(value: &str) -> Option<Zone> {
        let zones = ZONES.read().unwrap_or_else(|p| p.into_inner());
        let i = zones.iter().position(|e| e.name == value)?;
        Self::at_index(i)
    }

    /// Keeps a resolved zone in the table under `name`, unless the table holds `limit`
    /// zones already.
    fn keep(name: &str, tz: TimeZone, abbreviation: Option<String>, limit: usize) -> Option<Zone> {
        let mut zones = ZONES.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = zones.iter().position(|e| e.name == name) {
            return Self::at_index(i);
        }
        if zones.len() >= limit {
            return None;
        }
        zones.push(Entry {
            name: name.to_owned(),
            tz,
            abbreviation,
        });
        Self::at_index(zones.len() - 1)
    }

    fn at_index(i: usize) -> Option<Zone> {
        u16::try_from(i + 1).ok().map(Zone)
    }

    /// Runs `f` with the zone's rules and the abbreviation it always prints, if any.
    fn with<T>(self, f: impl FnOnce(&TimeZone, Option<&str>) -> T) -> T {
        let zones = ZONES.read().unwrap_or_else(|p| p.into_inner());
        match usize::from(self.0)
            .checked_sub(1)
            .and_then(|i| zones.get(i))
        {
            Some(e) => f(&e.tz, e.abbreviation.as_deref()),
            None => f(&TimeZone::UTC, None),
        }
    }

    /// The zone's offset and abbreviation at the instant `utc` (microseconds since
    /// 2000-01-01 UTC).
    pub(super) fn label_at(self, utc: i64) -> Label {
        if self == Self::UTC {
            return Label {
                offset: 0,
                abbreviation: "UTC".into(),
            };
        }
        let at = instant(utc);
        self.with(|tz, fixed| {
            let info = tz.to_offset_info(at);
            Label {
                offset: info.offset().seconds(),
                abbreviation: fixed.unwrap_or(info.abbreviation()).to_owned(),
            }
        })
    }

    /// The zone's offset east of UTC in seconds at the instant `utc`.
    pub(super) fn offset_at(self, utc: i64) -> i32 {
        if self == Self::UTC {
            return 0;
        }
        let at = instant(utc);
        self.with(|tz, _| tz.to_offset(at).seconds())
    }

    /// The offset of the wall-clock time `local` (microseconds since 2000-01-01) in the
    /// zone, as PostgreSQL chooses it: a time skipped at a change (spring forward) is read
    /// with the offset before the change, a time that happens twice (fall back) with the
    /// offset after it (PostgreSQL's `DetermineTimeZoneOffset`).
    pub(super) fn offset_of_local(self, local: i64) -> i32 {
        if self == Self::UTC {
            return 0;
        }
        let wall = Offset::UTC.to_datetime(instant(local));
        self.with(|tz, _| match tz.to_ambiguous_timestamp(wall).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.seconds(),
            AmbiguousOffset::Gap { before, .. } => before.seconds(),
            AmbiguousOffset::Fold { after, .. } => after.seconds(),
        })
    }
}

/// True for UTC under another name (`Etc/UTC`, `Zulu`): no change of offset ever, offset
/// 0, abbreviation `UTC`. Such a session prints and reads exactly as a UTC one, so it takes
/// [`Zone::UTC`] and its values skip the conversion.
fn is_utc(tz: &TimeZone) -> bool {
    let info = tz.to_offset_info(Timestamp::UNIX_EPOCH);
    info.offset() == Offset::UTC
        && info.abbreviation() == "UTC"
        && tz.following(Timestamp::MIN).next().is_none()
}

/// The abbreviation and offset of the zone PostgreSQL makes of a numeric setting
/// (`SET TIME ZONE '+5'` shows as `<+05>-05`, POSIX's west-positive offset).
fn numeric(value: &str) -> Option<(&str, Offset)> {
    let (abbreviation, west) = value.strip_prefix('<')?.split_once('>')?;
    let (sign, hms) = match west.as_bytes().first()? {
        b'+' => (1, &west[1..]),
        b'-' => (-1, &west[1..]),
        _ => (1, west),
    };
    if hms.split(':').count() > 3 {
        return None;
    }
    let mut seconds = 0i32;
    for (field, scale) in hms.split(':').zip([3600, 60, 1]) {
        let n: i32 = field.parse().ok().filter(|n| (0..100).contains(n))?;
        seconds += n * scale;
    }
    Offset::from_seconds(-sign * seconds)
        .ok()
        .map(|o| (abbreviation, o))
}

/// The instant `pg` microseconds after 2000-01-01 UTC, held inside the range the zone
/// rules cover (years -9999 to 9999: a zone's offset past them is its offset at the edge).
fn instant(pg: i64) -> Timestamp {
    let min = Timestamp::MIN.as_microsecond();
    let max = Timestamp::MAX.as_microsecond();
    let unix = pg.saturating_add(PG_EPOCH_UNIX_SECS * 1_000_000);
    Timestamp::from_microsecond(unix.clamp(min, max)).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microseconds since 2000-01-01 of a UTC wall-clock time.
    fn pg(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> i64 {
        let dt = jiff::civil::date(y, mo, d).at(h, mi, 0, 0);
        Offset::UTC
            .to_timestamp(dt)
            .expect("in range")
            .as_microsecond()
            - PG_EPOCH_UNIX_SECS * 1_000_000
    }

    #[test]
    fn names_resolve_once_in_any_case_and_unknown_ones_do_not() {
        let paris = Zone::from_setting("Europe/Paris").expect("Europe/Paris");
        assert_eq!(Zone::from_setting("Europe/Paris"), Some(paris));
        // one entry per zone, whatever the case it is written in
        assert_eq!(Zone::from_setting("europe/PARIS"), Some(paris));
        assert_eq!(Zone::named("EUROPE/paris"), Some(paris));
        // in a value, names without a `/` are abbreviations, not zones
        assert_eq!(Zone::named("CET"), None);
        assert_eq!(Zone::from_setting("UTC"), Some(Zone::UTC));
        // UTC under other names is UTC; GMT prints its own abbreviation, so stays apart
        assert_eq!(Zone::from_setting("Etc/UTC"), Some(Zone::UTC));
        assert_eq!(Zone::from_setting("Zulu"), Some(Zone::UTC));
        let gmt = Zone::from_setting("GMT").expect("GMT");
        assert_ne!(gmt, Zone::UTC);
        assert_eq!(gmt.label_at(0).abbreviation, "GMT");
        assert_eq!(Zone::from_setting("<+05>-05:00:00:00"), None);
        assert_eq!(Zone::from_setting("Mars/Olympus_Mons"), None);
        assert_eq!(Zone::from_setting(""), None);
    }

    #[test]
    fn offsets_and_abbreviations_follow_the_rules_in_force() {
        let ny = Zone::from_setting("America/New_York").expect("zone");
        assert_eq!(ny.offset_at(pg(2020, 1, 5, 12, 0)), -5 * 3600);
        assert_eq!(ny.offset_at(pg(2020, 7, 5, 12, 0)), -4 * 3600);
        assert_eq!(ny.label_at(pg(2020, 7, 5, 12, 0)).abbreviation, "EDT");
        // local mean time before standard time (PostgreSQL prints -04:56:02)
        assert_eq!(
            ny.offset_at(pg(1800, 1, 1, 0, 0)),
            -(4 * 3600 + 56 * 60 + 2)
        );
        // a zone set by number, as the server reports it
        let plus = Zone::from_setting("<+05:30>-05:30").expect("numeric");
        assert_eq!(plus.label_at(0).offset, 5 * 3600 + 1800);
        assert_eq!(plus.label_at(0).abbreviation, "+05:30");
        let minus = Zone::from_setting("<-07>+07").expect("numeric");
        assert_eq!(minus.offset_of_local(0), -7 * 3600);
        assert_eq!(minus.label_at(0).abbreviation, "-07");
        assert_eq!(Zone::from_setting("<+05>-5:a"), None);
        // POSIX signs are west-positive
        assert_eq!(
            Zone::from_setting("UTC+3").map(|z| z.offset_at(0)),
            Some(-3 * 3600)
        );
    }

    #[test]
    fn skipped_and_repeated_times_take_postgres_offsets() {
        let ny = Zone::from_setting("America/New_York").expect("zone");
        // 02:30 on 2020-03-08 does not exist: read with the offset before (EST)
        assert_eq!(ny.offset_of_local(pg(2020, 3, 8, 2, 30)), -5 * 3600);
        // 01:30 on 2020-11-01 happens twice: read with the offset after (EST)
        assert_eq!(ny.offset_of_local(pg(2020, 11, 1, 1, 30)), -5 * 3600);
        assert_eq!(ny.offset_of_local(pg(2020, 11, 1, 0, 30)), -4 * 3600);
        assert_eq!(ny.offset_of_local(pg(2020, 3, 8, 3, 30)), -4 * 3600);
        // far outside the rules' range: the offset at the edge, no panic
        assert_eq!(Zone::UTC.offset_of_local(i64::MAX), 0);
        let _ = ny.offset_of_local(i64::MAX - 1);
        let _ = ny.label_at(i64::MIN + 1);
    }
}
