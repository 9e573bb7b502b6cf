//! The message rewrites behind transparent encryption, as pure functions: Parse and Bind on
//! the way up; RowDescription, ParameterDescription and DataRow on the way down; and the
//! messages that make PostgreSQL itself raise phigate's refusals.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use crate::crypto::CryptoError;
use crate::policy::{MaskKind, ReadOutcome};
use crate::protocol::ProtocolError;
use crate::protocol::build;
use crate::protocol::message::Bind;
use crate::protocol::reader::Reader;
use crate::protocol::value::{self, Context, Format};
use crate::sql::{Catalog, Column, ParamUse, Plan, Refusal, Subject};

/// What happens to one result column.
#[derive(Debug, Clone)]
pub(super) struct FieldOut {
    column: Arc<Column>,
    outcome: ReadOutcome,
}

/// Per result column: `Some` for a protected column. Empty when nothing is protected.
pub(super) type Shape = Arc<[Option<FieldOut>]>;

/// A value that does not decrypt: the session ends (the data is corrupt or was tampered
/// with, and the result can no longer be delivered whole).
#[derive(Debug, Error)]
pub(super) enum RowError {
    /// the server's message is malformed
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// a stored value does not decrypt or decode
    #[error("a value of column {column} of table {table} cannot be read: {problem}")]
    Unreadable {
        /// column
        column: String,
        /// table
        table: String,
        /// what is wrong (never the value)
        problem: String,
    },
}

/// The SQL PostgreSQL runs in place of a refused statement: it raises an error phigate
/// recognises (and replaces with its own), so the transaction aborts as PostgreSQL would
/// abort it and responses keep their order.
pub(super) const REFUSAL_SQL: &str = "DO $phigate$BEGIN RAISE EXCEPTION USING ERRCODE = 'P0001', \
     MESSAGE = 'phigate refusal'; END$phigate$";

/// The message PostgreSQL raises for [`REFUSAL_SQL`].
pub(super) const REFUSAL_MESSAGE: &str = "phigate refusal";

/// The prepared statement name the extended-protocol refusal uses (closed at once).
const REFUSAL_STATEMENT: &str = "\u{1}phigate_refusal";

/// Parse, Bind, Close, Execute of [`REFUSAL_SQL`]: answered by ParseComplete, BindComplete,
/// CloseComplete, then the error.
pub(super) fn refusal_extended(out: &mut BytesMut) {
    build::parse(REFUSAL_STATEMENT, REFUSAL_SQL, &[], out);
    build::bind_empty("", REFUSAL_STATEMENT, out);
    build::close(b'S', REFUSAL_STATEMENT, out);
    build::execute("", 0, out);
}

/// The Parse phigate forwards for a rewritten statement: the plan's text, with encrypted
/// parameters typed `bytea` (or `bytea[]`).
pub(super) fn parse(name: &str, plan: &Plan, declared: &[u32], out: &mut BytesMut) {
    let n = declared.len().max(plan.params.len());
    let types: Vec<u32> = (0..n)
        .map(|i| match plan.params.get(i).and_then(Option::as_ref) {
            Some(ParamUse::Scalar(_)) => 17,
            Some(ParamUse::Array(_)) => 1001,
            None => declared.get(i).copied().unwrap_or(0),
        })
        .collect();
    build::parse(name, &plan.sql, &types, out);
}

/// The type of encrypted parameter `i` as the client sees it: the one it declared, else
/// the one a cast in the statement named (PostgreSQL would have inferred it), else the
/// column's logical type. `None` for a parameter phigate does not encrypt.
pub(super) fn param_oid(plan: &Plan, declared: &[u32], i: usize) -> Option<u32> {
    let use_ = plan.params.get(i)?.as_ref()?;
    match declared.get(i).copied().unwrap_or(0) {
        0 => {
            let ty = plan
                .param_casts
                .get(i)
                .copied()
                .flatten()
                .unwrap_or(use_.column().logical_type());
            Some(match use_ {
                ParamUse::Scalar(_) => value::type_oid(ty),
                ParamUse::Array(_) => value::array_type_oid(ty),
            })
        }
        d => Some(d),
    }
}

/// Bind with the plan's parameters encrypted (sent in binary format).
pub(super) fn bind(
    msg: &Bind<'_>,
    plan: &Plan,
    declared: &[u32],
    ctx: Context,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(msg.params.len());
    let mut formats: Vec<i16> = Vec::with_capacity(msg.params.len());
    for (i, v) in msg.params.iter().enumerate() {
        let format = Format::from_code(msg.param_formats.nth(i));
        match (plan.params.get(i).and_then(Option::as_ref), v) {
            (Some(use_), Some(v)) => {
                let declared = match use_ {
                    ParamUse::Scalar(_) => param_oid(plan, declared, i).unwrap_or(0),
                    ParamUse::Array(_) => 0,
                };
                values.push(Some(encrypt_param(use_, format, declared, v, ctx, i + 1)?));
                formats.push(1);
            }
            (Some(_), None) => {
                values.push(None);
                formats.push(1);
            }
            (None, v) => {
                values.push(v.map(<[u8]>::to_vec));
                formats.push(if format == Format::Binary { 1 } else { 0 });
            }
        }
    }
    build::message(out, b'B', |b| {
        build::put_cstr(b, msg.portal);
        build::put_cstr(b, msg.statement);
        put_count(b, formats.len());
        for f in &formats {
            b.put_i16(*f);
        }
        put_count(b, values.len());
        for v in &values {
            match v {
                Some(v) => {
                    b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        put_count(b, msg.result_formats.len());
        for f in msg.result_formats.iter() {
            b.put_i16(f);
        }
    });
    Ok(())
}

fn put_count(b: &mut BytesMut, n: usize) {
    b.put_i16(i16::try_from(n).unwrap_or(i16::MAX));
}

fn param_refusal(col: &Column, n: usize, problem: &str) -> Refusal {
    Refusal {
        code: "22P02",
        message: format!(
            "parameter ${n} for column {} of table {}: {problem}",
            col.name, col.table
        ),
        hint: format!(
            "send a {} value in text or binary format",
            col.logical_type().name()
        ),
    }
}

/// One element's canonical plaintext, however the client sent it.
fn canonical(
    col: &Column,
    format: Format,
    declared: u32,
    v: &[u8],
    ctx: Context,
    n: usize,
) -> Result<Vec<u8>, Refusal> {
    let ty = col.logical_type();
    let v = &ctx.from_client(ty, format, v).map_err(|_| Refusal {
        code: "22021",
        message: format!(
            "parameter ${n} for column {} of table {} is not valid in the client encoding",
            col.name, col.table
        ),
        hint: "send text in the session's client_encoding".into(),
    })?[..];
    let format = match format {
        Format::Binary if declared == 0 || declared == value::type_oid(ty) => Format::Binary,
        Format::Binary if value::is_text_oid(declared) => Format::Text,
        Format::Binary => match value::logical_of_oid(declared).filter(|s| s.converts_to(ty)) {
            // another type whose values mean the same (an integer of another width):
            // read it as that type, then as the column's through its text
            Some(source) => {
                let text = value::to_canonical(source, Format::Binary, v, ctx)
                    .and_then(|c| value::from_canonical(source, Format::Text, &c))
                    .map_err(|e| param_refusal(col, n, &e.to_string()))?;
                return value::to_canonical(ty, Format::Text, &text, ctx)
                    .map_err(|e| param_refusal(col, n, &e.to_string()));
            }
            None => {
                return Err(Refusal {
                    code: "42804",
                    message: format!(
                        "parameter ${n} was declared as type OID {declared} but column {} of table {} is {}",
                        col.name,
                        col.table,
                        ty.name()
                    ),
                    hint: format!("declare the parameter as {} or send it as text", ty.name()),
                });
            }
        },
        Format::Text => Format::Text,
    };
    value::to_canonical(ty, format, v, ctx).map_err(|e| param_refusal(col, n, &e.to_string()))
}

fn encrypt_param(
    use_: &ParamUse,
    format: Format,
    declared: u32,
    v: &[u8],
    ctx: Context,
    n: usize,
) -> Result<Vec<u8>, Refusal> {
    match use_ {
        ParamUse::Scalar(col) => Ok(col
            .cipher
            .encrypt(&canonical(col, format, declared, v, ctx, n)?)),
        ParamUse::Array(col) => {
            let elements: Vec<(Option<Vec<u8>>, Format, u32)> = match format {
                Format::Text => {
                    let text = ctx
                        .encoding
                        .decode(v)
                        .map_err(|_| param_refusal(col, n, "not valid in the client encoding"))?;
                    value::parse_text_array(&text)
                        .map_err(|e| param_refusal(col, n, e))?
                        .into_iter()
                        .map(|e| (e.map(String::into_bytes), Format::Text, 0))
                        .collect()
                }
                Format::Binary => {
                    let (elem, items) =
                        value::parse_binary_array(v).map_err(|e| param_refusal(col, n, e))?;
                    items
                        .into_iter()
                        .map(|e| (e.map(<[u8]>::to_vec), Format::Binary, elem))
                        .collect()
                }
            };
            let mut sealed = Vec::with_capacity(elements.len());
            for (e, f, elem) in elements {
                // the text form was converted whole above
                let ctx = match f {
                    Format::Text => Context {
                        encoding: crate::protocol::encoding::ClientEncoding::Utf8,
                        ..ctx
                    },
                    Format::Binary => ctx,
                };
                sealed.push(match e {
                    Some(e) => Some(col.cipher.encrypt(&canonical(col, f, elem, &e, ctx, n)?)),
                    None => None,
                });
            }
            Ok(value::binary_bytea_array(&sealed))
        }
    }
}

/// Rewrites a ParameterDescription: encrypted parameters show the type the client declared,
/// or would see without phigate ([`param_oid`]).
pub(super) fn parameter_description(
    body: &[u8],
    plan: &Plan,
    declared: &[u32],
    out: &mut BytesMut,
) -> Result<(), ProtocolError> {
    let mut r = Reader::new(body, "ParameterDescription");
    let n = r.count16()?;
    let mut oids = Vec::with_capacity(n);
    for i in 0..n {
        let oid = r.i32()? as u32;
        oids.push(param_oid(plan, declared, i).unwrap_or(oid));
    }
    r.finish()?;
    build::message(out, b't', |b| {
        put_count(b, oids.len());
        for oid in oids {
            b.put_u32(oid);
        }
    });
    Ok(())
}

/// Reads a RowDescription: which fields come from protected columns (by the origin
/// PostgreSQL reports, else by the statement's analysis, `fallback`), and the description
/// the client sees (logical types). Also returns each field's format code.
pub(super) fn row_description(
    body: &[u8],
    catalog: &Catalog,
    who: &Subject,
    fallback: Option<&[Option<Arc<Column>>]>,
    out: &mut BytesMut,
) -> Result<(Shape, Vec<i16>), ProtocolError> {
    let mut r = Reader::new(body, "RowDescription");
    let n = r.count16()?;
    let mut fields = Vec::with_capacity(n);
    let mut formats = Vec::with_capacity(n);
    let mut rewritten = BytesMut::with_capacity(body.len());
    put_count(&mut rewritten, n);
    for i in 0..n {
        let name = r.cbytes()?;
        let table = r.i32()? as u32;
        let attnum = r.i16()?;
        let mut type_oid = r.i32()? as u32;
        let mut type_len = r.i16()?;
        let mut type_mod = r.i32()?;
        let format = r.i16()?;
        let origin = catalog.by_origin(table, attnum);
        let analysed = || {
            // Only a bytea field can carry an envelope.
            let c = fallback?.get(i)?.as_ref()?;
            (table == 0 && type_oid == 17).then_some(c)
        };
        let field = origin.or_else(analysed).map(|c| FieldOut {
            column: c.clone(),
            outcome: who.outcome(c),
        });
        match field.as_ref().map(|f| f.outcome) {
            None | Some(ReadOutcome::Ciphertext) => {}
            // A masked value is text whatever the column's type ("1912", "***-**-6789").
            Some(ReadOutcome::Mask(_)) => {
                type_oid = TEXT_OID;
                type_len = -1;
                type_mod = -1;
            }
            Some(_) => {
                let ty = field.as_ref().map(|f| f.column.logical_type());
                if let Some(ty) = ty {
                    type_oid = value::type_oid(ty);
                    type_len = value::type_len(ty);
                }
                type_mod = -1;
            }
        }
        rewritten.put_slice(name);
        rewritten.put_u8(0);
        rewritten.put_u32(table);
        rewritten.put_i16(attnum);
        rewritten.put_u32(type_oid);
        rewritten.put_i16(type_len);
        rewritten.put_i32(type_mod);
        rewritten.put_i16(format);
        fields.push(field);
        formats.push(format);
    }
    r.finish()?;
    build::message(out, b'T', |b| b.put_slice(&rewritten));
    let shape: Shape = if fields.iter().all(Option::is_none) {
        Arc::from(Vec::new())
    } else {
        Arc::from(fields)
    };
    Ok((shape, formats))
}

/// Decrypts a DataRow's protected values into the format each column was requested in.
pub(super) fn data_row(
    body: &[u8],
    shape: &[Option<FieldOut>],
    formats: &[i16],
    ctx: Context,
    out: &mut BytesMut,
) -> Result<(), RowError> {
    let mut r = Reader::new(body, "DataRow");
    let n = r.count16()?;
    let mut row = BytesMut::with_capacity(body.len());
    put_count(&mut row, n);
    for i in 0..n {
        let v = r.value()?;
        let field = shape.get(i).and_then(Option::as_ref);
        let produced = match (field, v) {
            (Some(f), Some(stored)) => {
                let format = Format::nth(formats, i);
                match reveal(f, format, stored)? {
                    Some(p) => Some(for_client(f, format, p, ctx)?),
                    None => None,
                }
            }
            (_, v) => v.map(<[u8]>::to_vec),
        };
        match produced {
            Some(p) => {
                row.put_i32(i32::try_from(p.len()).unwrap_or(i32::MAX));
                row.put_slice(&p);
            }
            None => row.put_i32(-1),
        }
    }
    r.finish()?;
    build::message(out, b'D', |b| b.put_slice(&row));
    Ok(())
}

/// A revealed value in the client encoding (masks are text; ciphertext is bytea).
fn for_client(f: &FieldOut, format: Format, v: Vec<u8>, ctx: Context) -> Result<Vec<u8>, RowError> {
    let ty = match f.outcome {
        ReadOutcome::Mask(_) => crate::policy::LogicalType::Text,
        ReadOutcome::Plaintext => f.column.logical_type(),
        _ => return Ok(v),
    };
    ctx.to_client(ty, format, v).map_err(|_| {
        unreadable(
            &f.column,
            "a character has no equivalent in the client encoding".into(),
        )
    })
}

fn reveal(f: &FieldOut, format: Format, stored: &[u8]) -> Result<Option<Vec<u8>>, RowError> {
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
        return open(&f.column, &envelope, format).map(Some);
    };
    if kind == MaskKind::Hash {
        let plain = decrypt(&f.column, &envelope)?;
        return Ok(Some(
            hex::encode(f.column.cipher.mask_hash(&plain)).into_bytes(),
        ));
    }
    let text = open(&f.column, &envelope, Format::Text)?;
    // Text and binary forms of `text` are the same UTF-8 bytes.
    Ok(Some(
        mask(kind, &String::from_utf8_lossy(&text)).into_bytes(),
    ))
}

/// The OID of `text`, the type masked values are shown as.
const TEXT_OID: u32 = 25;

/// A masked value from the text form of a plaintext (`Hash` is keyed, see
/// [`crate::crypto::ColumnCipher::mask_hash`]).
pub(super) fn mask(kind: MaskKind, text: &str) -> String {
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

fn unreadable(col: &Column, problem: String) -> RowError {
    RowError::Unreadable {
        column: col.name.clone(),
        table: col.table.to_string(),
        problem,
    }
}

/// Decrypts an envelope of `col` into its canonical plaintext.
fn decrypt(col: &Column, envelope: &[u8]) -> Result<Vec<u8>, RowError> {
    col.cipher
        .decrypt(envelope)
        .map_err(|e: CryptoError| unreadable(col, e.to_string()))
}

/// Decrypts an envelope of `col` into the value in `format`.
pub(super) fn open(col: &Column, envelope: &[u8], format: Format) -> Result<Vec<u8>, RowError> {
    let plain = decrypt(col, envelope)?;
    value::from_canonical(col.logical_type(), format, &plain)
        .map_err(|e| unreadable(col, e.to_string()))
}
