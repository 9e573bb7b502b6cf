//! Conversion of protected values between PostgreSQL's text and binary wire formats and the
//! canonical plaintext that is encrypted (DESIGN section 5).
//!
//! Canonical forms: the binary wire form for integers, bool, date, timestamp, timestamptz
//! and uuid; the UTF-8 text for text-like types, numeric (normalised: no sign for positive
//! values, no leading zeros, the scale as written), json (as written, validated) and jsonb
//! (re-serialised with sorted keys); the raw bytes for bytea. Equal values of a column
//! therefore encrypt equally in deterministic mode however the client spelt them
//! (`'2020-1-1'` and `'2020-01-01'`, `'t'` and `'true'`, text and binary format).

mod modifier;
mod numeric;

pub(crate) use modifier::apply_all;
pub use modifier::{Cast, Modifier, ModifierError};

use numeric::{normalise_numeric, numeric_from_binary, numeric_to_binary};
use thiserror::Error;

pub use super::datestyle::{DateOrder, DateOutput, DateStyle};
use super::datetime;
use super::zone::Zone;
use crate::policy::LogicalType;

/// A wire format code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 0: text
    Text,
    /// 1: binary
    Binary,
}

impl Format {
    /// The format a code denotes (anything but 1 is text, as PostgreSQL checks codes
    /// itself).
    pub(crate) fn from_code(code: i16) -> Self {
        if code == 1 { Self::Binary } else { Self::Text }
    }

    /// The format of column (or parameter) `i` under a list of format codes as Bind carries
    /// them: none means text, one applies to all.
    pub fn nth(codes: &[i16], i: usize) -> Self {
        match codes {
            [] => Self::Text,
            [one] => Self::from_code(*one),
            many => Self::from_code(many.get(i).copied().unwrap_or(0)),
        }
    }
}

/// A value that is not valid for its logical type. The message never contains the value.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid {format} value for type {type_name}: {problem}")]
pub(crate) struct ValueError {
    /// the logical type
    pub type_name: &'static str,
    /// "text" or "binary"
    pub format: &'static str,
    /// what is wrong
    pub problem: &'static str,
}

impl ValueError {
    /// The SQLSTATE PostgreSQL gives the same mistake: 22003 for a number out of its type's
    /// range, 22008 for a date or time field out of range (`2020-02-30`), 22007 for a date or
    /// time phigate cannot read, 22023 for bad hexadecimal in a bytea, else 22P02.
    pub(crate) fn sqlstate(&self) -> &'static str {
        let temporal =
            LogicalType::from_sql_name(self.type_name).is_some_and(LogicalType::is_temporal);
        match self.problem {
            p if temporal && datetime::field_out_of_range(p) => "22008",
            OUT_OF_RANGE => "22003",
            BAD_HEX_DIGIT | ODD_HEX if self.type_name == LogicalType::Bytea.name() => "22023",
            _ if temporal => "22007",
            _ => "22P02",
        }
    }
}

/// The problem of an integer too large for its type.
const OUT_OF_RANGE: &str = "out of range for its type";
/// The problems of bad hexadecimal (in a bytea, a uuid).
const BAD_HEX_DIGIT: &str = "not a hexadecimal digit";
const ODD_HEX: &str = "odd number of hexadecimal digits";

/// The session context some conversions need.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context {
    /// the session's TimeZone, in which a timestamptz is printed and one written without
    /// an offset is read (`None`: phigate could not resolve it; such values are then
    /// printed in UTC, and a timestamptz without an offset is refused)
    pub zone: Option<Zone>,
    /// the session's client encoding, in which clients send and read text values
    pub encoding: super::encoding::ClientEncoding,
    /// the session's DateStyle, in which dates and timestamps are read and printed as text
    pub date_style: DateStyle,
}

impl Context {
    /// A value of type `ty` as the client sent it, with its text in UTF-8 (phigate
    /// canonicalises text as UTF-8, so clients in different encodings share ciphertexts).
    pub(crate) fn value_from_client<'a>(
        &self,
        ty: LogicalType,
        format: Format,
        v: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, super::encoding::EncodingError> {
        if is_textual(ty, format) {
            self.encoding.to_utf8(v)
        } else {
            Ok(std::borrow::Cow::Borrowed(v))
        }
    }

    /// A value of type `ty` (in `format`, as [`from_canonical`] wrote it) for the client:
    /// its text in the client encoding, a date or timestamp in the session's DateStyle.
    pub(crate) fn value_for_client(
        &self,
        ty: LogicalType,
        format: Format,
        v: Vec<u8>,
    ) -> Result<Vec<u8>, super::encoding::EncodingError> {
        if is_textual(ty, format) && !self.encoding.is_utf8() {
            self.encoding.utf8_to_client(&v)
        } else if format == Format::Text && self.restyles(ty) {
            Ok(self.restyled(ty, v))
        } else {
            Ok(v)
        }
    }

    /// True when a value of `ty` printed by [`from_canonical`] is printed otherwise in this
    /// session: a date or timestamp in a DateStyle other than ISO, a timestamptz in a zone
    /// other than UTC.
    fn restyles(&self, ty: LogicalType) -> bool {
        self.date_style.output != DateOutput::Iso
            || (ty == LogicalType::Timestamptz && self.zone.is_some_and(|z| z != Zone::UTC))
    }

    /// A date or timestamp printed in ISO (as [`from_canonical`] prints it: a timestamptz
    /// in UTC) in the session's DateStyle and zone; any other value as it is.
    fn restyled(&self, ty: LogicalType, v: Vec<u8>) -> Vec<u8> {
        let Ok(iso) = std::str::from_utf8(&v) else {
            return v;
        };
        // ISO text begins with a four-digit year: any order reads it
        match ty {
            LogicalType::Date => datetime::parse_date(iso, DateOrder::Ymd)
                .map(|d| self.date_style.date(d).into_bytes())
                .unwrap_or(v),
            LogicalType::Timestamp | LogicalType::Timestamptz => {
                let zone = (ty == LogicalType::Timestamptz).then(|| self.zone.unwrap_or(Zone::UTC));
                datetime::parse_timestamp(iso, zone.is_some(), Some(Zone::UTC), DateOrder::Ymd)
                    .map(|t| self.date_style.timestamp(t, zone).into_bytes())
                    .unwrap_or(v)
            }
            _ => v,
        }
    }
}

/// True when a value of `ty` in `format` is text in the client encoding.
fn is_textual(ty: LogicalType, format: Format) -> bool {
    matches!(
        ty,
        LogicalType::Text | LogicalType::Varchar | LogicalType::Bpchar | LogicalType::Json
    ) || (ty == LogicalType::Jsonb && format == Format::Text)
}

/// The type OID an application sees for a logical type.
pub(crate) fn type_oid(ty: LogicalType) -> u32 {
    match ty {
        LogicalType::Text => 25,
        LogicalType::Varchar => 1043,
        LogicalType::Bpchar => 1042,
        LogicalType::Int2 => 21,
        LogicalType::Int4 => 23,
        LogicalType::Int8 => 20,
        LogicalType::Numeric => 1700,
        LogicalType::Bool => 16,
        LogicalType::Date => 1082,
        LogicalType::Timestamp => 1114,
        LogicalType::Timestamptz => 1184,
        LogicalType::Uuid => 2950,
        LogicalType::Json => 114,
        LogicalType::Jsonb => 3802,
        LogicalType::Bytea => 17,
    }
}

/// The OID of the array type over a logical type.
pub(crate) fn array_type_oid(ty: LogicalType) -> u32 {
    match ty {
        LogicalType::Text => 1009,
        LogicalType::Varchar => 1015,
        LogicalType::Bpchar => 1014,
        LogicalType::Int2 => 1005,
        LogicalType::Int4 => 1007,
        LogicalType::Int8 => 1016,
        LogicalType::Numeric => 1231,
        LogicalType::Bool => 1000,
        LogicalType::Date => 1182,
        LogicalType::Timestamp => 1115,
        LogicalType::Timestamptz => 1185,
        LogicalType::Uuid => 2951,
        LogicalType::Json => 199,
        LogicalType::Jsonb => 3807,
        LogicalType::Bytea => 1001,
    }
}

/// The logical type whose OID is `oid` (the inverse of [`type_oid`]).
pub(crate) fn logical_of_oid(oid: u32) -> Option<LogicalType> {
    use LogicalType as T;
    [
        T::Text,
        T::Varchar,
        T::Bpchar,
        T::Int2,
        T::Int4,
        T::Int8,
        T::Numeric,
        T::Bool,
        T::Date,
        T::Timestamp,
        T::Timestamptz,
        T::Uuid,
        T::Json,
        T::Jsonb,
        T::Bytea,
    ]
    .into_iter()
    .find(|t| type_oid(*t) == oid)
}

/// True for the OIDs whose binary form is their text (text, varchar, bpchar, name,
/// unknown): a client that declared one of them for a parameter sends text.
pub(crate) fn is_text_oid(oid: u32) -> bool {
    matches!(oid, 25 | 1043 | 1042 | 19 | 705)
}

/// The elements of a one-dimensional array parameter in text form (`{a,"b c",NULL}`).
pub(crate) fn parse_text_array(s: &str) -> Result<Vec<Option<String>>, &'static str> {
    let inner = s
        .trim()
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .ok_or("not an array literal")?;
    let mut items = Vec::new();
    if inner.trim().is_empty() {
        return Ok(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let item = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('\\') => v.push(chars.next().ok_or("unterminated quote")?),
                    Some('"') => break,
                    Some(c) => v.push(c),
                    None => return Err("unterminated quote"),
                }
            }
            Some(v)
        } else {
            let mut v = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '"' {
                    return Err("only one-dimensional arrays are accepted");
                }
                v.push(c);
                chars.next();
            }
            let v = v.trim().to_owned();
            if v.eq_ignore_ascii_case("null") {
                None
            } else {
                Some(v)
            }
        };
        items.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some(',') => {}
            None => return Ok(items),
            Some(_) => return Err("malformed array literal"),
        }
    }
}

/// A binary array's element type OID and its elements (`None` is NULL).
pub(crate) type BinaryArray<'a> = (u32, Vec<Option<&'a [u8]>>);

/// A one-dimensional binary array: its element type OID and elements.
pub(crate) fn parse_binary_array(v: &[u8]) -> Result<BinaryArray<'_>, &'static str> {
    let int = |i: usize| -> Result<i32, &'static str> {
        v.get(i..i + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("truncated array")
    };
    let ndim = int(0)?;
    let elem = int(8)? as u32;
    match ndim {
        0 => return Ok((elem, Vec::new())),
        1 => {}
        _ => return Err("only one-dimensional arrays are accepted"),
    }
    let n = usize::try_from(int(12)?).map_err(|_| "bad array length")?;
    let mut at = 20;
    let mut items = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            items.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| "bad element length")?;
        items.push(Some(v.get(at..at + len).ok_or("truncated array")?));
        at += len;
    }
    if at != v.len() {
        return Err("trailing bytes after the array");
    }
    Ok((elem, items))
}

/// A one-dimensional binary `bytea[]` array of `items`.
pub(crate) fn binary_bytea_array(items: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    let has_null = items.iter().any(Option::is_none);
    let len = |n: usize| i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes();
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&17u32.to_be_bytes());
    out.extend_from_slice(&len(items.len()));
    out.extend_from_slice(&1i32.to_be_bytes());
    for item in items {
        match item {
            Some(b) => {
                out.extend_from_slice(&len(b.len()));
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    out
}

/// The type's length as RowDescription reports it (-1 for variable length).
pub(crate) fn type_len(ty: LogicalType) -> i16 {
    match ty {
        LogicalType::Int2 => 2,
        LogicalType::Int4 | LogicalType::Date => 4,
        LogicalType::Int8 | LogicalType::Timestamp | LogicalType::Timestamptz => 8,
        LogicalType::Bool => 1,
        LogicalType::Uuid => 16,
        _ => -1,
    }
}

/// Decodes a client value (a literal's text, or a bound parameter) into canonical
/// plaintext.
pub(crate) fn to_canonical(
    ty: LogicalType,
    format: Format,
    value: &[u8],
    ctx: Context,
) -> Result<Vec<u8>, ValueError> {
    let err = |problem| ValueError {
        type_name: ty.name(),
        format: match format {
            Format::Text => "text",
            Format::Binary => "binary",
        },
        problem,
    };
    if format == Format::Binary {
        return binary_to_canonical(ty, value).map_err(err);
    }
    let text = std::str::from_utf8(value).map_err(|_| err("not valid UTF-8"))?;
    text_to_canonical(ty, text, ctx).map_err(err)
}

/// [`to_canonical`] of a value of type `source` stored as `target` (an integer of another
/// width, a timestamptz as a timestamp): read as `source`, then as `target` through its
/// text, as PostgreSQL's conversion reads it; a timestamptz becomes its wall clock in the
/// session's zone, and a timestamp read as a timestamptz is read in that zone.
pub(crate) fn to_canonical_from(
    source: LogicalType,
    target: LogicalType,
    format: Format,
    value: &[u8],
    ctx: Context,
) -> Result<Vec<u8>, ValueError> {
    if source == target {
        return to_canonical(target, format, value, ctx);
    }
    let canonical = to_canonical(source, format, value, ctx)?;
    if (source, target) == (LogicalType::Timestamptz, LogicalType::Timestamp) {
        let utc = i64::from_be_bytes(fixed(&canonical).map_err(|problem| ValueError {
            type_name: source.name(),
            format: "stored",
            problem,
        })?);
        return Ok(datetime::wall_clock(utc, ctx.zone.unwrap_or(Zone::UTC))
            .to_be_bytes()
            .to_vec());
    }
    let text = from_canonical(source, Format::Text, &canonical)?;
    to_canonical(target, Format::Text, &text, ctx)
}

/// Encodes canonical plaintext in the format the client asked for.
pub(crate) fn from_canonical(
    ty: LogicalType,
    format: Format,
    canonical: &[u8],
) -> Result<Vec<u8>, ValueError> {
    let err = |problem| ValueError {
        type_name: ty.name(),
        format: "stored",
        problem,
    };
    match format {
        Format::Text => canonical_to_text(ty, canonical).map_err(err),
        Format::Binary => canonical_to_binary(ty, canonical).map_err(err),
    }
}

type Res<T> = Result<T, &'static str>;

fn fixed<const N: usize>(v: &[u8]) -> Res<[u8; N]> {
    v.try_into().map_err(|_| "wrong length")
}

fn binary_to_canonical(ty: LogicalType, v: &[u8]) -> Res<Vec<u8>> {
    use LogicalType as T;
    Ok(match ty {
        T::Int2 => fixed::<2>(v)?.to_vec(),
        T::Int4 | T::Date => fixed::<4>(v)?.to_vec(),
        T::Int8 | T::Timestamp | T::Timestamptz => fixed::<8>(v)?.to_vec(),
        T::Uuid => fixed::<16>(v)?.to_vec(),
        T::Bool => match v {
            [0] | [1] => v.to_vec(),
            _ => return Err("not a boolean"),
        },
        T::Numeric => numeric_from_binary(v)?.into_bytes(),
        T::Jsonb => match v.split_first() {
            Some((1, json)) => text_to_canonical(ty, utf8(json)?, Context::default())?,
            _ => return Err("unknown jsonb version"),
        },
        T::Text | T::Varchar | T::Bpchar | T::Json => {
            text_to_canonical(ty, utf8(v)?, Context::default())?
        }
        T::Bytea => v.to_vec(),
    })
}

fn utf8(v: &[u8]) -> Res<&str> {
    std::str::from_utf8(v).map_err(|_| "not valid UTF-8")
}

fn text_to_canonical(ty: LogicalType, s: &str, ctx: Context) -> Res<Vec<u8>> {
    use LogicalType as T;
    Ok(match ty {
        T::Text | T::Varchar => s.as_bytes().to_vec(),
        T::Bpchar => s.trim_end_matches(' ').as_bytes().to_vec(),
        T::Int2 => parse_int::<i16>(s)?.to_be_bytes().to_vec(),
        T::Int4 => parse_int::<i32>(s)?.to_be_bytes().to_vec(),
        T::Int8 => parse_int::<i64>(s)?.to_be_bytes().to_vec(),
        T::Bool => vec![u8::from(parse_bool(s)?)],
        T::Numeric => normalise_numeric(s)?.into_bytes(),
        T::Date => datetime::parse_date(s, ctx.date_style.order)?
            .to_be_bytes()
            .to_vec(),
        T::Timestamp => datetime::parse_timestamp(s, false, ctx.zone, ctx.date_style.order)?
            .to_be_bytes()
            .to_vec(),
        T::Timestamptz => datetime::parse_timestamp(s, true, ctx.zone, ctx.date_style.order)?
            .to_be_bytes()
            .to_vec(),
        T::Uuid => parse_uuid(s)?.to_vec(),
        T::Json => {
            serde_json::from_str::<serde::de::IgnoredAny>(s).map_err(|_| "not valid JSON")?;
            s.as_bytes().to_vec()
        }
        T::Jsonb => {
            let v: serde_json::Value = serde_json::from_str(s).map_err(|_| "not valid JSON")?;
            let mut out = String::with_capacity(s.len());
            jsonb_text(&v, &mut out);
            out.into_bytes()
        }
        T::Bytea => parse_bytea(s)?,
    })
}

/// Writes JSON the way PostgreSQL prints jsonb: object keys ordered by length, then
/// bytes; `": "` and `", "` separators.
fn jsonb_text(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match v {
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                jsonb_text(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&J::String(k.clone()).to_string());
                out.push_str(": ");
                jsonb_text(item, out);
            }
            out.push('}');
        }
        // a number as PostgreSQL's numeric prints it (`1e2` is `100`, `-0` is `0`); the
        // number is written as it arrived (serde_json's `arbitrary_precision`)
        J::Number(n) => {
            let written = n.to_string();
            out.push_str(&normalise_numeric(&written).unwrap_or(written));
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn canonical_to_binary(ty: LogicalType, c: &[u8]) -> Res<Vec<u8>> {
    use LogicalType as T;
    Ok(match ty {
        T::Numeric => numeric_to_binary(utf8(c)?)?,
        T::Jsonb => {
            let mut v = Vec::with_capacity(c.len() + 1);
            v.push(1);
            v.extend_from_slice(c);
            v
        }
        // Every other canonical form is the binary wire form.
        _ => c.to_vec(),
    })
}

fn canonical_to_text(ty: LogicalType, c: &[u8]) -> Res<Vec<u8>> {
    use LogicalType as T;
    Ok(match ty {
        T::Text | T::Varchar | T::Bpchar | T::Numeric | T::Json | T::Jsonb => c.to_vec(),
        T::Int2 => i16::from_be_bytes(fixed(c)?).to_string().into_bytes(),
        T::Int4 => i32::from_be_bytes(fixed(c)?).to_string().into_bytes(),
        T::Int8 => i64::from_be_bytes(fixed(c)?).to_string().into_bytes(),
        T::Bool => match c {
            [0] => b"f".to_vec(),
            [1] => b"t".to_vec(),
            _ => return Err("not a boolean"),
        },
        T::Date => datetime::format_date(i32::from_be_bytes(fixed(c)?)).into_bytes(),
        T::Timestamp => {
            datetime::format_timestamp(i64::from_be_bytes(fixed(c)?), None).into_bytes()
        }
        T::Timestamptz => {
            datetime::format_timestamp(i64::from_be_bytes(fixed(c)?), Some(0)).into_bytes()
        }
        T::Uuid => format_uuid(&fixed(c)?).into_bytes(),
        T::Bytea => {
            let mut s = Vec::with_capacity(2 + 2 * c.len());
            s.extend_from_slice(b"\\x");
            s.extend_from_slice(hex::encode(c).as_bytes());
            s
        }
    })
}

fn parse_int<I: std::str::FromStr>(s: &str) -> Res<I> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    t.parse().map_err(|_| {
        let digits = t.strip_prefix('-').unwrap_or(t);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            OUT_OF_RANGE
        } else {
            "not an integer"
        }
    })
}

fn parse_bool(s: &str) -> Res<bool> {
    let t = s.trim().to_ascii_lowercase();
    let prefix_of = |word: &str| !t.is_empty() && word.starts_with(&t);
    match t.as_str() {
        "1" | "on" => Ok(true),
        "0" | "of" | "off" => Ok(false),
        _ if prefix_of("true") || prefix_of("yes") => Ok(true),
        _ if prefix_of("false") || prefix_of("no") => Ok(false),
        _ => Err("not a boolean"),
    }
}

fn parse_uuid(s: &str) -> Res<[u8; 16]> {
    let t = s.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(t);
    // PostgreSQL allows a hyphen after any group of four digits, nowhere else.
    let mut hex = Vec::with_capacity(32);
    let mut hyphen_ok = false;
    for b in t.bytes() {
        if b == b'-' {
            if !hyphen_ok {
                return Err("not a UUID");
            }
            hyphen_ok = false;
        } else {
            hex.push(b);
            hyphen_ok = hex.len() % 4 == 0 && hex.len() < 32;
        }
    }
    if hex.len() != 32 {
        return Err("not a UUID");
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Ok(out)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Lowercase hex digits, by value.
pub(crate) const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` to `out` in lowercase hex (bytea's text form after `\\x`, what
/// `decode(..., 'hex')` reads). It runs for every audit record and every encrypted value
/// sent, so it writes into `out` directly (`hex::encode` goes through an iterator of
/// chars and a string of its own).
pub(crate) fn push_hex(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0xf)]));
    }
}

fn hex_digit(c: u8) -> Res<u8> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(BAD_HEX_DIGIT),
    }
}

/// bytea text input: `\x` hex (whitespace between pairs allowed) or the escape format.
pub(crate) fn parse_bytea(s: &str) -> Res<Vec<u8>> {
    let b = s.as_bytes();
    if let Some(hex) = s.strip_prefix("\\x").or_else(|| s.strip_prefix("\\X")) {
        let digits: Vec<u8> = hex.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(ODD_HEX);
        }
        return digits
            .chunks(2)
            .map(|p| Ok((hex_digit(p[0])? << 4) | hex_digit(p[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = b.get(i + 1..i + 4).ok_or("bad escape")?;
            if !oct.iter().all(|c| (b'0'..=b'7').contains(c)) || oct[0] > b'3' {
                return Err("bad escape");
            }
            out.push(oct.iter().fold(0u8, |acc, c| (acc << 3) | (c - b'0')));
            i += 4;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use LogicalType as T;

    const UTC: Context = Context {
        zone: Some(crate::protocol::zone::Zone::UTC),
        encoding: crate::protocol::encoding::ClientEncoding::Utf8,
        date_style: DateStyle {
            output: DateOutput::Iso,
            order: DateOrder::Mdy,
        },
    };

    fn canon(ty: LogicalType, s: &str) -> Vec<u8> {
        to_canonical(ty, Format::Text, s.as_bytes(), UTC).expect("valid")
    }

    fn text(ty: LogicalType, c: &[u8]) -> String {
        String::from_utf8(from_canonical(ty, Format::Text, c).expect("valid")).expect("utf8")
    }

    #[test]
    fn spellings_of_one_value_are_one_canonical_value() {
        assert_eq!(canon(T::Date, "2020-1-1"), canon(T::Date, "2020-01-01"));
        assert_eq!(canon(T::Bool, "t"), canon(T::Bool, "TRUE"));
        assert_eq!(canon(T::Bool, "yes"), canon(T::Bool, "on"));
        assert_eq!(canon(T::Int4, " +42"), canon(T::Int4, "42"));
        assert_eq!(canon(T::Numeric, "007.50"), canon(T::Numeric, "7.50"));
        assert_eq!(canon(T::Numeric, "-0.0"), canon(T::Numeric, "0.0"));
        for (written, stored) in [
            ("1.5e3", "1500"),
            ("1E-2", "0.01"),
            ("1.50e-1", "0.150"),
            ("-2.5e+1", "-25"),
            ("12.345e1", "123.45"),
            (" 7e0 ", "7"),
            (".5e1", "5"),
        ] {
            assert_eq!(canon(T::Numeric, written), stored.as_bytes(), "{written}");
        }
        assert_eq!(canon(T::Bpchar, "ab  "), canon(T::Bpchar, "ab"));
        for u in [
            "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
        ] {
            assert_eq!(
                canon(T::Uuid, u),
                canon(T::Uuid, "a0eebc999c0b4ef8bb6d6bb9bd380a11"),
                "{u}"
            );
        }
        assert_eq!(
            canon(T::Timestamptz, "2020-01-01 12:00:00+02"),
            canon(T::Timestamptz, "2020-01-01T10:00:00Z")
        );
        assert_eq!(
            canon(T::Jsonb, r#"{"b":1, "a":2}"#),
            canon(T::Jsonb, r#"{"a":2,"b":1}"#)
        );
        assert_eq!(
            canon(T::Jsonb, r#"{"bb":[1,{"x":null}],"a":"s"}"#),
            br#"{"a": "s", "bb": [1, {"x": null}]}"#.to_vec()
        );
        // jsonb numbers are numerics: printed as PostgreSQL 15 prints them
        assert_eq!(
            canon(
                T::Jsonb,
                r#"[1e2, 1E+2, -0, -0.0, 0.10, 1.0e-3, 12345678901234567890123, -1.5e1]"#
            ),
            br#"[100, 100, 0, 0.0, 0.10, 0.0010, 12345678901234567890123, -15]"#.to_vec()
        );
        assert_eq!(canon(T::Bytea, "\\x4142"), canon(T::Bytea, "AB"));
        assert_eq!(canon(T::Bytea, "\\101\\\\"), b"A\\".to_vec());
    }

    #[test]
    fn text_round_trips() {
        for (ty, s) in [
            (T::Date, "1999-12-31"),
            (T::Date, "2024-02-29"),
            (T::Date, "0001-01-01"),
            (T::Date, "infinity"),
            (T::Timestamp, "2020-03-04 05:06:07.25"),
            (T::Timestamp, "1970-01-01 00:00:00"),
            (T::Timestamptz, "1969-07-20 20:17:40+00"),
            (T::Int2, "-32768"),
            (T::Int8, "9223372036854775807"),
            (T::Numeric, "-12345678.000100"),
            (T::Numeric, "NaN"),
            (T::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            (T::Bool, "t"),
            (T::Json, r#"{"a": [1, 2]}"#),
            (T::Bytea, "\\x00ff10"),
            (T::Text, "Ünïcode ✓"),
        ] {
            assert_eq!(text(ty, &canon(ty, s)), s, "{ty:?}");
        }
    }

    #[test]
    fn binary_forms_are_postgres_wire_forms() {
        // 2000-01-02 is day 1 of PostgreSQL's epoch.
        assert_eq!(canon(T::Date, "2000-01-02"), 1i32.to_be_bytes());
        assert_eq!(
            canon(T::Timestamp, "2000-01-01 00:00:01"),
            1_000_000i64.to_be_bytes()
        );
        // numeric 12345.678: ndigits 3, weight 1, sign 0, dscale 3, digits 1 2345 6780
        let bin = from_canonical(T::Numeric, Format::Binary, b"12345.678").expect("numeric");
        let words: Vec<i16> = bin
            .chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(words, [3, 1, 0, 3, 1, 2345, 6780]);
        for s in [
            "0",
            "0.00",
            "-1",
            "10000",
            "0.0001",
            "123456789.123456789",
            "-0.5",
        ] {
            let c = canon(T::Numeric, s);
            let bin = from_canonical(T::Numeric, Format::Binary, &c).expect("to binary");
            let back = to_canonical(T::Numeric, Format::Binary, &bin, UTC).expect("from binary");
            assert_eq!(back, c, "{s}");
        }
        let jsonb = from_canonical(T::Jsonb, Format::Binary, br#"{"a":1}"#).expect("jsonb");
        assert_eq!(jsonb[0], 1);
    }

    #[test]
    fn invalid_values_are_refused_without_echoing_them() {
        for (ty, s) in [
            (T::Int2, "40000"),
            (T::Int4, "12x"),
            (T::Date, "2021-02-29"),
            (T::Date, "13/45/2020"),
            (T::Bool, "maybe"),
            (T::Numeric, "1e"),
            (T::Numeric, "1.2.3"),
            (T::Uuid, "nope"),
            (T::Uuid, "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11"),
            (T::Uuid, "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11"),
            (T::Json, "{"),
            (T::Timestamp, "2020-01-01 25:00"),
            (T::Bytea, "\\x0"),
        ] {
            let e = to_canonical(ty, Format::Text, s.as_bytes(), UTC).expect_err(s);
            assert!(!e.to_string().contains(s), "{e}");
        }
        assert!(to_canonical(T::Int4, Format::Binary, &[0, 1], UTC).is_err());
        let no_zone = Context {
            zone: None,
            ..Context::default()
        };
        assert!(to_canonical(T::Timestamptz, Format::Text, b"2020-01-01 10:00", no_zone).is_err());
        assert!(
            to_canonical(
                T::Timestamptz,
                Format::Text,
                b"2020-01-01 10:00-05",
                no_zone
            )
            .is_ok()
        );
    }

    #[test]
    fn arrays() {
        assert_eq!(
            parse_text_array(r#"{a, "b,\"c" ,NULL}"#).expect("array"),
            [Some("a".into()), Some("b,\"c".into()), None]
        );
        assert!(parse_text_array("{{1}}").is_err());
        let bin = binary_bytea_array(&[Some(b"xy".to_vec()), None]);
        let (elem, items) = parse_binary_array(&bin).expect("array");
        assert_eq!((elem, items), (17, vec![Some(&b"xy"[..]), None]));
    }

    #[test]
    fn format_codes() {
        assert_eq!(Format::nth(&[], 3), Format::Text);
        assert_eq!(Format::nth(&[1], 3), Format::Binary);
        assert_eq!(Format::nth(&[0, 1], 1), Format::Binary);
    }

    /// The SQLSTATE of a bad value is PostgreSQL's for the same mistake.
    #[test]
    fn bad_values_carry_postgres_sqlstates() {
        let code = |ty, s: &str| {
            to_canonical(ty, Format::Text, s.as_bytes(), UTC)
                .expect_err(s)
                .sqlstate()
        };
        assert_eq!(code(T::Int2, "40000"), "22003");
        assert_eq!(code(T::Int8, "-99999999999999999999"), "22003");
        assert_eq!(code(T::Int4, "4x"), "22P02");
        assert_eq!(code(T::Date, "2020-02-30"), "22008");
        assert_eq!(code(T::Date, "someday"), "22007");
        assert_eq!(code(T::Timestamptz, "2020-01-01 10:00 PST"), "22007");
        assert_eq!(code(T::Date, "0000-01-01"), "22008");
        assert_eq!(code(T::Bytea, "\\xZZ"), "22023");
        assert_eq!(code(T::Bytea, "\\x123"), "22023");
        assert_eq!(code(T::Uuid, "zz"), "22P02");
    }

    /// Text assembled at random from the pieces dates, numbers and JSON are written with:
    /// never a panic; what is accepted is printed (in every DateStyle, for dates) and
    /// reads back as the same canonical value.
    #[test]
    fn random_text_never_panics_and_what_passes_reads_back() {
        use rand::{Rng, SeedableRng};
        const PIECES: [&str; 33] = [
            "2020",
            "01",
            "5",
            "31",
            "99",
            "-",
            "/",
            ".",
            ":",
            " ",
            ",",
            "T",
            "+02",
            "Z",
            "Jan",
            "sept",
            "Sun",
            "BC",
            "AD",
            "10",
            "00",
            "1e2",
            "-0",
            "{",
            "}",
            "\"a\"",
            "[",
            "]",
            "é",
            "0044",
            "24",
            "infinity",
            " Asia/Kolkata",
        ];
        // the session's zone: what ISO prints (an offset) reads back in any zone, what the
        // other styles print reads back where the abbreviation is UTC or numeric
        let zones = [
            (Some(Zone::UTC), true),
            (Zone::from_setting("America/New_York"), false),
            (Zone::from_setting("<+05>-05"), true),
            (None, true),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261204);
        let styles = [
            "ISO, MDY",
            "SQL, DMY",
            "Postgres, MDY",
            "German",
            "SQL, MDY",
            "ISO, YMD",
        ];
        for _ in 0..20_000 {
            let n = rng.random_range(1..8);
            let mut text: String = (0..n)
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect();
            if rng.random_bool(0.7) {
                text = random_date(&mut rng, &text);
            }
            let style = DateStyle::from_setting(styles[rng.random_range(0..styles.len())]);
            let (zone, numeric) = zones[rng.random_range(0..zones.len())];
            let ctx = Context {
                date_style: style,
                zone,
                ..UTC
            };
            for ty in [
                T::Date,
                T::Timestamp,
                T::Timestamptz,
                T::Numeric,
                T::Jsonb,
                T::Int4,
            ] {
                let Ok(c) = to_canonical(ty, Format::Text, text.as_bytes(), ctx) else {
                    continue;
                };
                let printed = from_canonical(ty, Format::Text, &c).expect("prints");
                let shown = ctx
                    .value_for_client(ty, Format::Text, printed)
                    .expect("shown");
                let back = to_canonical(ty, Format::Text, &shown, ctx);
                if ty == T::Timestamptz && !numeric && style.output != DateOutput::Iso {
                    continue;
                }
                assert_eq!(
                    back.as_ref(),
                    Ok(&c),
                    "{ty:?} {text:?} shown as {:?}",
                    String::from_utf8_lossy(&shown)
                );
            }
        }
    }

    /// A date in one of the forms PostgreSQL reads, with random fields (some out of range),
    /// a time, zone or era at random, and `noise` appended at random.
    fn random_date(rng: &mut impl rand::Rng, noise: &str) -> String {
        let (y, m, d) = (
            rng.random_range(0..2100),
            rng.random_range(0..14),
            rng.random_range(0..33),
        );
        let sep = ["-", "/", "."][rng.random_range(0..3)];
        let mon = ["Jan", "February", "sept", "Dec", "mar"][rng.random_range(0..5)];
        let mut out = match rng.random_range(0..6) {
            0 => format!("{y:04}-{m:02}-{d:02}"),
            1 => format!("{m}{sep}{d}{sep}{y}"),
            2 => format!("{d:02}{sep}{m:02}{sep}{:02}", y % 100),
            3 => format!("{mon} {d}, {y}"),
            4 => format!("{d}-{mon}-{y:04}"),
            _ => format!("Sun {mon} {d:02} 10:11:12 {y}"),
        };
        if rng.random_bool(0.5) {
            let (h, mi, sec) = (
                rng.random_range(0..25),
                rng.random_range(0..61),
                rng.random_range(0..61),
            );
            let frac = rng.random_range(0..10_000_000);
            out.push_str(&format!(" {h}:{mi:02}:{sec:02}.{frac}"));
        }
        for (p, piece) in [(0.3, "+05:30"), (0.1, " UTC"), (0.1, " BC"), (0.05, noise)] {
            if rng.random_bool(p) {
                out.push_str(piece);
            }
        }
        out
    }

    #[test]
    fn hex_is_written_as_the_hex_crate_writes_it() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = String::from("x");
        push_hex(&bytes, &mut out);
        assert_eq!(out, format!("x{}", hex::encode(&bytes)));
    }
}
