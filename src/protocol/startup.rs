//! The untyped first packet of a connection: SSLRequest, GSSENCRequest, CancelRequest or
//! StartupMessage.

use bytes::{Buf, BytesMut};

use super::ProtocolError;
use super::reader::Reader;

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
/// Largest startup packet accepted (PostgreSQL uses the same bound).
pub(crate) const MAX_STARTUP_LEN: usize = 10_000;

/// The first packet a client sends, or the one after an SSL/GSS negotiation.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// asks for TLS
    SslRequest,
    /// asks for GSSAPI encryption
    GssEncRequest,
    /// asks to cancel the query running on the session holding this key
    Cancel {
        /// process id from BackendKeyData
        pid: i32,
        /// secret key from BackendKeyData
        secret: Vec<u8>,
    },
    /// opens a session
    Startup {
        /// protocol major version
        major: u16,
        /// protocol minor version
        minor: u16,
        /// startup parameters (user, database, options, ...), in the order sent
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// The value of startup parameter `name`.
    pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits the first packet off `buf`; `Ok(None)` when incomplete.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l >= 8)
        .ok_or(ProtocolError::BadLength(i64::from(len)))?;
    if len > MAX_STARTUP_LEN {
        return Err(ProtocolError::TooLarge {
            len,
            limit: MAX_STARTUP_LEN,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let mut r = Reader::new(&packet, "startup");
    let code = r.i32()?;
    let msg = match code {
        SSL_REQUEST => StartupPacket::SslRequest,
        GSSENC_REQUEST => StartupPacket::GssEncRequest,
        CANCEL_REQUEST => {
            let pid = r.i32()?;
            let secret = r.rest().to_vec();
            if !(4..=256).contains(&secret.len()) {
                return Err(ProtocolError::Malformed {
                    what: "CancelRequest",
                });
            }
            StartupPacket::Cancel { pid, secret }
        }
        version => {
            let major = (version >> 16) as u16;
            let minor = (version & 0xffff) as u16;
            let mut params = Vec::new();
            loop {
                let key = r.cstr()?;
                if key.is_empty() {
                    break;
                }
                params.push((key.to_owned(), r.cstr()?.to_owned()));
            }
            r.finish()?;
            StartupPacket::Startup {
                major,
                minor,
                params,
            }
        }
    };
    if !matches!(
        msg,
        StartupPacket::Startup { .. } | StartupPacket::Cancel { .. }
    ) {
        r.finish()?;
    }
    Ok(Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn packet(code: i32, rest: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(8 + rest.len() as i32);
        b.put_i32(code);
        b.put_slice(rest);
        b
    }

    #[test]
    fn decodes_each_kind() {
        assert_eq!(
            split_startup(&mut packet(SSL_REQUEST, b"")),
            Ok(Some(StartupPacket::SslRequest))
        );
        assert_eq!(
            split_startup(&mut packet(GSSENC_REQUEST, b"")),
            Ok(Some(StartupPacket::GssEncRequest))
        );
        assert_eq!(
            split_startup(&mut packet(CANCEL_REQUEST, &[0, 0, 0, 7, 1, 2, 3, 4])),
            Ok(Some(StartupPacket::Cancel {
                pid: 7,
                secret: vec![1, 2, 3, 4]
            }))
        );
        let got = split_startup(&mut packet(196_608, b"user\0bob\0database\0ehr\0\0"));
        assert_eq!(
            got,
            Ok(Some(StartupPacket::Startup {
                major: 3,
                minor: 0,
                params: vec![
                    ("user".into(), "bob".into()),
                    ("database".into(), "ehr".into())
                ]
            }))
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(split_startup(&mut packet(196_608, b"user\0bob")).is_err());
        assert!(split_startup(&mut packet(SSL_REQUEST, b"x")).is_err());
        assert!(split_startup(&mut packet(CANCEL_REQUEST, &[0, 0, 0, 7])).is_err());
        let mut huge = BytesMut::from(&[0x7f, 0, 0, 0][..]);
        assert!(split_startup(&mut huge).is_err());
        let mut partial = BytesMut::from(&[0, 0, 0, 16, 0][..]);
        assert_eq!(split_startup(&mut partial), Ok(None));
    }
}
