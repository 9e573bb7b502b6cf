//! Backend (server to client) messages, decoded with bounds checks: [`Backend`] names
//! every message the session core acts on; the bodies it rewrites (RowDescription,
//! DataRow, ParameterDescription, CopyData) are kept as bytes for the transforms that
//! read them field by field.

use super::ProtocolError;
use super::frame::Frame;
use super::reader::Reader;

/// A server message, as the session core sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Backend<'a> {
    /// '1'
    ParseComplete,
    /// '2'
    BindComplete,
    /// '3'
    CloseComplete,
    /// 'n'
    NoData,
    /// 't': parameter type OIDs (body)
    ParameterDescription(&'a [u8]),
    /// 'T': result columns (body)
    RowDescription(&'a [u8]),
    /// 'D': one row (body)
    DataRow(&'a [u8]),
    /// 'C': the command tag
    CommandComplete(&'a str),
    /// 'I'
    EmptyQuery,
    /// 's'
    PortalSuspended,
    /// 'E'
    Error(ErrorFields<'a>),
    /// 'Z': the transaction status (`I`, `T` or `E`)
    ReadyForQuery(u8),
    /// 'G' or 'W': the server now reads COPY data
    CopyIn,
    /// 'H': the server sends COPY data
    CopyOut,
    /// 'd' (body)
    CopyData(&'a [u8]),
    /// 'c'
    CopyDone,
    /// 'S' (body: its text may be in a client encoding other than UTF-8)
    ParameterStatus(&'a [u8]),
    /// anything else (NoticeResponse, NotificationResponse, ...): passed on
    Other,
}

impl<'a> Backend<'a> {
    /// Decodes the messages the session acts on; a malformed one is a protocol error.
    pub fn decode(frame: &'a Frame) -> Result<Self, ProtocolError> {
        let body = frame.body();
        Ok(match frame.tag() {
            b'1' => Self::ParseComplete,
            b'2' => Self::BindComplete,
            b'3' => Self::CloseComplete,
            b'n' => Self::NoData,
            b't' => Self::ParameterDescription(body),
            b'T' => Self::RowDescription(body),
            b'D' => Self::DataRow(body),
            b'C' => Self::CommandComplete(decode_command_tag(body)?),
            b'I' => Self::EmptyQuery,
            b's' => Self::PortalSuspended,
            b'E' => Self::Error(decode_error_fields(body)?),
            b'Z' => Self::ReadyForQuery(decode_ready_status(body)?),
            b'G' | b'W' => Self::CopyIn,
            b'H' => Self::CopyOut,
            b'd' => Self::CopyData(body),
            b'c' => Self::CopyDone,
            b'S' => Self::ParameterStatus(body),
            _ => Self::Other,
        })
    }
}

/// Fields of an ErrorResponse or NoticeResponse that phigate looks at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// 'V' (non-localised severity) or 'S'
    pub severity: &'a str,
    /// 'C': SQLSTATE
    pub code: &'a str,
    /// 'M'
    pub message: &'a str,
}

/// Decodes the fields of an ErrorResponse/NoticeResponse body.
pub fn decode_error_fields(body: &[u8]) -> Result<ErrorFields<'_>, ProtocolError> {
    let mut r = Reader::new(body, "ErrorResponse");
    let mut f = ErrorFields::default();
    loop {
        match r.u8()? {
            0 => break,
            code => {
                // in the client encoding: a field that is not UTF-8 reads as empty (only
                // severity, SQLSTATE and phigate's own ASCII message are compared)
                let v = std::str::from_utf8(r.cbytes()?).unwrap_or("");
                match code {
                    b'V' => f.severity = v,
                    b'S' if f.severity.is_empty() => f.severity = v,
                    b'C' => f.code = v,
                    b'M' => f.message = v,
                    _ => {}
                }
            }
        }
    }
    Ok(f)
}

/// Decodes a ReadyForQuery body: the transaction status byte (`I`, `T` or `E`).
pub fn decode_ready_status(body: &[u8]) -> Result<u8, ProtocolError> {
    match body {
        [s @ (b'I' | b'T' | b'E')] => Ok(*s),
        _ => Err(ProtocolError::Malformed {
            what: "ReadyForQuery",
        }),
    }
}

/// Decodes a CommandComplete body: the command tag.
pub fn decode_command_tag(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut r = Reader::new(body, "CommandComplete");
    let tag = r.cstr()?;
    r.finish()?;
    Ok(tag)
}

/// Decodes a ParameterStatus body: name and value.
pub fn decode_parameter_status(body: &[u8]) -> Result<(&str, &str), ProtocolError> {
    let mut r = Reader::new(body, "ParameterStatus");
    let name = r.cstr()?;
    let value = r.cstr()?;
    r.finish()?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_backend_fields() {
        let body = b"SERROR\0VERROR\0C42P01\0Mno such table\0\0";
        let f = decode_error_fields(body).unwrap();
        assert_eq!(
            (f.severity, f.code, f.message),
            ("ERROR", "42P01", "no such table")
        );
        assert!(decode_error_fields(b"C42").is_err());
        assert_eq!(decode_ready_status(b"T"), Ok(b'T'));
        assert!(decode_ready_status(b"x").is_err());
        assert_eq!(decode_command_tag(b"SELECT 1\0"), Ok("SELECT 1"));
        assert_eq!(decode_parameter_status(b"a\0b\0"), Ok(("a", "b")));
    }
}
