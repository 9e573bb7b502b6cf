//! The COPY text and CSV formats: a row split into fields (with PostgreSQL's escapes and
//! quoting undone) and a value written back in the same format. Pure: bytes in, bytes out.

/// The options of a COPY in text, CSV or binary format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// PostgreSQL's binary format (the other options do not apply)
    pub binary: bool,
    /// CSV rather than PostgreSQL's text format
    pub csv: bool,
    /// the field delimiter
    pub delimiter: u8,
    /// the string that stands for NULL
    pub null: String,
    /// the first line is a header (CSV)
    pub header: bool,
    /// the CSV quote character
    pub quote: u8,
    /// the CSV escape character
    pub escape: u8,
}

impl CopyFormat {
    /// PostgreSQL's text format with its defaults.
    pub fn text() -> Self {
        Self {
            binary: false,
            csv: false,
            delimiter: b'\t',
            null: "\\N".to_owned(),
            header: false,
            quote: b'"',
            escape: b'"',
        }
    }

    /// PostgreSQL's binary format.
    pub fn binary() -> Self {
        Self {
            binary: true,
            ..Self::text()
        }
    }
}

/// One field of a row: its raw bytes as they appeared, and its value.
pub struct Field<'a> {
    /// the field as it appeared in the row
    pub raw: &'a [u8],
    /// its value; `None` is NULL
    pub value: Option<Vec<u8>>,
}

/// Splits one row (without its line end) into fields.
pub fn fields<'a>(row: &'a [u8], f: &CopyFormat) -> Vec<Field<'a>> {
    if f.csv {
        csv_fields(row, f)
    } else {
        text_fields(row, f)
    }
}

fn text_fields<'a>(row: &'a [u8], f: &CopyFormat) -> Vec<Field<'a>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i <= row.len() {
        if i == row.len() || row[i] == f.delimiter {
            let raw = &row[start..i];
            let value = (raw != f.null.as_bytes()).then(|| text_unescape(raw));
            out.push(Field { raw, value });
            start = i + 1;
        } else if row[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    out
}

fn text_unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 == raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let mut v = 0u8;
                let mut digits = 0;
                while digits < 2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d as u8;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(v);
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn csv_fields<'a>(row: &'a [u8], f: &CopyFormat) -> Vec<Field<'a>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        let mut value = Vec::new();
        let mut quoted = false;
        let mut in_quotes = false;
        while i < row.len() {
            let b = row[i];
            if in_quotes {
                if b == f.escape && f.escape != f.quote && row.get(i + 1).is_some() {
                    value.push(row[i + 1]);
                    i += 2;
                    continue;
                }
                if b == f.quote {
                    if f.escape == f.quote && row.get(i + 1) == Some(&f.quote) {
                        value.push(f.quote);
                        i += 2;
                        continue;
                    }
                    in_quotes = false;
                    i += 1;
                    continue;
                }
                value.push(b);
            } else if b == f.delimiter {
                break;
            } else if b == f.quote {
                in_quotes = true;
                quoted = true;
            } else {
                value.push(b);
            }
            i += 1;
        }
        let raw = &row[start..i];
        let is_null = !quoted && raw == f.null.as_bytes();
        out.push(Field {
            raw,
            value: (!is_null).then_some(value),
        });
        if i >= row.len() {
            return out;
        }
        i += 1;
    }
}

/// Escapes a value for the text format.
fn text_escape(v: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &b in v {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' if delimiter == b'\t' => out.extend_from_slice(b"\\t"),
            d if d == delimiter => {
                out.push(b'\\');
                out.push(d);
            }
            other => out.push(other),
        }
    }
}

/// Quotes a value for CSV when it needs quoting (as PostgreSQL does).
fn csv_escape(v: &[u8], f: &CopyFormat, out: &mut Vec<u8>) {
    let needs = v.is_empty()
        || v == f.null.as_bytes()
        || v.iter()
            .any(|&b| b == f.delimiter || b == f.quote || b == b'\n' || b == b'\r');
    if !needs {
        out.extend_from_slice(v);
        return;
    }
    out.push(f.quote);
    for &b in v {
        if b == f.quote || b == f.escape {
            out.push(f.escape);
        }
        out.push(b);
    }
    out.push(f.quote);
}

/// Writes a value (not NULL) in the COPY format.
pub fn put_value(v: &[u8], f: &CopyFormat, out: &mut Vec<u8>) {
    if f.csv {
        csv_escape(v, f, out);
    } else {
        text_escape(v, f.delimiter, out);
    }
}

/// Where each complete row of `buf` ends (just after its newline). A CSV row may hold
/// newlines inside quotes.
pub(crate) fn row_ends(buf: &[u8], f: &CopyFormat) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut in_quotes = false;
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        if f.csv {
            if in_quotes && b == f.escape && f.escape != f.quote {
                i += 2;
                continue;
            }
            if b == f.quote {
                in_quotes = !in_quotes;
            }
        } else if b == b'\\' {
            i += 2;
            continue;
        }
        if b == b'\n' && !in_quotes {
            ends.push(i + 1);
        }
        i += 1;
    }
    ends
}

/// Rewrites one row (without its line end) into `out`: each non-NULL field `i` replaced by
/// what `transform(i, value)` gives (`None`: kept as it appeared).
pub(crate) fn rewrite_row<E>(
    row: &[u8],
    f: &CopyFormat,
    mut transform: impl FnMut(usize, &[u8]) -> Option<Result<Vec<u8>, E>>,
    out: &mut Vec<u8>,
) -> Result<(), E> {
    for (i, field) in fields(row, f).into_iter().enumerate() {
        if i > 0 {
            out.push(f.delimiter);
        }
        let new = match &field.value {
            Some(v) => transform(i, v).transpose()?,
            None => None,
        };
        match new {
            Some(v) => put_value(&v, f, out),
            None => out.extend_from_slice(field.raw),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> CopyFormat {
        CopyFormat::text()
    }

    fn csv() -> CopyFormat {
        CopyFormat {
            binary: false,
            csv: true,
            delimiter: b',',
            null: String::new(),
            header: false,
            quote: b'"',
            escape: b'"',
        }
    }

    fn values(row: &[u8], f: &CopyFormat) -> Vec<Option<String>> {
        fields(row, f)
            .into_iter()
            .map(|f| f.value.map(|v| String::from_utf8(v).expect("utf8")))
            .collect()
    }

    #[test]
    fn text_format_fields() {
        let v = values(b"1\ta\\tb\\\\c\\n\t\\N\t\\101\\x41", &text());
        assert_eq!(
            v,
            [
                Some("1".into()),
                Some("a\tb\\c\n".into()),
                None,
                Some("AA".into())
            ]
        );
        let mut out = Vec::new();
        text_escape(b"a\tb\\c\n", b'\t', &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\n");
    }

    #[test]
    fn csv_fields_and_quoting() {
        let v = values(b"1,\"a,\"\"b\"\"\",,\"\"", &csv());
        assert_eq!(
            v,
            [
                Some("1".into()),
                Some("a,\"b\"".into()),
                None,
                Some(String::new())
            ]
        );
        let mut out = Vec::new();
        csv_escape(b"a,\"b\"", &csv(), &mut out);
        assert_eq!(out, b"\"a,\"\"b\"\"\"");
        out.clear();
        csv_escape(b"", &csv(), &mut out);
        assert_eq!(out, b"\"\"");
    }
}
