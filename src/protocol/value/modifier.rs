//! Type modifiers (`varchar(n)`, `char(n)`, `numeric(p, s)`, `timestamp(p)`) applied to
//! canonical values as PostgreSQL's explicit casts apply them: a length cuts the text, a
//! scale rounds the number half away from zero, a precision rounds the fraction of a
//! second. phigate applies them itself because PostgreSQL sees only ciphertext.

use crate::policy::LogicalType;

/// The longest `varchar(n)` or `char(n)` PostgreSQL accepts.
const MAX_LENGTH: u32 = 10_485_760;
/// The largest precision (and scale) of `numeric(p, s)`.
const MAX_PRECISION: u32 = 1000;

/// A type's modifier, as a cast names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    /// `varchar(n)`: at most n characters; a cast cuts the rest
    Length(u32),
    /// `char(n)`: at most n characters, trailing spaces insignificant
    Padded(u32),
    /// `numeric(precision, scale)`: rounded to `scale` places after the point
    Numeric {
        /// all significant places
        precision: u32,
        /// places after the point (negative: rounded to tens, hundreds, ...)
        scale: i32,
    },
    /// `timestamp(p)`: rounded to p digits of a second
    Seconds(u32),
}

/// The type a value meeting an encrypted column is read as, and the modifiers of the casts
/// around it, innermost first: `'x'::varchar(2)::text` is read as varchar and cut to two
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cast {
    /// the type the innermost cast names
    pub ty: LogicalType,
    /// the casts' modifiers, innermost first
    pub modifiers: Vec<Modifier>,
}

/// Why a modifier does not apply. The message never contains the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModifierError {
    /// the type name's modifier is not valid for its type (PostgreSQL: 22023, 42601)
    Invalid(&'static str),
    /// the value does not fit (PostgreSQL: 22003)
    Overflow(&'static str),
}

impl Modifier {
    /// The modifier of type name `name` (as sqlparser prints a cast's type), read as type
    /// `ty`: `None` when it has none. `char` and `character` without a length are
    /// `char(1)`, as in PostgreSQL.
    pub fn of_type_name(name: &str, ty: LogicalType) -> Result<Option<Self>, ModifierError> {
        let lower = name.trim().to_ascii_lowercase();
        let args = match (lower.find('('), lower.find(')')) {
            (Some(i), Some(j)) if i < j => Some(&lower[i + 1..j]),
            _ => None,
        };
        let numbers: Option<Vec<i64>> = args
            .map(|a| a.split(',').map(|n| n.trim().parse::<i64>()).collect())
            .transpose()
            .map_err(|_| ModifierError::Invalid("a type modifier must be an integer"))?;
        let base = lower.split('(').next().unwrap_or_default().trim();
        let base = base.strip_prefix("pg_catalog.").unwrap_or(base);
        Self::of(ty, base, numbers.as_deref())
    }

    fn of(
        ty: LogicalType,
        base: &str,
        numbers: Option<&[i64]>,
    ) -> Result<Option<Self>, ModifierError> {
        use LogicalType as T;
        let length = |n: i64| {
            u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_LENGTH).contains(n))
                .ok_or(ModifierError::Invalid(
                    "a length must be between 1 and 10485760",
                ))
        };
        Ok(match (ty, numbers) {
            (T::Bpchar, None) if matches!(base, "char" | "character" | "\"char\"") => {
                Some(Self::Padded(1))
            }
            (_, None) => None,
            (T::Varchar, Some(&[n])) => Some(Self::Length(length(n)?)),
            (T::Bpchar, Some(&[n])) => Some(Self::Padded(length(n)?)),
            (T::Numeric, Some(&[p])) => Some(Self::numeric(p, 0)?),
            (T::Numeric, Some(&[p, s])) => Some(Self::numeric(p, s)?),
            (T::Timestamp | T::Timestamptz, Some(&[p])) => Some(Self::Seconds(
                // PostgreSQL reduces a larger precision to 6, with a warning
                u32::try_from(p.min(6))
                    .map_err(|_| ModifierError::Invalid("a time precision must not be negative"))?,
            )),
            _ => return Err(ModifierError::Invalid("the type takes no such modifier")),
        })
    }

    fn numeric(precision: i64, scale: i64) -> Result<Self, ModifierError> {
        let precision = u32::try_from(precision)
            .ok()
            .filter(|p| (1..=MAX_PRECISION).contains(p))
            .ok_or(ModifierError::Invalid(
                "a numeric precision must be between 1 and 1000",
            ))?;
        let scale = i32::try_from(scale)
            .ok()
            .filter(|s| s.unsigned_abs() <= MAX_PRECISION)
            .ok_or(ModifierError::Invalid(
                "a numeric scale must be between -1000 and 1000",
            ))?;
        Ok(Self::Numeric { precision, scale })
    }

    /// True when the modifier applies to values of `ty` as phigate holds them.
    fn fits(self, ty: LogicalType) -> bool {
        use LogicalType as T;
        match self {
            Self::Length(_) | Self::Padded(_) => matches!(ty, T::Text | T::Varchar | T::Bpchar),
            Self::Numeric { .. } => ty == T::Numeric,
            Self::Seconds(_) => matches!(ty, T::Timestamp | T::Timestamptz),
        }
    }

    /// Applies the modifier, as an explicit cast does, to `canonical`, a value of `ty` in
    /// its canonical form (see the module `value`).
    pub fn apply(self, ty: LogicalType, canonical: &mut Vec<u8>) -> Result<(), ModifierError> {
        if !self.fits(ty) {
            return Err(ModifierError::Invalid(
                "the cast's modifier does not apply to the column's type",
            ));
        }
        match self {
            Self::Length(n) => cut(canonical, n),
            Self::Padded(n) => {
                cut(canonical, n);
                let kept = canonical
                    .iter()
                    .rposition(|&b| b != b' ')
                    .map_or(0, |i| i + 1);
                canonical.truncate(kept);
            }
            Self::Numeric { precision, scale } => {
                let text = std::str::from_utf8(canonical)
                    .map_err(|_| ModifierError::Invalid("not a decimal number"))?;
                *canonical = round_numeric(text, precision, scale)?.into_bytes();
            }
            Self::Seconds(p) => {
                let micros: [u8; 8] = canonical[..]
                    .try_into()
                    .map_err(|_| ModifierError::Invalid("not a timestamp"))?;
                *canonical = round_micros(i64::from_be_bytes(micros), p)
                    .to_be_bytes()
                    .to_vec();
            }
        }
        Ok(())
    }
}

/// Applies `modifiers` in order to `canonical`, a value of `ty`.
pub(crate) fn apply_all(
    modifiers: &[Modifier],
    ty: LogicalType,
    canonical: &mut Vec<u8>,
) -> Result<(), ModifierError> {
    modifiers.iter().try_for_each(|m| m.apply(ty, canonical))
}

/// Cuts UTF-8 text after `n` characters.
fn cut(text: &mut Vec<u8>, n: u32) {
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    // a character starts at every byte that is not a continuation byte
    if let Some((at, _)) = text
        .iter()
        .enumerate()
        .filter(|(_, b)| (**b & 0xC0) != 0x80)
        .nth(n)
    {
        text.truncate(at);
    }
}

/// Microseconds since 2000-01-01 rounded to `p` digits of a second, half away from the
/// epoch, as PostgreSQL's `AdjustTimestampForTypmod`; infinities stay.
fn round_micros(t: i64, p: u32) -> i64 {
    if t == i64::MAX || t == i64::MIN || p >= 6 {
        return t;
    }
    let scale = 10_i64.pow(6 - p);
    let half = scale / 2;
    let round = |m: i64| m.saturating_add(half) / scale * scale;
    if t >= 0 { round(t) } else { -round(-t) }
}

/// Canonical numeric text rounded to `scale` places, half away from zero, then checked
/// against `precision`, as PostgreSQL's `apply_typmod`.
fn round_numeric(c: &str, precision: u32, scale: i32) -> Result<String, ModifierError> {
    match c {
        "NaN" => return Ok(c.to_owned()),
        "Infinity" | "-Infinity" => {
            return Err(ModifierError::Overflow(
                "a numeric with a precision cannot hold an infinite value",
            ));
        }
        _ => {}
    }
    let (neg, body) = c.strip_prefix('-').map_or((false, c), |b| (true, b));
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let mut digits: Vec<u8> = int
        .bytes()
        .chain(frac.bytes())
        .map(|b| b.wrapping_sub(b'0'))
        .collect();
    let mut point = int.len();
    // the digits kept: those before the point and `scale` after it
    let keep = i64::try_from(point).unwrap_or(i64::MAX) + i64::from(scale);
    let keep = usize::try_from(keep.max(0)).unwrap_or(0);
    if keep < digits.len() {
        let up = digits[keep] >= 5;
        digits.truncate(keep);
        if up && increment(&mut digits) {
            digits.insert(0, 1);
            point += 1;
        }
    }
    // a negative scale leaves zeros before the point; a positive one pads the fraction
    let frac_len = usize::try_from(scale.max(0)).unwrap_or(0);
    digits.resize(point + frac_len, 0);
    check_precision(&digits, point, precision, scale)?;
    Ok(compose(neg, &digits, point))
}

/// Adds one at the last digit; true when it carries out of the first.
fn increment(digits: &mut [u8]) -> bool {
    for d in digits.iter_mut().rev() {
        if *d == 9 {
            *d = 0;
        } else {
            *d += 1;
            return false;
        }
    }
    true
}

/// PostgreSQL's rule: the rounded value's absolute value is below 10^(precision - scale).
fn check_precision(
    digits: &[u8],
    point: usize,
    precision: u32,
    scale: i32,
) -> Result<(), ModifierError> {
    let Some(first) = digits.iter().position(|&d| d != 0) else {
        return Ok(());
    };
    // the power of ten of the first significant digit
    let magnitude =
        i64::try_from(point).unwrap_or(i64::MAX) - i64::try_from(first).unwrap_or(0) - 1;
    if magnitude < i64::from(precision) - i64::from(scale) {
        Ok(())
    } else {
        Err(ModifierError::Overflow(
            "the value does not fit the numeric's precision and scale (it must round to an absolute value below 10^(precision - scale))",
        ))
    }
}

/// Canonical text of `digits` with the point after `point` of them.
fn compose(neg: bool, digits: &[u8], point: usize) -> String {
    let (int, frac) = digits.split_at(point.min(digits.len()));
    let int: String = int.iter().map(|d| char::from(b'0' + d)).collect();
    let int = int.trim_start_matches('0');
    let zero = int.is_empty() && frac.iter().all(|&d| d == 0);
    let mut out = String::with_capacity(digits.len() + 2);
    if neg && !zero {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.extend(frac.iter().map(|d| char::from(b'0' + d)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use LogicalType as T;

    fn cast(name: &str, ty: LogicalType, value: &str) -> Result<String, ModifierError> {
        let named = LogicalType::from_sql_name(name).expect("a type");
        let m = Modifier::of_type_name(name, named)?.expect("a modifier");
        let mut v = value.as_bytes().to_vec();
        m.apply(ty, &mut v)?;
        Ok(String::from_utf8(v).expect("text"))
    }

    #[test]
    fn type_names_give_their_modifiers() {
        let of = Modifier::of_type_name;
        assert_eq!(of("VARCHAR(2)", T::Varchar), Ok(Some(Modifier::Length(2))));
        assert_eq!(
            of("CHARACTER VARYING(10)", T::Varchar),
            Ok(Some(Modifier::Length(10)))
        );
        assert_eq!(
            of("pg_catalog.varchar(3)", T::Varchar),
            Ok(Some(Modifier::Length(3)))
        );
        assert_eq!(of("VARCHAR", T::Varchar), Ok(None));
        assert_eq!(of("CHAR", T::Bpchar), Ok(Some(Modifier::Padded(1))));
        assert_eq!(of("CHARACTER(3)", T::Bpchar), Ok(Some(Modifier::Padded(3))));
        assert_eq!(of("bpchar", T::Bpchar), Ok(None));
        assert_eq!(
            of("NUMERIC(10,2)", T::Numeric),
            Ok(Some(Modifier::Numeric {
                precision: 10,
                scale: 2
            }))
        );
        assert_eq!(
            of("DECIMAL(4)", T::Numeric),
            Ok(Some(Modifier::Numeric {
                precision: 4,
                scale: 0
            }))
        );
        assert_eq!(
            of("TIMESTAMP(3) WITH TIME ZONE", T::Timestamptz),
            Ok(Some(Modifier::Seconds(3)))
        );
        assert_eq!(
            of("TIMESTAMP(9)", T::Timestamp),
            Ok(Some(Modifier::Seconds(6)))
        );
        assert_eq!(of("TIMESTAMP", T::Timestamp), Ok(None));
        for (name, ty) in [
            ("VARCHAR(0)", T::Varchar),
            ("TEXT(5)", T::Text),
            ("INT4(3)", T::Int4),
            ("NUMERIC(0)", T::Numeric),
            ("NUMERIC(10,2,1)", T::Numeric),
            ("VARCHAR(x)", T::Varchar),
        ] {
            assert!(
                matches!(of(name, ty), Err(ModifierError::Invalid(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn lengths_cut_as_postgres_casts_do() {
        assert_eq!(cast("VARCHAR(2)", T::Varchar, "abc"), Ok("ab".into()));
        assert_eq!(cast("VARCHAR(2)", T::Text, "a  "), Ok("a ".into()));
        assert_eq!(cast("VARCHAR(5)", T::Text, "abc"), Ok("abc".into()));
        // characters, not bytes
        assert_eq!(cast("VARCHAR(2)", T::Text, "aé€"), Ok("aé".into()));
        // char(n) keeps no trailing spaces: 'ab c'::char(3)::text is 'ab'
        assert_eq!(cast("CHAR(3)", T::Text, "ab c"), Ok("ab".into()));
        assert_eq!(cast("CHAR", T::Bpchar, "xyz"), Ok("x".into()));
    }

    #[test]
    fn numerics_round_half_away_from_zero_and_overflow() {
        let n = |name, v| cast(name, T::Numeric, v);
        assert_eq!(n("NUMERIC(10,2)", "1.555"), Ok("1.56".into()));
        assert_eq!(n("NUMERIC(10,2)", "-1.555"), Ok("-1.56".into()));
        assert_eq!(n("NUMERIC(10,3)", "1.5"), Ok("1.500".into()));
        assert_eq!(n("NUMERIC(1,0)", "0.5"), Ok("1".into()));
        assert_eq!(n("NUMERIC(1,0)", "-0.5"), Ok("-1".into()));
        assert_eq!(n("NUMERIC(1,0)", "-0.4"), Ok("0".into()));
        assert_eq!(n("NUMERIC(3)", "12.5"), Ok("13".into()));
        assert_eq!(n("NUMERIC(3,-1)", "1234.5"), Ok("1230".into()));
        assert_eq!(n("NUMERIC(1,-1)", "5"), Ok("10".into()));
        assert_eq!(n("NUMERIC(4,2)", "99.994"), Ok("99.99".into()));
        assert_eq!(n("NUMERIC(2,3)", "0.0123"), Ok("0.012".into()));
        assert_eq!(n("NUMERIC(3,1)", "NaN"), Ok("NaN".into()));
        for (name, v) in [
            ("NUMERIC(4,2)", "99.995"),
            ("NUMERIC(4,2)", "100"),
            ("NUMERIC(2,3)", "0.1"),
            ("NUMERIC(3,1)", "Infinity"),
            ("NUMERIC(3,1)", "-Infinity"),
        ] {
            assert!(
                matches!(n(name, v), Err(ModifierError::Overflow(_))),
                "{name} {v}"
            );
        }
    }

    #[test]
    fn timestamps_round_half_away_from_the_epoch() {
        let round = |p, t| round_micros(t, p);
        // 2020-01-01 10:00:00.1234565 is held as ...123457 (microseconds)
        assert_eq!(round(3, 631_188_000_123_457), 631_188_000_123_000);
        assert_eq!(round(3, 631_188_000_999_600), 631_188_001_000_000);
        // before 2000: 1960-01-01 00:00:00.5 rounds down, .5001 up (PostgreSQL 15)
        let t1960 = -1_262_304_000_000_000_i64;
        assert_eq!(round(0, t1960 + 500_000), t1960);
        assert_eq!(round(0, t1960 + 500_100), t1960 + 1_000_000);
        assert_eq!(round(0, i64::MAX), i64::MAX);
        assert_eq!(round(6, 7), 7);
        let mut v = 631_188_000_150_000_i64.to_be_bytes().to_vec();
        Modifier::Seconds(1)
            .apply(T::Timestamp, &mut v)
            .expect("applies");
        assert_eq!(v, 631_188_000_200_000_i64.to_be_bytes());
    }

    #[test]
    fn a_modifier_of_another_type_is_refused() {
        let mut v = b"abc".to_vec();
        assert!(Modifier::Seconds(1).apply(T::Text, &mut v).is_err());
        assert!(Modifier::Length(1).apply(T::Numeric, &mut v).is_err());
        assert_eq!(v, b"abc");
    }
}
