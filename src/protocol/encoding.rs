//! Client encodings: PostgreSQL sends and reads SQL text, names and text values in the
//! session's `client_encoding`. phigate analyses statements and canonicalises encrypted
//! values as UTF-8, so text crossing that boundary is converted here (encoding_rs does the
//! work; ISO 8859-1 and 8859-9 are spelled out, since the Encoding Standard folds them into
//! windows-1252 and windows-1254). ASCII is the same in every client encoding, so text
//! without a byte above 0x7f is never converted.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// A session's client encoding, as far as phigate can convert it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientEncoding {
    /// UTF8 (and SQL_ASCII, whose bytes PostgreSQL does not interpret)
    #[default]
    Utf8,
    /// LATIN1: ISO 8859-1, each byte its code point
    Latin1,
    /// LATIN5: ISO 8859-9, LATIN1 with six Turkish letters
    Latin5,
    /// an encoding of the Encoding Standard
    Standard(&'static Encoding),
    /// an encoding phigate cannot convert (EUC_TW, JOHAB, MULE_INTERNAL, EUC_JIS_2004,
    /// SHIFT_JIS_2004): only ASCII text can be analysed
    Unsupported,
}

/// Text that does not convert between the client encoding and UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("text that the client encoding cannot represent, or that is not valid in it")]
pub struct EncodingError;

/// LATIN5's differences from LATIN1: (byte, character).
const LATIN5: [(u8, char); 6] = [
    (0xd0, 'Ğ'),
    (0xdd, 'İ'),
    (0xde, 'Ş'),
    (0xf0, 'ğ'),
    (0xfd, 'ı'),
    (0xfe, 'ş'),
];

impl ClientEncoding {
    /// The encoding PostgreSQL names `name` (as in ParameterStatus `client_encoding`).
    pub(crate) fn from_name(name: &str) -> Self {
        let upper = name.to_ascii_uppercase().replace(['-', '_'], "");
        let standard =
            |label: &[u8]| Encoding::for_label(label).map_or(Self::Unsupported, Self::Standard);
        match upper.as_str() {
            "UTF8" | "UNICODE" | "SQLASCII" => Self::Utf8,
            "LATIN1" | "ISO88591" => Self::Latin1,
            "LATIN5" | "ISO88599" => Self::Latin5,
            "LATIN2" | "ISO88592" => standard(b"iso-8859-2"),
            "LATIN3" | "ISO88593" => standard(b"iso-8859-3"),
            "LATIN4" | "ISO88594" => standard(b"iso-8859-4"),
            "ISO88595" => standard(b"iso-8859-5"),
            "ISO88596" => standard(b"iso-8859-6"),
            "ISO88597" => standard(b"iso-8859-7"),
            "ISO88598" => standard(b"iso-8859-8"),
            "LATIN6" | "ISO885910" => standard(b"iso-8859-10"),
            "LATIN7" | "ISO885913" => standard(b"iso-8859-13"),
            "LATIN8" | "ISO885914" => standard(b"iso-8859-14"),
            "LATIN9" | "ISO885915" => standard(b"iso-8859-15"),
            "LATIN10" | "ISO885916" => standard(b"iso-8859-16"),
            "WIN866" | "ALT" => standard(b"ibm866"),
            "WIN874" => standard(b"windows-874"),
            "WIN1250" => standard(b"windows-1250"),
            "WIN1251" | "WIN" => standard(b"windows-1251"),
            "WIN1252" => standard(b"windows-1252"),
            "WIN1253" => standard(b"windows-1253"),
            "WIN1254" => standard(b"windows-1254"),
            "WIN1255" => standard(b"windows-1255"),
            "WIN1256" => standard(b"windows-1256"),
            "WIN1257" => standard(b"windows-1257"),
            "WIN1258" | "ABC" | "TCVN" | "TCVN5712" | "VSCII" => standard(b"windows-1258"),
            "KOI8R" | "KOI8" => standard(b"koi8-r"),
            "KOI8U" => standard(b"koi8-u"),
            "EUCJP" => standard(b"euc-jp"),
            "EUCKR" | "UHC" | "WIN949" => standard(b"euc-kr"),
            "EUCCN" | "GBK" | "WIN936" => standard(b"gbk"),
            "GB18030" => standard(b"gb18030"),
            "BIG5" | "WIN950" => standard(b"big5"),
            "SJIS" | "SHIFTJIS" | "MSKANJI" | "WIN932" => standard(b"shift_jis"),
            _ => Self::Unsupported,
        }
    }

    /// False for the client-only encodings whose multi-byte characters may hold bytes
    /// that look like ASCII (`\`, a delimiter): SJIS, BIG5, GBK, GB18030, UHC. (EUC_KR and
    /// EUC_CN, read with the UHC and GBK tables, count as such too.)
    pub(crate) fn ascii_safe(self) -> bool {
        match self {
            Self::Standard(e) => ![
                encoding_rs::SHIFT_JIS,
                encoding_rs::BIG5,
                encoding_rs::GBK,
                encoding_rs::GB18030,
                encoding_rs::EUC_KR,
            ]
            .contains(&e),
            _ => true,
        }
    }

    /// True when text needs no conversion.
    pub(crate) fn is_utf8(self) -> bool {
        self == Self::Utf8
    }

    /// Client bytes as UTF-8 text.
    pub fn decode(self, bytes: &[u8]) -> Result<Cow<'_, str>, EncodingError> {
        if bytes.is_ascii() {
            return std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| EncodingError);
        }
        match self {
            Self::Utf8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| EncodingError),
            Self::Latin1 => Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())),
            Self::Latin5 => Ok(Cow::Owned(
                bytes
                    .iter()
                    .map(|&b| {
                        LATIN5
                            .iter()
                            .find(|(x, _)| *x == b)
                            .map_or(char::from(b), |(_, c)| *c)
                    })
                    .collect(),
            )),
            Self::Standard(e) => e
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or(EncodingError),
            Self::Unsupported => Err(EncodingError),
        }
    }

    /// UTF-8 text as client bytes.
    pub fn encode(self, text: &str) -> Result<Cow<'_, [u8]>, EncodingError> {
        if text.is_ascii() || self == Self::Utf8 {
            return Ok(Cow::Borrowed(text.as_bytes()));
        }
        match self {
            Self::Utf8 => Ok(Cow::Borrowed(text.as_bytes())),
            Self::Latin1 | Self::Latin5 => text
                .chars()
                .map(|c| {
                    let special = LATIN5.iter().find(|(_, x)| *x == c).map(|(b, _)| *b);
                    match (self, special) {
                        (Self::Latin5, Some(b)) => Ok(b),
                        (Self::Latin5, None)
                            if LATIN5.iter().any(|(b, _)| u32::from(*b) == u32::from(c)) =>
                        {
                            Err(EncodingError)
                        }
                        _ => u8::try_from(u32::from(c)).map_err(|_| EncodingError),
                    }
                })
                .collect::<Result<Vec<u8>, _>>()
                .map(Cow::Owned),
            Self::Standard(e) => {
                let (bytes, _, unmappable) = e.encode(text);
                if unmappable {
                    Err(EncodingError)
                } else {
                    Ok(bytes)
                }
            }
            Self::Unsupported => Err(EncodingError),
        }
    }

    /// Client bytes as UTF-8 bytes.
    pub(crate) fn to_utf8(self, bytes: &[u8]) -> Result<Cow<'_, [u8]>, EncodingError> {
        Ok(match self.decode(bytes)? {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        })
    }

    /// UTF-8 bytes as client bytes.
    pub(crate) fn utf8_to_client(self, bytes: &[u8]) -> Result<Vec<u8>, EncodingError> {
        let text = std::str::from_utf8(bytes).map_err(|_| EncodingError)?;
        self.encode(text).map(Cow::into_owned)
    }
}

/// Where the text of a frontend message is: (bytes before it, NUL-terminated strings).
fn text_fields(tag: u8) -> Option<(usize, usize)> {
    match tag {
        b'Q' | b'E' => Some((0, 1)),
        b'P' | b'B' => Some((0, 2)),
        b'D' | b'C' => Some((1, 1)),
        _ => None,
    }
}

/// The body of a frontend message with its text (SQL, statement and portal names) passed
/// through `convert`; `None` when the message holds no text.
fn convert_body(
    tag: u8,
    body: &[u8],
    convert: impl Fn(&[u8]) -> Result<Vec<u8>, EncodingError>,
) -> Result<Option<Vec<u8>>, EncodingError> {
    let Some((skip, strings)) = text_fields(tag) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(body.len() + 16);
    let head = body.get(..skip).ok_or(EncodingError)?;
    out.extend_from_slice(head);
    let mut rest = &body[skip..];
    for _ in 0..strings {
        let end = rest.iter().position(|&b| b == 0).ok_or(EncodingError)?;
        out.extend_from_slice(&convert(&rest[..end])?);
        out.push(0);
        rest = &rest[end + 1..];
    }
    out.extend_from_slice(rest);
    Ok(Some(out))
}

impl ClientEncoding {
    /// A client message's body with its text in UTF-8, for analysis; `None` when it needs
    /// no conversion (UTF-8 session, ASCII text, or a message without text).
    pub(crate) fn frontend_to_utf8(
        self,
        tag: u8,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, EncodingError> {
        if self.is_utf8() || body.is_ascii() {
            return Ok(None);
        }
        convert_body(tag, body, |t| self.to_utf8(t).map(Cow::into_owned))
    }

    /// Frontend messages phigate wrote upstream (whole frames, in UTF-8) with their text in
    /// the client encoding again.
    pub(crate) fn upstream_from_utf8(self, frames: &[u8]) -> Result<Vec<u8>, EncodingError> {
        let mut out = Vec::with_capacity(frames.len() + 16);
        let mut rest = frames;
        while !rest.is_empty() {
            let len = rest
                .get(1..5)
                .and_then(|l| usize::try_from(u32::from_be_bytes(l.try_into().ok()?)).ok())
                .ok_or(EncodingError)?;
            let frame = rest.get(..1 + len).ok_or(EncodingError)?;
            let (tag, body) = (frame[0], &frame[5..]);
            match convert_body(tag, body, |t| self.utf8_to_client(t))? {
                Some(b) if !body.is_ascii() => {
                    out.push(tag);
                    out.extend_from_slice(
                        &u32::try_from(b.len() + 4)
                            .map_err(|_| EncodingError)?
                            .to_be_bytes(),
                    );
                    out.extend_from_slice(&b);
                }
                _ => out.extend_from_slice(frame),
            }
            rest = &rest[1 + len..];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_text_converts_both_ways() {
        let latin1 = ClientEncoding::Latin1;
        let mut body = b"stm\xe9\0SELECT 'Jos\xe9'\0".to_vec();
        body.extend_from_slice(&[0, 1, 0, 0, 0, 25]);
        let utf8 = latin1.frontend_to_utf8(b'P', &body).unwrap().unwrap();
        assert!(utf8.starts_with("stmé\0SELECT 'José'\0".as_bytes()));
        assert!(utf8.ends_with(&[0, 1, 0, 0, 0, 25]));
        let mut frame = vec![b'P'];
        frame.extend_from_slice(&((utf8.len() + 4) as u32).to_be_bytes());
        frame.extend_from_slice(&utf8);
        frame.extend_from_slice(&[b'S', 0, 0, 0, 4]);
        let back = latin1.upstream_from_utf8(&frame).unwrap();
        assert_eq!(&back[5..5 + body.len()], &body[..]);
        assert_eq!(&back[back.len() - 5..], &[b'S', 0, 0, 0, 4]);
        assert_eq!(latin1.frontend_to_utf8(b'Q', b"select 1\0").unwrap(), None);
        assert_eq!(
            ClientEncoding::Utf8
                .frontend_to_utf8(b'Q', "é\0".as_bytes())
                .unwrap(),
            None
        );
    }

    #[test]
    fn names_and_round_trips() {
        for (name, text) in [
            ("LATIN1", "José Müller ÿ"),
            ("latin5", "Şükrü Ğıdık İ"),
            ("WIN1252", "José “quoted” €"),
            ("WIN1251", "Иван Петров"),
            ("LATIN2", "Łódź"),
            ("SJIS", "山田太郎"),
            ("EUC_JP", "山田太郎"),
            ("GB18030", "王小明"),
            ("BIG5", "王小明"),
            ("UHC", "김철수"),
            ("KOI8R", "Иван"),
        ] {
            let e = ClientEncoding::from_name(name);
            assert!(!matches!(e, ClientEncoding::Unsupported), "{name}");
            let bytes = e.encode(text).unwrap();
            assert_ne!(&bytes[..], text.as_bytes(), "{name}");
            assert_eq!(e.decode(&bytes).unwrap(), text, "{name}");
        }
        assert_eq!(ClientEncoding::from_name("UTF8"), ClientEncoding::Utf8);
        assert_eq!(
            ClientEncoding::from_name("EUC_TW"),
            ClientEncoding::Unsupported
        );
    }

    #[test]
    fn latin1_is_iso_8859_1_not_windows_1252() {
        let e = ClientEncoding::Latin1;
        assert_eq!(e.decode(&[0x80]).unwrap(), "\u{80}");
        assert_eq!(e.decode(&[0xe9]).unwrap(), "é");
        assert!(e.encode("€").is_err());
        assert!(ClientEncoding::Latin5.encode("Ð").is_err());
    }

    #[test]
    fn what_does_not_convert_is_an_error() {
        let sjis = ClientEncoding::from_name("SJIS");
        assert!(sjis.decode(&[0x81]).is_err());
        assert!(ClientEncoding::Utf8.decode(&[0xff]).is_err());
        assert!(ClientEncoding::Unsupported.decode(b"plain ascii").is_ok());
        assert!(ClientEncoding::Unsupported.decode(&[0xe9]).is_err());
    }
}
