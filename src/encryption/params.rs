//! Parameters of rewritten statements: the Parse that types encrypted parameters `bytea`,
//! the Bind that encrypts them, and the ParameterDescription that shows the client the
//! types it would see without phigate.

use std::borrow::Cow;

use bytes::BytesMut;

use super::Ciphers;
use crate::crypto::ColumnCipher;
use crate::policy::LogicalType;
use crate::protocol::ProtocolError;
use crate::protocol::backend::decode_parameter_description;
use crate::protocol::build;
use crate::protocol::message::Bind;
use crate::protocol::value::{self, Context, Format, Modifier};
use crate::sql::{Column, ParamUse, Plan, Refusal};

/// The Parse phigate forwards for a rewritten statement: the plan's text, with encrypted
/// parameters typed `bytea` (or `bytea[]`) and its randomized literals as hidden `bytea`
/// parameters after the client's.
pub(crate) fn parse(
    name: &str,
    plan: &Plan,
    declared: &[u32],
    ciphers: &Ciphers,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let arity = arity(plan, declared);
    let hidden = super::literals::hidden(&plan.sql).count();
    if hidden > 0 && arity + hidden > MAX_PARAMS {
        return Err(Refusal {
            code: "54000",
            message: format!(
                "the statement takes {arity} parameters and {hidden} encrypted literals, more than the {MAX_PARAMS} parameters phigate can send for it"
            ),
            hint: "send the encrypted values as parameters rather than literals".into(),
        });
    }
    let n = declared.len().max(plan.params.len());
    let types: Vec<u32> = (0..n)
        .map(|i| match plan.params.get(i).and_then(Option::as_ref) {
            Some(ParamUse::Scalar(_)) => 17,
            Some(ParamUse::Array(_)) => 1001,
            None => declared.get(i).copied().unwrap_or(0),
        })
        .chain((n..arity).map(|_| 0))
        .chain(std::iter::repeat_n(17, hidden))
        .collect();
    let text = super::literals::render_prepared(&plan.sql, ciphers, arity);
    build::parse(name, &text, &types, out);
    Ok(())
}

/// The most parameters a Bind can carry.
const MAX_PARAMS: usize = u16::MAX as usize;

/// The number of parameters the client's statement takes: PostgreSQL counts the types it
/// declared and the parameters the text names.
fn arity(plan: &Plan, declared: &[u32]) -> usize {
    declared.len().max(plan.arity)
}

/// The type of encrypted parameter `i` as the client sees it: the one it declared, else
/// the one a cast in the statement named (PostgreSQL would have inferred it), else the
/// column's logical type. `None` for a parameter phigate does not encrypt.
fn param_oid(plan: &Plan, declared: &[u32], i: usize) -> Option<u32> {
    let use_ = plan.params.get(i)?.as_ref()?;
    match declared.get(i).copied().unwrap_or(0) {
        0 => {
            let ty = plan
                .param_casts
                .get(i)
                .and_then(Option::as_ref)
                .map_or(use_.column().logical_type(), |c| c.ty);
            Some(match use_ {
                ParamUse::Scalar(_) => value::type_oid(ty),
                ParamUse::Array(_) => value::array_type_oid(ty),
            })
        }
        d => Some(d),
    }
}

/// Bind with the plan's parameters encrypted (sent in binary format).
pub(crate) fn bind(
    msg: &Bind<'_>,
    (plan, declared): (&Plan, &[u32]),
    ciphers: &Ciphers,
    ctx: Context,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let mut values: Vec<Option<Cow<'_, [u8]>>> = Vec::with_capacity(msg.params.len());
    let mut formats: Vec<i16> = Vec::with_capacity(msg.params.len());
    for (i, v) in msg.params.iter().enumerate() {
        let format = Format::from_code(msg.param_formats.nth(i));
        match (plan.params.get(i).and_then(Option::as_ref), v) {
            (Some(use_), Some(v)) => {
                let declared = match use_ {
                    ParamUse::Scalar(_) => param_oid(plan, declared, i).unwrap_or(0),
                    ParamUse::Array(_) => 0,
                };
                let cipher = ciphers.of(use_.column());
                let modifiers = (plan.param_casts.get(i).and_then(Option::as_ref))
                    .map_or(&[][..], |c| &c.modifiers[..]);
                let sent = (format, declared, modifiers);
                let sealed = encrypt_param(use_, &cipher, sent, v, ctx, i + 1)?;
                values.push(Some(Cow::Owned(sealed)));
                formats.push(1);
            }
            (Some(_), None) => {
                values.push(None);
                formats.push(1);
            }
            (None, v) => {
                values.push(v.map(Cow::Borrowed));
                formats.push(if format == Format::Binary { 1 } else { 0 });
            }
        }
    }
    let mut hidden = super::literals::hidden(&plan.sql).peekable();
    if hidden.peek().is_some() && msg.params.len() != arity(plan, declared) {
        return Err(Refusal {
            code: "08P01",
            message: format!(
                "bind message supplies {} parameters, but prepared statement \"{}\" requires {}",
                msg.params.len(),
                msg.statement,
                arity(plan, declared)
            ),
            hint: "bind one value for each parameter of the statement".into(),
        });
    }
    for l in hidden {
        values.push(Some(Cow::Owned(ciphers.of(&l.column).encrypt(&l.value))));
        formats.push(1);
    }
    build::bind(
        (msg.portal, msg.statement),
        &formats,
        &values,
        msg.result_formats.iter(),
        out,
    );
    Ok(())
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

/// A parameter that is not a valid value of its column's type, with PostgreSQL's SQLSTATE
/// for the mistake.
fn value_refusal(col: &Column, n: usize, e: &value::ValueError) -> Refusal {
    Refusal {
        code: e.sqlstate(),
        ..param_refusal(col, n, &e.to_string())
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
    let v = &ctx.value_from_client(ty, format, v).map_err(|_| Refusal {
        code: "22021",
        message: format!(
            "parameter ${n} for column {} of table {} is not valid in the client encoding",
            col.name, col.table
        ),
        hint: "send text in the session's client_encoding".into(),
    })?[..];
    // another type whose values mean the same (an integer of another width, timestamptz
    // for a timestamp column in a session whose zone phigate resolves): read as that type,
    // then as the column's, as PostgreSQL converts it
    let source = value::logical_of_oid(declared).filter(|s| *s != ty);
    if let Some(source) = source.filter(|s| s.converts_to_at(ty, ctx.zone.is_some()))
        && (format == Format::Binary || source.is_temporal())
    {
        return value::to_canonical_from(source, ty, format, v, ctx)
            .map_err(|e| value_refusal(col, n, &e));
    }
    // a zoned value for an unzoned column in a session whose zone phigate cannot resolve:
    // PostgreSQL would shift it by that zone
    let shifted = source == Some(LogicalType::Timestamptz) && ty == LogicalType::Timestamp;
    let format = match format {
        _ if shifted => return Err(zone_refusal(col, n)),
        Format::Binary if declared == 0 || declared == value::type_oid(ty) => Format::Binary,
        Format::Binary if value::is_text_oid(declared) => Format::Text,
        Format::Binary => {
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
        Format::Text => Format::Text,
    };
    value::to_canonical(ty, format, v, ctx).map_err(|e| value_refusal(col, n, &e))
}

fn zone_refusal(col: &Column, n: usize) -> Refusal {
    Refusal {
        code: "42804",
        message: format!(
            "parameter ${n} is a timestamptz, and column {} of table {} a timestamp: PostgreSQL would convert it in the session's time zone, which phigate could not resolve",
            col.name, col.table
        ),
        hint: "set TimeZone to an IANA zone name (Europe/Paris) or UTC, or send the parameter as a timestamp".into(),
    }
}

fn encrypt_param(
    use_: &ParamUse,
    cipher: &ColumnCipher,
    (format, declared, modifiers): (Format, u32, &[Modifier]),
    v: &[u8],
    ctx: Context,
    n: usize,
) -> Result<Vec<u8>, Refusal> {
    match use_ {
        ParamUse::Scalar(col) => {
            let mut plain = canonical(col, format, declared, v, ctx, n)?;
            // a cast's length or precision (`$1::varchar(100)`), as PostgreSQL applies it
            value::apply_all(modifiers, col.logical_type(), &mut plain).map_err(|e| {
                let mut refusal = Refusal::modifier(col, col.logical_type().name(), e);
                refusal.message = format!("parameter ${n}: {}", refusal.message);
                refusal
            })?;
            Ok(cipher.encrypt(&plain))
        }
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
                    Some(e) => Some(cipher.encrypt(&canonical(col, f, elem, &e, ctx, n)?)),
                    None => None,
                });
            }
            Ok(value::binary_bytea_array(&sealed))
        }
    }
}

/// Rewrites a ParameterDescription: encrypted parameters show the type the client declared,
/// or would see without phigate ([`param_oid`]); the hidden parameters are left out.
pub(crate) fn parameter_description(
    body: &[u8],
    plan: &Plan,
    declared: &[u32],
    out: &mut BytesMut,
) -> Result<(), ProtocolError> {
    let mut oids = decode_parameter_description(body)?;
    // the hidden parameters are phigate's own
    let hidden = super::literals::hidden(&plan.sql).count();
    oids.truncate(oids.len().saturating_sub(hidden));
    let oids: Vec<u32> = oids
        .into_iter()
        .enumerate()
        .map(|(i, oid)| param_oid(plan, declared, i).unwrap_or(oid))
        .collect();
    build::parameter_description(&oids, out);
    Ok(())
}
