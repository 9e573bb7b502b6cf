//! Message framing: `type byte | i32 length (self-inclusive) | body`.

use bytes::{Bytes, BytesMut};

use super::ProtocolError;

/// One complete protocol message, kept as the exact bytes received so that a message phigate
/// does not change is forwarded byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

/// Bytes in a message header: the type byte and the length.
pub const HEADER_LEN: usize = 5;

impl Frame {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// The body, after the header.
    pub fn body(&self) -> &[u8] {
        &self.raw[HEADER_LEN..]
    }

    /// The whole message, header included.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Builds a frame from a type byte and a body.
    pub fn new(tag: u8, body: &[u8]) -> Self {
        let mut raw = BytesMut::with_capacity(HEADER_LEN + body.len());
        raw.extend_from_slice(&[tag]);
        raw.extend_from_slice(&frame_len(body.len()).to_be_bytes());
        raw.extend_from_slice(body);
        Self { raw: raw.freeze() }
    }
}

/// The length field for a body of `body_len` bytes.
fn frame_len(body_len: usize) -> i32 {
    i32::try_from(body_len + 4).unwrap_or(i32::MAX)
}

/// Splits the next complete message off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (and reserves room for the whole message, so
/// a large message is read without repeated reallocation). A length below 4 or above `limit`
/// is a protocol error: the connection cannot be resynchronised after it.
pub fn split_frame(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l >= 4)
        .ok_or(ProtocolError::BadLength(i64::from(len)))?;
    if len > limit {
        return Err(ProtocolError::TooLarge { len, limit });
    }
    let total = len + 1;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        raw: buf.split_to(total).freeze(),
    }))
}

/// The message types a client may send after startup (password and SASL messages share `p`).
const FRONTEND_TYPES: &[u8] = b"BCdcfDEHFpPQSX";

/// [`split_frame`] for client messages: a type the protocol does not define for clients is
/// refused from its first byte, as PostgreSQL does, without waiting for the body it announces.
pub fn split_client_frame(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<Frame>, ProtocolError> {
    match buf.first() {
        Some(tag) if !FRONTEND_TYPES.contains(tag) => Err(ProtocolError::UnexpectedType(*tag)),
        _ => split_frame(buf, limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_frames_and_waits_for_partial_ones() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(Frame::new(b'Q', b"select 1\0").raw());
        buf.extend_from_slice(&Frame::new(b'S', b"").raw()[..3]);
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag(), b'Q');
        assert_eq!(f.body(), b"select 1\0");
        assert_eq!(split_frame(&mut buf, 1024), Ok(None));
        buf.extend_from_slice(&[0, 4]);
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((f.tag(), f.body()), (b'S', &b""[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn an_unknown_client_type_is_refused_from_its_header() {
        let mut buf = BytesMut::from(&[0u8][..]);
        assert_eq!(
            split_client_frame(&mut buf, 1 << 20),
            Err(ProtocolError::UnexpectedType(0))
        );
        let mut buf = BytesMut::from(&[b'Q', 0, 0][..]);
        assert_eq!(split_client_frame(&mut buf, 1 << 20), Ok(None));
    }

    #[test]
    fn rejects_bad_and_oversized_lengths() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(ProtocolError::BadLength(3))
        );
        let mut buf = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(ProtocolError::BadLength(-1))
        );
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 8, 0][..]);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(ProtocolError::TooLarge {
                len: 2048,
                limit: 1024
            })
        );
    }
}
