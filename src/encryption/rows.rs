//! Result rows of protected columns: the RowDescription the client sees (logical types,
//! masks as text) and each DataRow decrypted, masked or left as ciphertext, as the
//! reader's role may read it.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;

use super::{Ciphers, RowError, decrypt, unreadable};
use crate::crypto::ColumnCipher;
use crate::policy::{LogicalType, MaskKind, ReadOutcome};
use crate::protocol::ProtocolError;
use crate::protocol::backend::{decode_data_row, decode_row_description};
use crate::protocol::build;
use crate::protocol::value::{self, Context, DateStyle, Format};
use crate::sql::{Catalog, Column, Subject};

/// What happens to one result column.
#[derive(Debug, Clone)]
pub(crate) struct FieldOut {
    column: Arc<Column>,
    cipher: Arc<ColumnCipher>,
    outcome: ReadOutcome,
}

/// Per result column: `Some` for a protected column. Empty when nothing is protected.
pub(crate) type Shape = Arc<[Option<FieldOut>]>;

/// Reads a RowDescription: which fields come from protected columns (by the origin
/// PostgreSQL reports, else by the statement's analysis, `fallback`), and the description
/// the client sees (logical types). Also returns each field's format code.
pub(crate) fn row_description(
    body: &[u8],
    (catalog, ciphers): (&Catalog, &Ciphers),
    who: &Subject,
    fallback: Option<&[Option<Arc<Column>>]>,
    out: &mut BytesMut,
) -> Result<(Shape, Vec<i16>), ProtocolError> {
    let mut fields = decode_row_description(body)?;
    let mut shape = Vec::with_capacity(fields.len());
    for (i, d) in fields.iter_mut().enumerate() {
        let analysed = || {
            // Only a bytea field can carry an envelope.
            let c = fallback?.get(i)?.as_ref()?;
            (d.table_oid == 0 && d.type_oid == BYTEA_OID).then_some(c)
        };
        let origin = catalog.by_origin(d.table_oid, d.column);
        let field = origin.or_else(analysed).map(|c| FieldOut {
            column: c.clone(),
            cipher: ciphers.of(c),
            outcome: who.outcome(c),
        });
        if let Some(f) = &field {
            describe(f, d);
        }
        shape.push(field);
    }
    build::row_description(&fields, out);
    let formats = fields.iter().map(|d| d.format).collect();
    let shape: Shape = if shape.iter().all(Option::is_none) {
        Arc::from(Vec::new())
    } else {
        Arc::from(shape)
    };
    Ok((shape, formats))
}

/// The type a protected field shows: a masked value is text whatever the column's type
/// ("1912", "***-**-6789"); a decrypted one has its logical type; ciphertext stays bytea.
fn describe(f: &FieldOut, d: &mut crate::protocol::backend::FieldDescription<'_>) {
    match f.outcome {
        ReadOutcome::Ciphertext => {}
        ReadOutcome::Mask(_) => {
            d.type_oid = TEXT_OID;
            d.type_len = -1;
            d.type_mod = -1;
        }
        _ => {
            let ty = f.column.logical_type();
            d.type_oid = value::type_oid(ty);
            d.type_len = value::type_len(ty);
            d.type_mod = -1;
        }
    }
}

/// Decrypts a DataRow's protected values into the format each column was requested in.
pub(crate) fn data_row(
    body: &[u8],
    shape: &[Option<FieldOut>],
    formats: &[i16],
    ctx: Context,
    out: &mut BytesMut,
) -> Result<(), RowError> {
    let stored = decode_data_row(body)?;
    let mut row = Vec::with_capacity(stored.len());
    for (i, v) in stored.into_iter().enumerate() {
        let field = shape.get(i).and_then(Option::as_ref);
        row.push(match (field, v) {
            (Some(f), Some(stored)) => {
                let format = Format::nth(formats, i);
                match reveal(f, format, stored, ctx)? {
                    Some(p) => Some(Cow::Owned(for_client(f, format, p, ctx)?)),
                    None => None,
                }
            }
            (_, v) => v.map(Cow::Borrowed),
        });
    }
    build::data_row(&row, out);
    Ok(())
}

/// The OID of `bytea`, the type ciphertext is stored as.
const BYTEA_OID: u32 = 17;

/// A revealed value in the client encoding (masks are text; ciphertext is bytea).
fn for_client(f: &FieldOut, format: Format, v: Vec<u8>, ctx: Context) -> Result<Vec<u8>, RowError> {
    let ty = match f.outcome {
        ReadOutcome::Mask(_) => crate::policy::LogicalType::Text,
        ReadOutcome::Plaintext => f.column.logical_type(),
        _ => return Ok(v),
    };
    ctx.value_for_client(ty, format, v).map_err(|_| {
        unreadable(
            &f.column,
            "a character has no equivalent in the client encoding".into(),
        )
    })
}

fn reveal(
    f: &FieldOut,
    format: Format,
    stored: &[u8],
    ctx: Context,
) -> Result<Option<Vec<u8>>, RowError> {
    let masked = match f.outcome {
        ReadOutcome::Ciphertext => return Ok(Some(stored.to_vec())),
        ReadOutcome::Plaintext => None,
        ReadOutcome::Mask(kind) => Some(kind),
        // Refused by the analysis; a field that still arrives reads as NULL.
        ReadOutcome::Null | ReadOutcome::Deny => return Ok(None),
    };
    let envelope = match format {
        Format::Binary => stored.to_vec(),
        Format::Text => {
            let text = std::str::from_utf8(stored).map_err(|_| {
                unreadable(&f.column, "the server sent a bytea that is not text".into())
            })?;
            value::parse_bytea(text).map_err(|e| unreadable(&f.column, e.into()))?
        }
    };
    let Some(kind) = masked else {
        return open(&f.cipher, &f.column, &envelope, format).map(Some);
    };
    if kind == MaskKind::Hash {
        let plain = decrypt(&f.cipher, &f.column, &envelope)?;
        return Ok(Some(hex::encode(f.cipher.mask_hash(&plain)).into_bytes()));
    }
    let text = open(&f.cipher, &f.column, &envelope, Format::Text)?;
    let text = on_session_clock(f.column.logical_type(), text, ctx);
    // Text and binary forms of `text` are the same UTF-8 bytes.
    Ok(Some(
        mask(kind, &String::from_utf8_lossy(&text)).into_bytes(),
    ))
}

/// The OID of `text`, the type masked values are shown as.
const TEXT_OID: u32 = 25;

/// A masked value from the text form of a plaintext (`Hash` is keyed, see
/// [`crate::crypto::ColumnCipher::mask_hash`]).
pub(crate) fn mask(kind: MaskKind, text: &str) -> String {
    match kind {
        // Every letter and digit but the last four hidden; separators stay.
        MaskKind::Last4 => {
            let total = text.chars().filter(|c| c.is_alphanumeric()).count();
            let mut seen = 0;
            text.chars()
                .map(|c| {
                    if !c.is_alphanumeric() {
                        return c;
                    }
                    seen += 1;
                    if seen + 4 > total { c } else { '*' }
                })
                .collect()
        }
        // The year of a date or timestamp's text form (`1912-06-23` -> `1912`).
        MaskKind::Year => {
            let year: String = text.chars().take_while(char::is_ascii_digit).collect();
            if text.ends_with(" BC") {
                format!("{year} BC")
            } else {
                year
            }
        }
        MaskKind::Redact | MaskKind::Hash => "***".to_owned(),
    }
}

/// A timestamptz's text (printed in UTC) in ISO on the session's clock, so that its masked
/// year is the year the client would read; any other value as it is.
fn on_session_clock(ty: LogicalType, text: Vec<u8>, ctx: Context) -> Vec<u8> {
    if ty != LogicalType::Timestamptz {
        return text;
    }
    let iso = Context {
        date_style: DateStyle::default(),
        ..ctx
    };
    iso.value_for_client(LogicalType::Timestamptz, Format::Text, text.clone())
        .unwrap_or(text)
}

/// Decrypts an envelope of `col` into the value in `format`.
pub(super) fn open(
    cipher: &ColumnCipher,
    col: &Column,
    envelope: &[u8],
    format: Format,
) -> Result<Vec<u8>, RowError> {
    let plain = decrypt(cipher, col, envelope)?;
    value::from_canonical(col.logical_type(), format, &plain)
        .map_err(|e| unreadable(col, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_timestamptz_shows_its_year_on_the_session_clock() {
        let new_york = Context {
            zone: crate::protocol::zone::Zone::from_setting("America/New_York"),
            date_style: DateStyle::from_setting("SQL, DMY"),
            ..Context::default()
        };
        let utc = b"2021-01-01 03:00:00+00".to_vec();
        let local = on_session_clock(LogicalType::Timestamptz, utc.clone(), new_york);
        assert_eq!(
            mask(MaskKind::Year, &String::from_utf8_lossy(&local)),
            "2020"
        );
        assert_eq!(
            on_session_clock(LogicalType::Timestamp, utc.clone(), new_york),
            utc
        );
    }
}
