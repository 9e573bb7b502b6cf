//! COPY data of protected tables, in PostgreSQL's text, CSV or binary format: rows streamed
//! in by COPY FROM STDIN have their protected fields encrypted; rows streamed out by COPY TO
//! STDOUT have them decrypted. The formats themselves are read and written by
//! `protocol::copy` and `protocol::copy_binary`. Pure: bytes in, bytes out.

use std::sync::Arc;

use bytes::BytesMut;

use super::{Ciphers, RowError, rows::open, unreadable};
use crate::crypto::ColumnCipher;
use crate::protocol::build;
use crate::protocol::copy::{CopyFormat, rewrite_row, row_ends};
use crate::protocol::copy_binary::{BinaryStream, Malformed};
use crate::protocol::value::{self, Context, Format};
use crate::sql::{Column, Plan, Refusal};

/// Per field of a COPY row: the protected column it holds, with its cipher.
type Fields = Vec<Option<(Arc<Column>, Arc<ColumnCipher>)>>;

/// What both directions of a COPY know: its fields, format and stream state.
#[derive(Debug)]
struct Copying {
    fields: Fields,
    format: CopyFormat,
    ctx: Context,
    /// the header line is still to come (text and CSV)
    header: bool,
    /// the binary format's stream, for a binary COPY
    binary: Option<BinaryStream>,
}

impl Copying {
    /// The COPY of `plan`: its protected fields with their ciphers, and its format.
    fn new(plan: &Plan, ciphers: &Ciphers, ctx: Context) -> Self {
        let (fields, format) = match &plan.copy {
            Some(copy) => {
                let fields = copy
                    .columns
                    .iter()
                    .map(|c| c.as_ref().map(|c| (c.clone(), ciphers.of(c))))
                    .collect();
                (fields, copy.format.clone())
            }
            None => (Vec::new(), CopyFormat::text()),
        };
        Self {
            header: format.header,
            binary: format.binary.then(BinaryStream::default),
            fields,
            format,
            ctx,
        }
    }
}

/// The rows of a COPY FROM STDIN, reassembled from CopyData chunks and encrypted.
#[derive(Debug)]
pub(crate) struct CopyIn {
    c: Copying,
    /// bytes of an incomplete row
    partial: Vec<u8>,
    /// the `\.` end marker was seen: the rest is ignored
    ended: bool,
}

fn bad_value(col: &Column, e: &value::ValueError) -> Refusal {
    Refusal {
        code: e.sqlstate(),
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

fn bad_binary(e: Malformed) -> Refusal {
    Refusal {
        code: "22P04",
        message: format!("COPY: {} in the binary data", e.0),
        hint: "send PostgreSQL's binary COPY format".into(),
    }
}

/// A field of COPY data, as the client wrote it in `format`, encrypted.
fn seal(
    (col, cipher): &(Arc<Column>, Arc<ColumnCipher>),
    format: Format,
    v: &[u8],
    ctx: Context,
) -> Result<Vec<u8>, Refusal> {
    let ty = col.logical_type();
    let v = ctx
        .value_from_client(ty, format, v)
        .map_err(|_| bad_encoding(col))?;
    value::to_canonical(ty, format, &v, ctx)
        .map(|c| cipher.encrypt(&c))
        .map_err(|e| bad_value(col, &e))
}

impl CopyIn {
    /// Starts on the COPY of `plan` (which must have a copy plan).
    pub(crate) fn new(plan: &Plan, ciphers: &Ciphers, ctx: Context) -> Self {
        Self {
            c: Copying::new(plan, ciphers, ctx),
            partial: Vec::new(),
            ended: false,
        }
    }

    /// A chunk of binary COPY data: its complete tuples, encrypted.
    fn binary_data(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), Refusal> {
        let Some(stream) = self.c.binary.as_mut() else {
            return Ok(());
        };
        let (fields, ctx) = (&self.c.fields, self.c.ctx);
        let mut buf = Vec::with_capacity(chunk.len() * 2);
        stream
            .feed(
                chunk,
                |i, v| Some(seal(fields.get(i)?.as_ref()?, Format::Binary, v, ctx)),
                &mut buf,
            )
            .map_err(|e| e.unwrap_or_else(bad_binary))?;
        if !buf.is_empty() {
            build::copy_data(&buf, out);
        }
        Ok(())
    }

    /// A chunk of client data: the complete rows in it, encrypted, as one CopyData.
    pub(crate) fn data(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), Refusal> {
        if self.c.binary.is_some() {
            return self.binary_data(chunk, out);
        }
        self.partial.extend_from_slice(chunk);
        let ends = row_ends(&self.partial, &self.c.format);
        let Some(&end) = ends.last() else {
            return Ok(());
        };
        let rows: Vec<u8> = self.partial.drain(..end).collect();
        self.emit(&rows, &ends, out)
    }

    /// The client's CopyDone: the last row may lack its line end.
    pub(crate) fn done(&mut self, out: &mut BytesMut) -> Result<(), Refusal> {
        if let Some(stream) = &self.c.binary {
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
        let ends = row_ends(&rows, &self.c.format);
        if ends.last() != Some(&rows.len()) {
            return Err(Refusal {
                code: "22P04",
                message: "COPY data ends inside a quoted field".into(),
                hint: "close every quoted CSV field".into(),
            });
        }
        self.emit(&rows, &ends, out)
    }

    /// Encrypts the rows of `rows`, which end at `ends`, into one CopyData.
    fn emit(&mut self, rows: &[u8], ends: &[usize], out: &mut BytesMut) -> Result<(), Refusal> {
        let mut buf = Vec::with_capacity(rows.len() * 2);
        let mut start = 0;
        for &end in ends {
            let line = &rows[start..end];
            start = end;
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            if self.ended || self.c.header || body == b"\\." {
                self.ended |= body == b"\\.";
                self.c.header = false;
                buf.extend_from_slice(line);
                continue;
            }
            let (fields, ctx) = (&self.c.fields, self.c.ctx);
            let sealed_hex = |i: usize, v: &[u8]| {
                let field = fields.get(i)?.as_ref()?;
                Some(seal(field, Format::Text, v, ctx).map(|sealed| {
                    let mut hex = String::with_capacity(2 + sealed.len() * 2);
                    hex.push_str("\\x");
                    crate::protocol::value::push_hex(&sealed, &mut hex);
                    hex.into_bytes()
                }))
            };
            rewrite_row(body, &self.c.format, sealed_hex, &mut buf)?;
            buf.push(b'\n');
        }
        build::copy_data(&buf, out);
        Ok(())
    }
}

/// A COPY TO STDOUT of a protected table: its data decrypted on the way to the client.
#[derive(Debug)]
pub(crate) struct CopyOut(Copying);

impl CopyOut {
    /// Starts on the COPY of `plan` (which has a copy plan).
    pub(crate) fn new(plan: &Plan, ciphers: &Ciphers, ctx: Context) -> Self {
        Self(Copying::new(plan, ciphers, ctx))
    }

    /// One CopyData from the server, decrypted.
    pub(crate) fn data(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), RowError> {
        let (fields, ctx) = (&self.0.fields, self.0.ctx);
        let Some(stream) = &mut self.0.binary else {
            return self.text_row(data, out);
        };
        let mut buf = Vec::with_capacity(data.len());
        stream
            .feed(
                data,
                |i, v| Some(revealed(fields.get(i)?.as_ref()?, v, Format::Binary, ctx)),
                &mut buf,
            )
            .map_err(|e| match e {
                Ok(e) => e,
                Err(m) => {
                    RowError::Protocol(crate::protocol::ProtocolError::Malformed { what: m.0 })
                }
            })?;
        if !buf.is_empty() {
            build::copy_data(&buf, out);
        }
        Ok(())
    }

    /// One row of text or CSV (PostgreSQL sends a row per CopyData), decrypted.
    fn text_row(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), RowError> {
        if std::mem::take(&mut self.0.header) {
            build::copy_data(data, out);
            return Ok(());
        }
        let (fields, ctx) = (&self.0.fields, self.0.ctx);
        let body = data.strip_suffix(b"\n").unwrap_or(data);
        let mut row = Vec::with_capacity(data.len());
        let opened = |i: usize, v: &[u8]| {
            let field = fields.get(i)?.as_ref()?;
            let envelope = value::parse_bytea(&String::from_utf8_lossy(v))
                .map_err(|e| unreadable(&field.0, e.into()));
            Some(envelope.and_then(|e| revealed(field, &e, Format::Text, ctx)))
        };
        rewrite_row(body, &self.0.format, opened, &mut row)?;
        row.push(b'\n');
        build::copy_data(&row, out);
        Ok(())
    }
}

/// A stored envelope's value in `format` and the client encoding.
fn revealed(
    (col, cipher): &(Arc<Column>, Arc<ColumnCipher>),
    envelope: &[u8],
    format: Format,
    ctx: Context,
) -> Result<Vec<u8>, RowError> {
    let plain = open(cipher, col, envelope, format)?;
    ctx.value_for_client(col.logical_type(), format, plain)
        .map_err(|_| {
            unreadable(
                col,
                "a character has no equivalent in the client encoding".into(),
            )
        })
}
