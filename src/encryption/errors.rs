//! The server's errors and notices with the ciphertext in their texts withheld.
//!
//! PostgreSQL prints the values of a row or key in some errors (`Failing row contains
//! (...)`, `Key (ssn)=(...) already exists`, a COPY line in CONTEXT). Through phigate
//! those are envelopes, and a deterministic envelope of a value the client chose is what
//! phigate never hands out: with it anyone could match values against a copy of the
//! database. Each envelope printed in hex (`\x0102...`) becomes `<encrypted>`; a field
//! with one printed as `bytea_output = 'escape'` writes (`\001\002...`), where its end
//! cannot be told, is replaced whole.

use memchr::memmem;

/// What an envelope in a text becomes.
const WITHHELD: &str = "<encrypted>";
/// What a field becomes when it holds an envelope in escape format.
const FIELD_WITHHELD: &str = "(phigate withheld this text: it showed encrypted values)";
/// The start of an envelope in hex output: version 1, then mode 1 or 2.
const HEX: [&[u8]; 2] = [b"\\x0101", b"\\x0102"];
/// The same in escape output.
const ESCAPE: [&[u8]; 2] = [b"\\001\\001", b"\\001\\002"];

/// `raw`, a whole ErrorResponse or NoticeResponse, with its envelopes withheld; `None`
/// when it shows none (or is malformed: it then goes on as it came, and the client reports
/// it).
pub(crate) fn withheld(raw: &[u8]) -> Option<Vec<u8>> {
    let body = raw.get(5..)?;
    if !HEX
        .iter()
        .chain(&ESCAPE)
        .any(|m| memmem::find(body, m).is_some())
    {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    out.push(*raw.first()?);
    out.extend_from_slice(&[0; 4]);
    let mut rest = body;
    while let [kind, tail @ ..] = rest
        && *kind != 0
    {
        let end = memchr::memchr(0, tail)?;
        out.push(*kind);
        field(&tail[..end], &mut out);
        out.push(0);
        rest = &tail[end + 1..];
    }
    out.push(0);
    let len = u32::try_from(out.len() - 1).ok()?;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some(out)
}

/// One field's text, its envelopes withheld.
fn field(text: &[u8], out: &mut Vec<u8>) {
    if ESCAPE.iter().any(|m| memmem::find(text, m).is_some()) {
        out.extend_from_slice(FIELD_WITHHELD.as_bytes());
        return;
    }
    let mut at = 0;
    while let Some(start) = next_hex(&text[at..]).map(|i| at + i) {
        out.extend_from_slice(&text[at..start]);
        out.extend_from_slice(WITHHELD.as_bytes());
        let digits = text[start + 2..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        at = start + 2 + digits;
    }
    out.extend_from_slice(&text[at..]);
}

/// Where the next envelope in hex starts in `text`.
fn next_hex(text: &[u8]) -> Option<usize> {
    HEX.iter().filter_map(|m| memmem::find(text, m)).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, text) in fields {
            body.push(*kind);
            body.extend_from_slice(text.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = vec![tag];
        m.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn envelopes_in_hex_become_a_placeholder() {
        let raw = message(
            b'E',
            &[
                (b'S', "ERROR"),
                (b'C', "23502"),
                (b'M', "null value in column \"id\""),
                (
                    b'D',
                    "Failing row contains (null, \\x0102000000010cd22b29..., \\x010100000001e5, 3, \\x0203).",
                ),
            ],
        );
        let want = message(
            b'E',
            &[
                (b'S', "ERROR"),
                (b'C', "23502"),
                (b'M', "null value in column \"id\""),
                (
                    b'D',
                    "Failing row contains (null, <encrypted>..., <encrypted>, 3, \\x0203).",
                ),
            ],
        );
        assert_eq!(withheld(&raw), Some(want));
        let key = message(
            b'N',
            &[(b'D', "Key (ssn)=(\\x0102000000010cd2) already exists.")],
        );
        let want = message(b'N', &[(b'D', "Key (ssn)=(<encrypted>) already exists.")]);
        assert_eq!(withheld(&key), Some(want));
    }

    #[test]
    fn a_field_with_an_envelope_in_escape_format_is_withheld_whole() {
        let raw = message(
            b'E',
            &[
                (b'C', "23502"),
                (
                    b'D',
                    "Failing row contains (null, \\001\\002\\000\\000\\000\\001A, b).",
                ),
            ],
        );
        let want = message(b'E', &[(b'C', "23502"), (b'D', FIELD_WITHHELD)]);
        assert_eq!(withheld(&raw), Some(want));
    }

    #[test]
    fn messages_without_envelopes_or_malformed_ones_go_on_as_they_came() {
        let plain = message(b'E', &[(b'C', "42P01"), (b'D', "bytes \\x0203 and \\x01")]);
        assert_eq!(withheld(&plain), None);
        let mut cut = message(b'E', &[(b'D', "\\x0102ab")]);
        cut.truncate(cut.len() - 2);
        assert_eq!(withheld(&cut), None);
        assert_eq!(withheld(b"E"), None);
    }
}
