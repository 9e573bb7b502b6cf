//! PostgreSQL's binary COPY format, read as a stream that may be split anywhere: the
//! header (`PGCOPY\n\xff\r\n\0`, flags, extension), tuples (a field count, then each
//! field's length, -1 for NULL, and bytes), and the trailer (a field count of -1). Each
//! complete tuple is rewritten with the fields its caller picks transformed. Pure: bytes
//! in, bytes out.

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Binary COPY data that is not in the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// A binary COPY stream being rewritten.
#[derive(Debug, Default)]
pub(crate) struct BinaryStream {
    /// bytes of an incomplete header or tuple
    partial: Vec<u8>,
    /// the header has passed
    header: bool,
    /// the trailer has passed: anything after it is passed on as it is
    ended: bool,
}

fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The length of the header at the start of `b`; `None` when incomplete.
fn header_len(b: &[u8]) -> Result<Option<usize>, Malformed> {
    if b.len() < SIGNATURE.len() {
        return if SIGNATURE.starts_with(b) {
            Ok(None)
        } else {
            Err(Malformed("COPY signature not recognised"))
        };
    }
    if &b[..SIGNATURE.len()] != SIGNATURE {
        return Err(Malformed("COPY signature not recognised"));
    }
    let Some(ext) = i32_at(b, 15) else {
        return Ok(None);
    };
    let ext = usize::try_from(ext).map_err(|_| Malformed("invalid COPY header"))?;
    let len = 19 + ext;
    Ok((b.len() >= len).then_some(len))
}

/// The fields of the tuple at the start of `b` (`None` for a NULL) and its length; the
/// trailer is a tuple of no fields and length 2 with `true`. `None` when incomplete.
#[allow(clippy::type_complexity)]
fn tuple(b: &[u8]) -> Result<Option<(Vec<Option<&[u8]>>, usize, bool)>, Malformed> {
    let Some(count) = i16_at(b, 0) else {
        return Ok(None);
    };
    if count == -1 {
        return Ok(Some((Vec::new(), 2, true)));
    }
    let count = usize::try_from(count).map_err(|_| Malformed("invalid field count"))?;
    let mut at = 2;
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(len) = i32_at(b, at) else {
            return Ok(None);
        };
        at += 4;
        if len == -1 {
            fields.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| Malformed("invalid field length"))?;
        let Some(v) = b.get(at..at + len) else {
            return Ok(None);
        };
        fields.push(Some(v));
        at += len;
    }
    Ok(Some((fields, at, false)))
}

impl BinaryStream {
    /// Feeds a chunk; writes to `out` every complete unit, each non-NULL field `i` of a
    /// tuple replaced by what `transform(i, value)` gives (`None`: kept as it is).
    /// `Malformed` for data that is not in the format (an error of `transform` is returned
    /// as `Err(Ok(e))`).
    pub fn feed<E>(
        &mut self,
        chunk: &[u8],
        mut transform: impl FnMut(usize, &[u8]) -> Option<Result<Vec<u8>, E>>,
        out: &mut Vec<u8>,
    ) -> Result<(), Result<E, Malformed>> {
        if self.ended {
            out.extend_from_slice(chunk);
            return Ok(());
        }
        self.partial.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let rest = &self.partial[at..];
            if rest.is_empty() {
                break;
            }
            if !self.header {
                match header_len(rest).map_err(Err)? {
                    Some(len) => {
                        out.extend_from_slice(&rest[..len]);
                        at += len;
                        self.header = true;
                        continue;
                    }
                    None => break,
                }
            }
            let Some((fields, len, trailer)) = tuple(rest).map_err(Err)? else {
                break;
            };
            if trailer {
                // the trailer, and whatever follows it (PostgreSQL ignores that)
                out.extend_from_slice(rest);
                at = self.partial.len();
                self.ended = true;
                break;
            }
            out.extend_from_slice(&rest[..2]);
            for (i, field) in fields.into_iter().enumerate() {
                let Some(v) = field else {
                    out.extend_from_slice(&(-1i32).to_be_bytes());
                    continue;
                };
                match transform(i, v).transpose().map_err(Ok)? {
                    Some(t) => {
                        out.extend_from_slice(&field_len(t.len()));
                        out.extend_from_slice(&t);
                    }
                    None => {
                        out.extend_from_slice(&field_len(v.len()));
                        out.extend_from_slice(v);
                    }
                }
            }
            at += len;
        }
        self.partial.drain(..at);
        Ok(())
    }

    /// True when no incomplete unit is held back.
    pub(crate) fn is_clean(&self) -> bool {
        self.partial.is_empty()
    }
}

fn field_len(n: usize) -> [u8; 4] {
    i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(tuples: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut b = SIGNATURE.to_vec();
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        for t in tuples {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            for f in *t {
                match f {
                    None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        b.extend_from_slice(v);
                    }
                }
            }
        }
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b
    }

    #[test]
    fn tuples_split_anywhere_are_rewritten_whole() {
        let input = stream(&[
            &[Some(b"1"), Some(b"abc"), None],
            &[Some(b"22"), Some(b""), Some(b"x")],
        ]);
        let expected = stream(&[
            &[Some(b"1"), Some(b"ABC"), None],
            &[Some(b"22"), Some(b""), Some(b"x")],
        ]);
        for split in 0..input.len() {
            let mut s = BinaryStream::default();
            let mut out = Vec::new();
            for chunk in [&input[..split], &input[split..]] {
                s.feed(
                    chunk,
                    |i, v| (i == 1).then(|| Ok::<_, ()>(v.to_ascii_uppercase())),
                    &mut out,
                )
                .unwrap();
            }
            assert!(s.is_clean(), "{split}");
            assert_eq!(out, expected, "split at {split}");
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let keep = |_, _: &[u8]| None::<Result<Vec<u8>, ()>>;
        let mut s = BinaryStream::default();
        let mut out = Vec::new();
        let e = s.feed(b"1\tplain text\n", keep, &mut out);
        assert!(matches!(e, Err(Err(Malformed(_)))));
        let mut s = BinaryStream::default();
        let mut bad = stream(&[]);
        bad.truncate(19);
        bad.extend_from_slice(&[0, 1, 0xff, 0xff, 0xff, 0xf0]);
        let e = s.feed(&bad, keep, &mut out);
        assert!(matches!(e, Err(Err(Malformed(_)))));
    }
}
