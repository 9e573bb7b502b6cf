//! Backend (server to client) messages, decoded with bounds checks: [`Backend`] names
//! every message phigate acts on. The bodies only the encryption rewrites read
//! (RowDescription, DataRow, ParameterDescription) stay bytes in [`Backend`] until a rewrite
//! decodes them with `decode_row_description`, `decode_data_row` and
//! `decode_parameter_description`: a message passed through is never decoded.

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
    /// 'R': a step of the login
    Authentication(Authentication<'a>),
    /// 'K': the backend's process id and cancel key
    BackendKeyData(i32, &'a [u8]),
    /// anything else (NoticeResponse, NotificationResponse, ...): passed on
    Other,
}

/// An Authentication request from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// 0: logged in
    Ok,
    /// 3: send the password in clear
    CleartextPassword,
    /// 5: send the MD5 hash of the password with this salt
    Md5Password([u8; 4]),
    /// 10: SASL, with the mechanisms offered
    Sasl(Vec<&'a str>),
    /// 11: the server's SASL challenge
    SaslContinue(&'a [u8]),
    /// 12: the server's last SASL message
    SaslFinal(&'a [u8]),
    /// any other method (its code)
    Unsupported(i32),
}

/// Decodes an Authentication body.
pub(crate) fn decode_authentication(body: &[u8]) -> Result<Authentication<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Authentication");
    Ok(match r.i32()? {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt = r.bytes(4)?;
            Authentication::Md5Password([salt[0], salt[1], salt[2], salt[3]])
        }
        10 => {
            let mut offered = Vec::new();
            loop {
                match r.cstr()? {
                    "" => break,
                    m => offered.push(m),
                }
            }
            Authentication::Sasl(offered)
        }
        11 => Authentication::SaslContinue(r.rest()),
        12 => Authentication::SaslFinal(r.rest()),
        code => Authentication::Unsupported(code),
    })
}

/// One field of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldDescription<'a> {
    /// the column name (in the client encoding)
    pub name: &'a [u8],
    /// the table's OID, 0 when the field is no table column
    pub table_oid: u32,
    /// the column's attribute number, 0 when none
    pub column: i16,
    /// the type's OID
    pub type_oid: u32,
    /// the type's size (negative: variable)
    pub type_len: i16,
    /// the type modifier
    pub type_mod: i32,
    /// 0 text, 1 binary
    pub format: i16,
}

/// Decodes a RowDescription body.
pub(crate) fn decode_row_description(
    body: &[u8],
) -> Result<Vec<FieldDescription<'_>>, ProtocolError> {
    let mut r = Reader::new(body, "RowDescription");
    let n = r.count16()?;
    let mut fields = Vec::with_capacity(n.min(body.len() / 19));
    for _ in 0..n {
        fields.push(FieldDescription {
            name: r.cbytes()?,
            table_oid: r.i32()? as u32,
            column: r.i16()?,
            type_oid: r.i32()? as u32,
            type_len: r.i16()?,
            type_mod: r.i32()?,
            format: r.i16()?,
        });
    }
    r.finish()?;
    Ok(fields)
}

/// Decodes a DataRow body: each value, `None` for NULL.
pub(crate) fn decode_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut r = Reader::new(body, "DataRow");
    let n = r.count16()?;
    let mut values = Vec::with_capacity(n.min(body.len() / 4));
    for _ in 0..n {
        values.push(r.value()?);
    }
    r.finish()?;
    Ok(values)
}

/// Decodes a ParameterDescription body: each parameter's type OID.
pub(crate) fn decode_parameter_description(body: &[u8]) -> Result<Vec<u32>, ProtocolError> {
    let mut r = Reader::new(body, "ParameterDescription");
    let n = r.count16()?;
    let mut oids = Vec::with_capacity(n.min(body.len() / 4));
    for _ in 0..n {
        oids.push(r.i32()? as u32);
    }
    r.finish()?;
    Ok(oids)
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
            b'R' => Self::Authentication(decode_authentication(body)?),
            b'K' => {
                let mut r = Reader::new(body, "BackendKeyData");
                Self::BackendKeyData(r.i32()?, r.rest())
            }
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
pub(crate) fn decode_error_fields(body: &[u8]) -> Result<ErrorFields<'_>, ProtocolError> {
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
pub(crate) fn decode_ready_status(body: &[u8]) -> Result<u8, ProtocolError> {
    match body {
        [s @ (b'I' | b'T' | b'E')] => Ok(*s),
        _ => Err(ProtocolError::Malformed {
            what: "ReadyForQuery",
        }),
    }
}

/// Decodes a CommandComplete body: the command tag.
pub(crate) fn decode_command_tag(body: &[u8]) -> Result<&str, ProtocolError> {
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
        assert_eq!(
            decode_parameter_description(b"\0\x01\0\0\0\x11"),
            Ok(vec![17])
        );
        assert!(decode_parameter_description(b"\0\x02\0\0\0\x11").is_err());
        assert_eq!(
            decode_data_row(b"\0\x02\xff\xff\xff\xff\0\0\0\x01x"),
            Ok(vec![None, Some(&b"x"[..])])
        );
        assert!(decode_data_row(b"\0\x01\0\0\0\x05x").is_err());
        assert_eq!(
            decode_authentication(b"\0\0\0\x0aSCRAM-SHA-256\0\0"),
            Ok(Authentication::Sasl(vec!["SCRAM-SHA-256"]))
        );
        assert!(decode_authentication(b"\0\0\0\x05ab").is_err());
    }
}
