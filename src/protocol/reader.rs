//! A bounds-checked cursor over a message body.

use super::ProtocolError;

/// Reads protocol fields from a byte slice; every read fails instead of panicking when the
/// body is shorter than the field.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, naming the message kind `what` in its errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn malformed(&self) -> ProtocolError {
        ProtocolError::Malformed { what: self.what }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.buf.len() {
            return Err(self.malformed());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.bytes(1)?[0])
    }

    /// A big-endian i16.
    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian i32.
    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative i16 count, as used for array lengths.
    pub(crate) fn count16(&mut self) -> Result<usize, ProtocolError> {
        usize::try_from(self.i16()?).map_err(|_| self.malformed())
    }

    /// A NUL-terminated string's bytes, in whatever encoding (server text is in the
    /// session's client encoding).
    pub(crate) fn cbytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed())?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// A NUL-terminated string that must be valid UTF-8.
    pub(crate) fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed())?;
        let s = std::str::from_utf8(&self.buf[..end]).map_err(|_| self.malformed())?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// A length-prefixed (i32) value; -1 is NULL.
    pub fn value(&mut self) -> Result<Option<&'a [u8]>, ProtocolError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| self.malformed())?;
        self.bytes(len).map(Some)
    }

    /// The bytes not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.malformed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_fail_instead_of_panicking() {
        let mut r = Reader::new(&[0, 1], "test");
        assert_eq!(r.i32(), Err(ProtocolError::Malformed { what: "test" }));
        let mut r = Reader::new(b"abc", "test");
        assert!(r.cstr().is_err());
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xfe], "test");
        assert!(
            r.value().is_err(),
            "negative lengths other than -1 are malformed"
        );
        let mut r = Reader::new(&[0xff, 0xff], "test");
        assert!(r.count16().is_err());
    }

    #[test]
    fn reads_fields_in_order() {
        let mut r = Reader::new(b"ab\0\x00\x02\xff\xff\xff\xff\x00\x00\x00\x01z", "test");
        assert_eq!(r.cstr(), Ok("ab"));
        assert_eq!(r.i16(), Ok(2));
        assert_eq!(r.value(), Ok(None));
        assert_eq!(r.value(), Ok(Some(&b"z"[..])));
        assert!(r.finish().is_ok());
    }
}
