//! COPY data of protected tables, in PostgreSQL's text format or CSV: rows streamed in by
//! COPY FROM STDIN have their protected fields encrypted; rows streamed out by COPY TO
//! STDOUT have them decrypted. Pure: bytes in, bytes out.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::copy_binary::{BinaryStream, Malformed};
use super::transform::RowError;
use crate::protocol::build;
use crate::protocol::copy::{fields, put_value};
use crate::protocol::value::{self, Context, Format};
use crate::sql::{Column, CopyPlan, Refusal};

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
