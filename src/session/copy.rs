//! COPY data of protected tables, in PostgreSQL's text format or CSV: rows streamed in by
//! COPY FROM STDIN have their protected fields encrypted; rows streamed out by COPY TO
//! STDOUT have them decrypted. Pure: bytes in, bytes out.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::copy_binary::{BinaryStream, Malformed};
use super::transform::RowError;
use crate::protocol::build;
use crate::protocol::value::{self, Context, Format};
use crate::sql::{Column, CopyFormat, CopyPlan, Refusal};

/// What phigate does with the COPY data a client sends, decided when the client sends the
/// statement it belongs to, never by the server's answer: a client may send its data before
/// CopyInResponse, and that data must meet the same encryption.
#[derive(Debug, Default)]
pub(super) enum ClientCopy {
    /// not a COPY into a protected table: forwarded as it is
    #[default]
    Raw,
    /// a COPY FROM STDIN into a protected table: rows are encrypted
    Encrypt(CopyIn),
    /// the statement was refused, or phigate aborted the COPY: the data is dropped
    Discard,
}

impl ClientCopy {
    /// How the COPY data after `plan` is handled.
    pub(super) fn after(plan: &Arc<crate::sql::Plan>, ctx: Context) -> Self {
        match &plan.copy {
            Some(c) if c.from_client => ClientCopy::Encrypt(CopyIn::new(plan.clone(), ctx)),
            _ => ClientCopy::Raw,
        }
    }
}

/// The COPY state of a session.
#[derive(Debug, Default)]
pub(super) struct CopyState {
    /// what becomes of the COPY data the client sends next: it follows the client's own
    /// order (a client may send its data before the server's CopyInResponse)
    pub(super) client: ClientCopy,
    /// phigate aborted a COPY FROM STDIN (a value was invalid): the server's error is
    /// replaced by this one
    pub(super) refusal: Option<Arc<Refusal>>,
    /// a COPY TO STDOUT of a protected table is streaming (and whether its header is next)
    pub(super) out: Option<CopyOut>,
}

/// One field of a row: its raw bytes as they appeared, and its value.
struct Field<'a> {
    raw: &'a [u8],
    /// `None` is NULL
    value: Option<Vec<u8>>,
}

/// Splits one row (without its line end) into fields.
fn fields<'a>(row: &'a [u8], f: &CopyFormat) -> Vec<Field<'a>> {
    if f.csv {
        csv_fields(row, f)
    } else {
        text_fields(row, f)
    }
}

fn text_fields<'a>(row: &'a [u8], f: &CopyFormat) -> Vec<Field<'a>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i <= row.len() {
        if i == row.len() || row[i] == f.delimiter {
            let raw = &row[start..i];
            let value = (raw != f.null.as_bytes()).then(|| text_unescape(raw));
            out.push(Field { raw, value });
            start = i + 1;
        } else if row[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    out
}

fn text_unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 == raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let mut v = 0u8;
                let mut digits = 0;
                while digits < 2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d as u8;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(v);
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn csv_fields<'a>(row: &'a [u8], f: &CopyFormat) -> Vec<Field<'a>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        let mut value = Vec::new();
        let mut quoted = false;
        let mut in_quotes = false;
        while i < row.len() {
            let b = row[i];
            if in_quotes {
                if b == f.escape && f.escape != f.quote && row.get(i + 1).is_some() {
                    value.push(row[i + 1]);
                    i += 2;
                    continue;
                }
                if b == f.quote {
                    if f.escape == f.quote && row.get(i + 1) == Some(&f.quote) {
                        value.push(f.quote);
                        i += 2;
                        continue;
                    }
                    in_quotes = false;
                    i += 1;
                    continue;
                }
                value.push(b);
            } else if b == f.delimiter {
                break;
            } else if b == f.quote {
                in_quotes = true;
                quoted = true;
            } else {
                value.push(b);
            }
            i += 1;
        }
        let raw = &row[start..i];
        let is_null = !quoted && raw == f.null.as_bytes();
        out.push(Field {
            raw,
            value: (!is_null).then_some(value),
        });
        if i >= row.len() {
            return out;
        }
        i += 1;
    }
}

/// Escapes a value for the text format.
fn text_escape(v: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &b in v {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' if delimiter == b'\t' => out.extend_from_slice(b"\\t"),
            d if d == delimiter => {
                out.push(b'\\');
                out.push(d);
            }
            other => out.push(other),
        }
    }
}

/// Quotes a value for CSV when it needs quoting (as PostgreSQL does).
fn csv_escape(v: &[u8], f: &CopyFormat, out: &mut Vec<u8>) {
    let needs = v.is_empty()
        || v == f.null.as_bytes()
        || v.iter()
            .any(|&b| b == f.delimiter || b == f.quote || b == b'\n' || b == b'\r');
    if !needs {
        out.extend_from_slice(v);
        return;
    }
    out.push(f.quote);
    for &b in v {
        if b == f.quote || b == f.escape {
            out.push(f.escape);
        }
        out.push(b);
    }
    out.push(f.quote);
}

/// Writes a value (not NULL) in the COPY format.
fn put_value(v: &[u8], f: &CopyFormat, out: &mut Vec<u8>) {
    if f.csv {
        csv_escape(v, f, out);
    } else {
        text_escape(v, f.delimiter, out);
    }
}

/// Rewrites one row with `transform` applied to the protected fields.
fn rewrite_row<E>(
    row: &[u8],
    plan: &CopyPlan,
    mut transform: impl FnMut(&Arc<Column>, &[u8]) -> Result<Vec<u8>, E>,
    out: &mut Vec<u8>,
) -> Result<(), E> {
    let f = &plan.format;
    for (i, field) in fields(row, f).into_iter().enumerate() {
        if i > 0 {
            out.push(f.delimiter);
        }
        match (plan.columns.get(i).and_then(Option::as_ref), &field.value) {
            (Some(col), Some(v)) => put_value(&transform(col, v)?, f, out),
            _ => out.extend_from_slice(field.raw),
        }
    }
    Ok(())
}

/// The rows of a COPY FROM STDIN, reassembled from CopyData chunks and encrypted.
#[derive(Debug)]
pub(super) struct CopyIn {
    plan: Arc<crate::sql::Plan>,
    ctx: Context,
    /// bytes of an incomplete row
    partial: Vec<u8>,
    /// the header line is still to come
    header: bool,
    /// the `\.` end marker was seen: the rest is ignored
    ended: bool,
    /// the binary format's stream, for a binary COPY
    binary: Option<BinaryStream>,
}

fn bad_value(col: &Column, e: &value::ValueError) -> Refusal {
    Refusal {
        code: "22P02",
        message: format!("COPY: {e} (column {} of table {})", col.name, col.table),
        hint: "write the value in PostgreSQL's standard form for its type".into(),
    }
}

fn bad_encoding(col: &Column) -> Refusal {
    Refusal {
        code: "22021",
        message: format!(
            "COPY: a value for column {} of table {} is not valid in the client encoding",
            col.name, col.table
        ),
        hint: "send text in the session's client_encoding".into(),
    }
}

/// A field of COPY data, as the client wrote it in `format`, encrypted.
fn seal(col: &Column, format: Format, v: &[u8], ctx: Context) -> Result<Vec<u8>, Refusal> {
    let ty = col.logical_type();
    let v = ctx
        .from_client(ty, format, v)
        .map_err(|_| bad_encoding(col))?;
    value::to_canonical(ty, format, &v, ctx)
        .map(|c| col.cipher.encrypt(&c))
        .map_err(|e| bad_value(col, &e))
}

fn bad_binary(e: Malformed) -> Refusal {
    Refusal {
        code: "22P04",
        message: format!("COPY: {} in the binary data", e.0),
        hint: "send PostgreSQL's binary COPY format".into(),
    }
}

impl CopyIn {
    /// Starts on the COPY of `plan` (which must have a copy plan).
    pub(super) fn new(plan: Arc<crate::sql::Plan>, ctx: Context) -> Self {
        let format = plan.copy.as_ref().map(|c| &c.format);
        let header = format.is_some_and(|f| f.header);
        let binary = format.is_some_and(|f| f.binary).then(BinaryStream::default);
        Self {
            plan,
            ctx,
            partial: Vec::new(),
            header,
            ended: false,
            binary,
        }
    }

    fn copy(&self) -> Option<&CopyPlan> {
        self.plan.copy.as_ref()
    }

    /// A chunk of binary COPY data: its complete tuples, encrypted.
    fn binary_data(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), Refusal> {
        let (Some(stream), Some(plan)) = (self.binary.as_mut(), self.plan.copy.as_ref()) else {
            return Ok(());
        };
        let ctx = self.ctx;
        let mut buf = Vec::with_capacity(chunk.len() * 2);
        stream
            .feed(
                chunk,
                plan,
                |col, v| seal(col, Format::Binary, v, ctx),
                &mut buf,
            )
            .map_err(|e| e.unwrap_or_else(bad_binary))?;
        if !buf.is_empty() {
            build::message(out, b'd', |b| b.put_slice(&buf));
        }
        Ok(())
    }

    /// A chunk of client data: the complete rows in it, encrypted, as one CopyData.
    pub(super) fn data(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), Refusal> {
        if self.binary.is_some() {
            return self.binary_data(chunk, out);
        }
        self.partial.extend_from_slice(chunk);
        let ends = self.row_ends(&self.partial);
        let Some(&end) = ends.last() else {
            return Ok(());
        };
        let rows: Vec<u8> = self.partial.drain(..end).collect();
        self.emit(&rows, &ends, out)
    }

    /// The client's CopyDone: the last row may lack its line end.
    pub(super) fn done(&mut self, out: &mut BytesMut) -> Result<(), Refusal> {
        if let Some(stream) = &self.binary {
            return if stream.is_clean() {
                Ok(())
            } else {
                Err(bad_binary(Malformed("the data ends inside a tuple")))
            };
        }
        if self.partial.is_empty() {
            return Ok(());
        }
        let mut rows = std::mem::take(&mut self.partial);
        rows.push(b'\n');
        let ends = self.row_ends(&rows);
        if ends.last() != Some(&rows.len()) && self.copy().is_some() {
            return Err(Refusal {
                code: "22P04",
                message: "COPY data ends inside a quoted field".into(),
                hint: "close every quoted CSV field".into(),
            });
        }
        self.emit(&rows, &ends, out)
    }

    /// Where each complete row of `buf` ends (just after its newline). A CSV row may
    /// hold newlines inside quotes.
    fn row_ends(&self, buf: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let Some(plan) = self.copy() else {
            return ends;
        };
        let f = &plan.format;
        let mut in_quotes = false;
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            if f.csv {
                if in_quotes && b == f.escape && f.escape != f.quote {
                    i += 2;
                    continue;
                }
                if b == f.quote {
                    in_quotes = !in_quotes;
                }
            } else if b == b'\\' {
                i += 2;
                continue;
            }
            if b == b'\n' && !in_quotes {
                ends.push(i + 1);
            }
            i += 1;
        }
        ends
    }

    /// Encrypts the rows of `rows`, which end at `ends`, into one CopyData.
    fn emit(&mut self, rows: &[u8], ends: &[usize], out: &mut BytesMut) -> Result<(), Refusal> {
        let Some(plan) = self.plan.copy.as_ref() else {
            build::message(out, b'd', |b| b.put_slice(rows));
            return Ok(());
        };
        let mut buf = Vec::with_capacity(rows.len() * 2);
        let mut start = 0;
        for &end in ends {
            let line = &rows[start..end];
            start = end;
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            if self.ended || self.header || body == b"\\." {
                self.ended |= body == b"\\.";
                self.header = false;
                buf.extend_from_slice(line);
                continue;
            }
            let ctx = self.ctx;
            rewrite_row(
                body,
                plan,
                |col, v| {
                    let sealed = seal(col, Format::Text, v, ctx)?;
                    let mut hex = Vec::with_capacity(2 + sealed.len() * 2);
                    hex.extend_from_slice(b"\\x");
                    hex.extend_from_slice(hex::encode(sealed).as_bytes());
                    Ok(hex)
                },
                &mut buf,
            )?;
            buf.push(b'\n');
        }
        build::message(out, b'd', |b| b.put_slice(&buf));
        Ok(())
    }
}

/// A COPY TO STDOUT of a protected table: its data decrypted on the way to the client.
#[derive(Debug)]
pub(super) struct CopyOut {
    plan: Arc<crate::sql::Plan>,
    ctx: Context,
    /// the header line is next (CSV)
    header: bool,
    /// the binary format's stream, for a binary COPY
    binary: Option<BinaryStream>,
}

impl CopyOut {
    /// Starts on the COPY of `plan` (which has a copy plan).
    pub(super) fn new(plan: Arc<crate::sql::Plan>, ctx: Context) -> Self {
        let format = plan.copy.as_ref().map(|c| &c.format);
        Self {
            ctx,
            header: format.is_some_and(|f| f.header),
            binary: format.is_some_and(|f| f.binary).then(BinaryStream::default),
            plan,
        }
    }

    /// One CopyData from the server, decrypted.
    pub(super) fn data(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), RowError> {
        let Some(plan) = self.plan.copy.as_ref() else {
            build::message(out, b'd', |b| b.put_slice(data));
            return Ok(());
        };
        let ctx = self.ctx;
        let Some(stream) = &mut self.binary else {
            return copy_out_row(data, plan, &mut self.header, ctx, out);
        };
        let mut buf = Vec::with_capacity(data.len());
        stream
            .feed(
                data,
                plan,
                |col, v| revealed(col, v, Format::Binary, ctx),
                &mut buf,
            )
            .map_err(|e| match e {
                Ok(e) => e,
                Err(m) => {
                    RowError::Protocol(crate::protocol::ProtocolError::Malformed { what: m.0 })
                }
            })?;
        if !buf.is_empty() {
            build::message(out, b'd', |b| b.put_slice(&buf));
        }
        Ok(())
    }
}

/// A stored envelope's value in `format` and the client encoding.
fn revealed(
    col: &Column,
    envelope: &[u8],
    format: Format,
    ctx: Context,
) -> Result<Vec<u8>, RowError> {
    let plain = super::transform::open(col, envelope, format)?;
    ctx.to_client(col.logical_type(), format, plain)
        .map_err(|_| RowError::Unreadable {
            column: col.name.clone(),
            table: col.table.to_string(),
            problem: "a character has no equivalent in the client encoding".into(),
        })
}

/// One row of COPY TO STDOUT (PostgreSQL sends a row per CopyData), decrypted.
fn copy_out_row(
    data: &[u8],
    plan: &CopyPlan,
    header: &mut bool,
    ctx: Context,
    out: &mut BytesMut,
) -> Result<(), RowError> {
    if std::mem::take(header) {
        build::message(out, b'd', |b| b.put_slice(data));
        return Ok(());
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut row = Vec::with_capacity(data.len());
    rewrite_row(
        body,
        plan,
        |col, v| {
            let envelope = value::parse_bytea(&String::from_utf8_lossy(v)).map_err(|e| {
                RowError::Unreadable {
                    column: col.name.clone(),
                    table: col.table.to_string(),
                    problem: e.into(),
                }
            })?;
            revealed(col, &envelope, Format::Text, ctx)
        },
        &mut row,
    )?;
    row.push(b'\n');
    build::message(out, b'd', |b| b.put_slice(&row));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> CopyFormat {
        CopyFormat::text()
    }

    fn csv() -> CopyFormat {
        CopyFormat {
            binary: false,
            csv: true,
            delimiter: b',',
            null: String::new(),
            header: false,
            quote: b'"',
            escape: b'"',
        }
    }

    fn values(row: &[u8], f: &CopyFormat) -> Vec<Option<String>> {
        fields(row, f)
            .into_iter()
            .map(|f| f.value.map(|v| String::from_utf8(v).expect("utf8")))
            .collect()
    }

    #[test]
    fn text_format_fields() {
        let v = values(b"1\ta\\tb\\\\c\\n\t\\N\t\\101\\x41", &text());
        assert_eq!(
            v,
            [
                Some("1".into()),
                Some("a\tb\\c\n".into()),
                None,
                Some("AA".into())
            ]
        );
        let mut out = Vec::new();
        text_escape(b"a\tb\\c\n", b'\t', &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\n");
    }

    #[test]
    fn csv_fields_and_quoting() {
        let v = values(b"1,\"a,\"\"b\"\"\",,\"\"", &csv());
        assert_eq!(
            v,
            [
                Some("1".into()),
                Some("a,\"b\"".into()),
                None,
                Some(String::new())
            ]
        );
        let mut out = Vec::new();
        csv_escape(b"a,\"b\"", &csv(), &mut out);
        assert_eq!(out, b"\"a,\"\"b\"\"\"");
        out.clear();
        csv_escape(b"", &csv(), &mut out);
        assert_eq!(out, b"\"\"");
    }
}
