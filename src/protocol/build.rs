//! Encoders for the messages phigate itself sends, to clients and to the upstream server.
//! Each appends one complete message to `out`.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use super::backend::FieldDescription;
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};

/// Severity of an error phigate reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// the statement fails, the session goes on
    Error,
    /// the session ends
    Fatal,
}

/// An error phigate itself reports to a client: SQLSTATE, message and hint.
/// It never carries a value from a statement or a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// ERROR or FATAL
    pub severity: Severity,
    /// five-character SQLSTATE
    pub code: &'static str,
    /// the primary message
    pub message: String,
    /// what to do about it
    pub hint: Option<String>,
}

impl PgError {
    /// An ERROR.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// A FATAL error: the connection is closed after it.
    pub(crate) fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Fatal,
            ..Self::error(code, message)
        }
    }

    /// Adds a hint.
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Appends the ErrorResponse.
    pub fn encode(&self, out: &mut BytesMut) {
        let sev = match self.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let mut fields = vec![
            (b'S', sev.to_owned()),
            (b'V', sev.to_owned()),
            (b'C', self.code.to_owned()),
            (b'M', self.message.clone()),
        ];
        if let Some(h) = &self.hint {
            fields.push((b'H', h.clone()));
        }
        put(&ErrorResponse::new(fields), out);
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

fn put<M: Message>(m: &M, out: &mut BytesMut) {
    // Our own messages are small and well-formed; pgwire only fails on oversized ones.
    if let Err(e) = m.encode(out) {
        tracing::error!(error = %e, "could not encode a message phigate built");
    }
}

/// AuthenticationOk.
pub(crate) fn authentication_ok(out: &mut BytesMut) {
    put(&Authentication::Ok, out);
}

/// AuthenticationSASL offering `mechanisms`.
pub(crate) fn authentication_sasl(mechanisms: &[&str], out: &mut BytesMut) {
    let offered = mechanisms.iter().map(|m| (*m).to_owned()).collect();
    put(&Authentication::SASL(offered), out);
}

/// AuthenticationSASLContinue.
pub(crate) fn authentication_sasl_continue(data: &[u8], out: &mut BytesMut) {
    put(&Authentication::SASLContinue(data.to_vec().into()), out);
}

/// AuthenticationSASLFinal.
pub(crate) fn authentication_sasl_final(data: &[u8], out: &mut BytesMut) {
    put(&Authentication::SASLFinal(data.to_vec().into()), out);
}

/// ParameterStatus.
pub(crate) fn parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    put(
        &ParameterStatus::new(name.to_owned(), value.to_owned()),
        out,
    );
}

/// BackendKeyData with a 4-byte secret (protocol 3.0).
pub(crate) fn backend_key_data(pid: i32, secret: i32, out: &mut BytesMut) {
    put(&BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

/// ReadyForQuery with the given transaction status byte.
pub(crate) fn ready_for_query(status: u8, out: &mut BytesMut) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    put(&ReadyForQuery::new(status), out);
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_` options.
pub(crate) fn negotiate_protocol_version(unsupported: Vec<String>, out: &mut BytesMut) {
    put(&NegotiateProtocolVersion::new(0, unsupported), out);
}

/// A StartupMessage (protocol 3.0) for the upstream server.
pub fn startup(params: &[(&str, &str)], out: &mut BytesMut) {
    let len: usize = 8
        + params
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
        + 1;
    out.put_i32(len as i32);
    out.put_i32(196_608);
    for (k, v) in params {
        put_cstr(out, k);
        put_cstr(out, v);
    }
    out.put_u8(0);
}

/// SSLRequest.
pub(crate) fn ssl_request(out: &mut BytesMut) {
    out.put_i32(8);
    out.put_i32(80_877_103);
}

/// CancelRequest for an upstream backend.
pub(crate) fn cancel_request(pid: i32, secret: &[u8], out: &mut BytesMut) {
    out.put_i32(12 + secret.len() as i32);
    out.put_i32(80_877_102);
    out.put_i32(pid);
    out.put_slice(secret);
}

/// A password message ('p') carrying `payload` as is.
pub(crate) fn password_message(payload: &[u8], out: &mut BytesMut) {
    out.put_u8(b'p');
    out.put_i32(4 + payload.len() as i32);
    out.put_slice(payload);
}

/// A SASLInitialResponse.
pub(crate) fn sasl_initial_response(mechanism: &str, data: &[u8], out: &mut BytesMut) {
    let mut body = BytesMut::with_capacity(mechanism.len() + data.len() + 5);
    put_cstr(&mut body, mechanism);
    body.put_i32(data.len() as i32);
    body.put_slice(data);
    password_message(&body, out);
}

/// Terminate.
pub fn terminate(out: &mut BytesMut) {
    out.put_u8(b'X');
    out.put_i32(4);
}

/// Flush.
pub fn flush(out: &mut BytesMut) {
    out.put_u8(b'H');
    out.put_i32(4);
}

/// Appends a message with type byte `tag` whose body `body` writes.
fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = i32::try_from(out.len() - at).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A simple Query.
pub fn query(sql: &str, out: &mut BytesMut) {
    message(out, b'Q', |b| put_cstr(b, sql));
}

/// Parse.
pub fn parse(name: &str, sql: &str, param_types: &[u32], out: &mut BytesMut) {
    message(out, b'P', |b| {
        put_cstr(b, name);
        put_cstr(b, sql);
        b.put_i16(i16::try_from(param_types.len()).unwrap_or(i16::MAX));
        for t in param_types {
            b.put_u32(*t);
        }
    });
}

/// Bind: `values` in `formats` (one code each), results in `result_formats`.
pub fn bind(
    (portal, statement): (&str, &str),
    formats: &[i16],
    values: &[Option<Cow<'_, [u8]>>],
    result_formats: impl ExactSizeIterator<Item = i16>,
    out: &mut BytesMut,
) {
    message(out, b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        put_count(b, formats.len());
        for f in formats {
            b.put_i16(*f);
        }
        put_values(b, values);
        put_count(b, result_formats.len());
        for f in result_formats {
            b.put_i16(f);
        }
    });
}

/// ParameterDescription.
pub(crate) fn parameter_description(oids: &[u32], out: &mut BytesMut) {
    message(out, b't', |b| {
        put_count(b, oids.len());
        for oid in oids {
            b.put_u32(*oid);
        }
    });
}

/// RowDescription.
pub(crate) fn row_description(fields: &[FieldDescription<'_>], out: &mut BytesMut) {
    message(out, b'T', |b| {
        put_count(b, fields.len());
        for f in fields {
            b.put_slice(f.name);
            b.put_u8(0);
            b.put_u32(f.table_oid);
            b.put_i16(f.column);
            b.put_u32(f.type_oid);
            b.put_i16(f.type_len);
            b.put_i32(f.type_mod);
            b.put_i16(f.format);
        }
    });
}

/// DataRow.
pub(crate) fn data_row(values: &[Option<Cow<'_, [u8]>>], out: &mut BytesMut) {
    message(out, b'D', |b| put_values(b, values));
}

/// CopyData.
pub(crate) fn copy_data(data: &[u8], out: &mut BytesMut) {
    message(out, b'd', |b| b.put_slice(data));
}

/// CopyFail with `reason`.
pub(crate) fn copy_fail(reason: &str, out: &mut BytesMut) {
    message(out, b'f', |b| put_cstr(b, reason));
}

/// A 16-bit count (clamped: the callers' counts come from 16-bit counts).
fn put_count(b: &mut BytesMut, n: usize) {
    b.put_i16(i16::try_from(n).unwrap_or(i16::MAX));
}

/// A count, then each value with its length (-1 for NULL).
fn put_values(b: &mut BytesMut, values: &[Option<Cow<'_, [u8]>>]) {
    put_count(b, values.len());
    for v in values {
        match v {
            Some(v) => {
                b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                b.put_slice(v);
            }
            None => b.put_i32(-1),
        }
    }
}

/// Bind with no parameters and default (text) result formats.
pub(crate) fn bind_empty(portal: &str, statement: &str, out: &mut BytesMut) {
    message(out, b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    });
}

/// Describe (`b'S'` statement or `b'P'` portal).
pub fn describe(target: u8, name: &str, out: &mut BytesMut) {
    message(out, b'D', |b| {
        b.put_u8(target);
        put_cstr(b, name);
    });
}

/// Close (`b'S'` statement or `b'P'` portal).
pub fn close(target: u8, name: &str, out: &mut BytesMut) {
    message(out, b'C', |b| {
        b.put_u8(target);
        put_cstr(b, name);
    });
}

/// Execute.
pub fn execute(portal: &str, max_rows: i32, out: &mut BytesMut) {
    message(out, b'E', |b| {
        put_cstr(b, portal);
        b.put_i32(max_rows);
    });
}

/// Appends a NUL-terminated string.
fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::decode_error_fields;
    use crate::protocol::frame::split_frame;

    #[test]
    fn error_round_trips_through_our_decoder() {
        let mut out = BytesMut::new();
        PgError::fatal("57P05", "idle timeout")
            .with_hint("reconnect")
            .encode(&mut out);
        let f = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(f.tag(), b'E');
        let e = decode_error_fields(f.body()).unwrap();
        assert_eq!(
            (e.severity, e.code, e.message),
            ("FATAL", "57P05", "idle timeout")
        );
    }

    #[test]
    fn startup_message_layout() {
        let mut out = BytesMut::new();
        startup(&[("user", "u")], &mut out);
        assert_eq!(&out[..], b"\0\0\0\x10\0\x03\0\0user\0u\0\0");
    }

    #[test]
    fn rows_round_trip_through_our_decoders() {
        use crate::protocol::backend::{decode_data_row, decode_row_description};
        let field = FieldDescription {
            name: b"ssn",
            table_oid: 7,
            column: 2,
            type_oid: 25,
            type_len: -1,
            type_mod: -1,
            format: 1,
        };
        let mut out = BytesMut::new();
        row_description(std::slice::from_ref(&field), &mut out);
        data_row(&[None, Some(Cow::Borrowed(&b"x"[..]))], &mut out);
        let t = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(decode_row_description(t.body()).unwrap(), [field]);
        let d = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(decode_data_row(d.body()).unwrap(), [None, Some(&b"x"[..])]);
    }
}
