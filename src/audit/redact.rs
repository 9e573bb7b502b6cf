//! Statements as the audit log keeps them: every literal replaced by `?` (its value kept
//! aside only to be hashed), comments removed, whitespace collapsed, and a simple query
//! split into its statements. A single pass over the bytes, no parser: it runs for every
//! statement.

/// One statement, redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    /// the text with literals replaced by `?` (`$n` parameters stay)
    pub text: String,
    /// the literal values, in order (to be hashed, never stored)
    pub values: Vec<Vec<u8>>,
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Splits `sql` into statements (at top-level semicolons) and redacts each.
pub fn redact(sql: &str) -> Vec<Redacted> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut text: Vec<u8> = Vec::with_capacity(b.len());
    let mut values = Vec::new();
    let mut i = 0;
    let space = |text: &mut Vec<u8>| {
        if text.last().is_some_and(|c| *c != b' ') {
            text.push(b' ');
        }
    };
    while i < b.len() {
        let c = b[i];
        let prev_ident = i > 0 && ident_byte(b[i - 1]);
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                space(&mut text);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = crate::sql::comment_end(b, i).unwrap_or(b.len());
                space(&mut text);
            }
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && !(i > 1 && ident_byte(b[i - 2]));
                if escapes
                    || (i > 0 && matches!(b[i - 1], b'b' | b'B' | b'x' | b'X' | b'n' | b'N'))
                        && !(i > 1 && ident_byte(b[i - 2]))
                {
                    // the prefix letter is part of the literal
                    text.pop();
                }
                let (value, end) = quoted(b, i, escapes);
                values.push(value);
                text.push(b'?');
                i = end;
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                text.extend_from_slice(&b[start..i]);
            }
            b'$' if !prev_ident => {
                if let Some(len) = dollar_tag(&b[i..]) {
                    let tag = &b[i..i + len];
                    let body_start = i + len;
                    let end = find(&b[body_start..], tag).map_or(b.len(), |p| body_start + p);
                    values.push(b[body_start..end].to_vec());
                    text.push(b'?');
                    i = (end + len).min(b.len());
                } else {
                    // a parameter ($1) or a lone dollar
                    text.push(c);
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        text.push(b[i]);
                        i += 1;
                    }
                }
            }
            b'0'..=b'9' if !prev_ident => {
                let start = i;
                i = number_end(b, i);
                values.push(b[start..i].to_vec());
                text.push(b'?');
            }
            b'.' if !prev_ident && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let start = i;
                i = number_end(b, i);
                values.push(b[start..i].to_vec());
                text.push(b'?');
            }
            b';' => {
                finish(&mut text, &mut values, &mut out);
                i += 1;
            }
            c if c.is_ascii_whitespace() => {
                space(&mut text);
                i += 1;
            }
            _ => {
                text.push(c);
                i += 1;
            }
        }
    }
    finish(&mut text, &mut values, &mut out);
    out
}

fn finish(text: &mut Vec<u8>, values: &mut Vec<Vec<u8>>, out: &mut Vec<Redacted>) {
    let s = String::from_utf8_lossy(text).trim().to_owned();
    if !s.is_empty() {
        out.push(Redacted {
            text: s,
            values: std::mem::take(values),
        });
    }
    text.clear();
    values.clear();
}

/// A single-quoted literal starting at `i`: its value and the index after it.
fn quoted(b: &[u8], i: usize, escapes: bool) -> (Vec<u8>, usize) {
    let mut value = Vec::new();
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if escapes && j + 1 < b.len() => {
                value.push(b[j + 1]);
                j += 2;
            }
            b'\'' if b.get(j + 1) == Some(&b'\'') => {
                value.push(b'\'');
                j += 2;
            }
            b'\'' => return (value, j + 1),
            other => {
                value.push(other);
                j += 1;
            }
        }
    }
    (value, j)
}

/// The length of a `$tag$` opening at the start of `b`, if it is one.
fn dollar_tag(b: &[u8]) -> Option<usize> {
    let end = b[1..].iter().position(|c| *c == b'$')? + 1;
    let tag = &b[1..end];
    let valid = tag
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80)
        && !tag.first().is_some_and(u8::is_ascii_digit);
    valid.then_some(end + 1)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn number_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
        if matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
            i += 1;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        redact(sql).into_iter().map(|r| r.text).collect()
    }

    #[test]
    fn literals_become_placeholders_and_values_are_kept_aside() {
        let r =
            redact("SELECT * FROM patients WHERE ssn = '999-12-3456' AND age > 42.5 AND id = $1");
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].text,
            "SELECT * FROM patients WHERE ssn = ? AND age > ? AND id = $1"
        );
        assert_eq!(r[0].values, [b"999-12-3456".to_vec(), b"42.5".to_vec()]);
    }

    #[test]
    fn every_literal_form_and_comment_is_removed() {
        let sql = "select E'it\\'s', 'o''clock', $x$dollar; quoted$x$, X'ff', 1e-3, t1.col2, \"Quoted\"\"id\" -- 999-12-3456\n/* 999 /* nested */ */ from t";
        let r = redact(sql);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            r[0].text,
            "select ?, ?, ?, ?, ?, t1.col2, \"Quoted\"\"id\" from t"
        );
        assert_eq!(
            r[0].values,
            [
                b"it's".to_vec(),
                b"o'clock".to_vec(),
                b"dollar; quoted".to_vec(),
                b"ff".to_vec(),
                b"1e-3".to_vec()
            ]
        );
        assert!(!r[0].text.contains("999"));
    }

    #[test]
    fn simple_queries_split_into_statements() {
        assert_eq!(
            texts("BEGIN; INSERT INTO t VALUES (1, 'a;b');  ; COMMIT"),
            ["BEGIN", "INSERT INTO t VALUES (?, ?)", "COMMIT"]
        );
        assert!(texts("  ;  ").is_empty());
    }
}
