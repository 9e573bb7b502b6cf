//! Typed, borrowed views of the messages phigate inspects. Decoding validates the whole
//! message structure, so a malformed message is caught at the proxy, not upstream.

use super::ProtocolError;
use super::frame::Frame;
use super::reader::Reader;

/// What a Describe or Close message refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// a prepared statement ('S')
    Statement,
    /// a portal ('P')
    Portal,
}

impl Target {
    fn decode(b: u8, what: &'static str) -> Result<Self, ProtocolError> {
        match b {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(ProtocolError::Malformed { what }),
        }
    }
}

/// A Bind message.
#[derive(Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    /// destination portal ("" is the unnamed portal)
    pub portal: &'a str,
    /// source prepared statement ("" is the unnamed statement)
    pub statement: &'a str,
    /// parameter format codes (0 text, 1 binary), as sent
    pub param_formats: Formats<'a>,
    /// parameter values; `None` is NULL
    pub params: Vec<Option<&'a [u8]>>,
    /// result column format codes, as sent
    pub result_formats: Formats<'a>,
}

/// Format codes as Bind carries them (big-endian i16s: 0 text, 1 binary), read in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Formats<'a>(&'a [u8]);

impl Formats<'_> {
    /// How many codes there are.
    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The codes, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = i16> + '_ {
        self.0
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
    }

    /// The code of column (or parameter) `i`: none means text, one applies to all.
    pub fn nth(&self, i: usize) -> i16 {
        let at = if self.len() == 1 { 0 } else { i };
        self.iter().nth(at).unwrap_or(0)
    }
}

/// Decodes a SASLInitialResponse body (a password message during SASL authentication):
/// the mechanism and the client's first message.
pub(crate) fn decode_sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let data = r.value()?.unwrap_or_default();
    r.finish()?;
    Ok((mechanism, data))
}

/// A frontend (client to server) message after startup.
#[derive(Debug, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// 'Q': simple query, possibly several statements
    Query {
        /// the SQL text
        sql: &'a str,
    },
    /// 'P': prepare a statement
    Parse {
        /// statement name ("" is the unnamed statement)
        name: &'a str,
        /// the SQL text
        sql: &'a str,
        /// declared parameter type OIDs (0 = unspecified)
        param_types: Vec<u32>,
    },
    /// 'B'
    Bind(Bind<'a>),
    /// 'D'
    Describe {
        /// statement or portal
        target: Target,
        /// its name
        name: &'a str,
    },
    /// 'E'
    Execute {
        /// portal name
        portal: &'a str,
        /// row limit, 0 for no limit
        max_rows: i32,
    },
    /// 'C'
    Close {
        /// statement or portal
        target: Target,
        /// its name
        name: &'a str,
    },
    /// 'S'
    Sync,
    /// 'H'
    Flush,
    /// 'd': a chunk of COPY FROM STDIN data
    CopyData,
    /// 'c'
    CopyDone,
    /// 'f'
    CopyFail,
    /// 'F': fast-path function call (libpq's large-object functions)
    FunctionCall,
    /// 'X'
    Terminate,
}

impl<'a> Frontend<'a> {
    /// Decodes a frontend message. Unknown types (and password messages outside
    /// authentication) are protocol errors.
    pub fn decode(frame: &'a Frame) -> Result<Self, ProtocolError> {
        let body = frame.body();
        let msg = match frame.tag() {
            b'Q' => {
                let mut r = Reader::new(body, "Query");
                let sql = r.cstr()?;
                r.finish()?;
                Frontend::Query { sql }
            }
            b'P' => {
                let mut r = Reader::new(body, "Parse");
                let name = r.cstr()?;
                let sql = r.cstr()?;
                let n = r.count16()?;
                let param_types = (0..n)
                    .map(|_| r.i32().map(|oid| oid as u32))
                    .collect::<Result<_, _>>()?;
                r.finish()?;
                Frontend::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            b'B' => Frontend::Bind(decode_bind(body)?),
            b'D' => {
                let mut r = Reader::new(body, "Describe");
                let target = Target::decode(r.u8()?, "Describe")?;
                let name = r.cstr()?;
                r.finish()?;
                Frontend::Describe { target, name }
            }
            b'E' => {
                let mut r = Reader::new(body, "Execute");
                let portal = r.cstr()?;
                let max_rows = r.i32()?;
                r.finish()?;
                Frontend::Execute { portal, max_rows }
            }
            b'C' => {
                let mut r = Reader::new(body, "Close");
                let target = Target::decode(r.u8()?, "Close")?;
                let name = r.cstr()?;
                r.finish()?;
                Frontend::Close { target, name }
            }
            b'S' => empty(body, Frontend::Sync, "Sync")?,
            b'H' => empty(body, Frontend::Flush, "Flush")?,
            b'X' => empty(body, Frontend::Terminate, "Terminate")?,
            b'c' => empty(body, Frontend::CopyDone, "CopyDone")?,
            b'd' => Frontend::CopyData,
            b'f' => Frontend::CopyFail,
            b'F' => Frontend::FunctionCall,
            other => return Err(ProtocolError::UnexpectedType(other)),
        };
        Ok(msg)
    }
}

fn empty<'a>(
    body: &[u8],
    msg: Frontend<'a>,
    what: &'static str,
) -> Result<Frontend<'a>, ProtocolError> {
    Reader::new(body, what).finish().map(|()| msg)
}

fn decode_bind(body: &[u8]) -> Result<Bind<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let n = r.count16()?;
    let param_formats = Formats(r.bytes(2 * n)?);
    let n = r.count16()?;
    let params = (0..n).map(|_| r.value()).collect::<Result<Vec<_>, _>>()?;
    let n = r.count16()?;
    let result_formats = Formats(r.bytes(2 * n)?);
    r.finish()?;
    if param_formats
        .iter()
        .chain(result_formats.iter())
        .any(|f| !matches!(f, 0 | 1))
        || !matches!(param_formats.len(), 0 | 1) && param_formats.len() != params.len()
    {
        return Err(ProtocolError::Malformed { what: "Bind" });
    }
    Ok(Bind {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame::new(tag, body)
    }

    #[test]
    fn decodes_extended_protocol_messages() {
        let f = frame(b'P', b"s1\0select $1\0\x00\x01\x00\x00\x00\x17");
        assert_eq!(
            Frontend::decode(&f),
            Ok(Frontend::Parse {
                name: "s1",
                sql: "select $1",
                param_types: vec![23]
            })
        );
        let mut b = bytes::BytesMut::new();
        b.put_slice(b"p\0s1\0");
        b.put_i16(1);
        b.put_i16(1);
        b.put_i16(2);
        b.put_i32(2);
        b.put_slice(b"hi");
        b.put_i32(-1);
        b.put_i16(0);
        let f = frame(b'B', &b);
        let Ok(Frontend::Bind(bind)) = Frontend::decode(&f) else {
            panic!("not a bind")
        };
        assert_eq!(bind.params, vec![Some(&b"hi"[..]), None]);
        assert_eq!((bind.portal, bind.statement), ("p", "s1"));
        let f = frame(b'E', b"p\0\x00\x00\x00\x0a");
        assert_eq!(
            Frontend::decode(&f),
            Ok(Frontend::Execute {
                portal: "p",
                max_rows: 10
            })
        );
    }

    #[test]
    fn rejects_malformed_messages() {
        for (tag, body) in [
            (b'Q', &b"no terminator"[..]),
            (b'Q', b"a\0trailing"),
            (b'P', b"s\0q\0\x00\x02\x00\x00\x00\x01"),
            (b'B', b"\0\0\x00\x01\x00\x05"),
            (b'B', b"\0\0\x00\x00\x00\x01\x7f\xff\xff\xff"),
            (b'D', b"Xname\0"),
            (b'E', b"p\0\x00"),
            (b'S', b"x"),
            (b'p', b"password\0"),
            (b'Z', b""),
        ] {
            assert!(
                Frontend::decode(&frame(tag, body)).is_err(),
                "{tag} {body:?}"
            );
        }
    }
}
