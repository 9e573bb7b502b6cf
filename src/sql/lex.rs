//! A single-pass PostgreSQL lexer for the statement firewall: words (keywords and
//! identifiers, as written: compare them ignoring ASCII case), string literals, statement
//! boundaries. Comments, whitespace and numbers are skipped. Words borrow from the text.

use std::borrow::Cow;

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token<'a> {
    /// a keyword or identifier as written; `quoted` for `"..."`
    Word { text: Cow<'a, str>, quoted: bool },
    /// a string literal of any form; its value only for a plain `'...'` without
    /// backslashes (which reads the same whatever `standard_conforming_strings` says)
    Str(Option<Cow<'a, str>>),
    /// `;`
    End,
    /// a Unicode-escaped identifier, `U&"..."`: its name cannot be read without decoding
    UnicodeIdent,
    /// any other character (operators, parentheses, `$n`, numbers)
    Punct(u8),
}

/// True when `t` is the keyword `w`: an unquoted word, in any case.
pub(super) fn is_keyword(t: Option<&Token<'_>>, w: &str) -> bool {
    matches!(t, Some(Token::Word { text, quoted: false }) if text.eq_ignore_ascii_case(w))
}

/// True when `t` names `name`, quoted or not, in any case (as PostgreSQL looks up setting
/// and function names).
pub(super) fn is_name(t: Option<&Token<'_>>, name: &str) -> bool {
    matches!(t, Some(Token::Word { text, .. }) if text.eq_ignore_ascii_case(name))
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The tokens of `sql`; `None` when a string, quoted identifier or comment is not closed.
pub(super) fn tokens(sql: &str) -> Option<Vec<Token<'_>>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = comment_end(b, i)?,
            b'\'' => {
                let end = string_end(b, i + 1, false)?;
                let raw = &sql[i + 1..end - 1];
                let value = (!raw.contains('\\')).then(|| {
                    if raw.contains("''") {
                        Cow::Owned(raw.replace("''", "'"))
                    } else {
                        Cow::Borrowed(raw)
                    }
                });
                i = end;
                out.push(Token::Str(value));
            }
            b'"' => {
                let (text, end) = quoted_ident(sql, i + 1)?;
                i = end;
                out.push(Token::Word { text, quoted: true });
            }
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(Token::Punct(b'$'));
            }
            b'$' => {
                // a dollar-quoted string: $tag$ ... $tag$
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|x| !ident_byte(*x) || *x == b'$')
                    .map(|p| i + 1 + p)?;
                if b[tag_end] != b'$' {
                    out.push(Token::Punct(b'$'));
                    i += 1;
                    continue;
                }
                let tag = &b[i..=tag_end];
                let body = tag_end + 1;
                let close = b[body..].windows(tag.len()).position(|w| w == tag)?;
                i = body + close + tag.len();
                out.push(Token::Str(None));
            }
            b';' => {
                out.push(Token::End);
                i += 1;
            }
            c if ident_start(c) => {
                let start = i;
                while i < b.len() && ident_byte(b[i]) {
                    i += 1;
                }
                let word = &sql[start..i];
                let next = b.get(i).copied();
                let prefix = if word.len() == 1 {
                    word.as_bytes()[0].to_ascii_lowercase()
                } else {
                    0
                };
                match (prefix, next) {
                    (b'e', Some(b'\'')) => {
                        i = string_end(b, i + 1, true)?;
                        out.push(Token::Str(None));
                    }
                    (b'b' | b'x' | b'n', Some(b'\'')) => {
                        i = string_end(b, i + 1, false)?;
                        out.push(Token::Str(None));
                    }
                    (b'u', Some(b'&')) if matches!(b.get(i + 1), Some(b'\'' | b'"')) => {
                        if b[i + 1] == b'\'' {
                            i = string_end(b, i + 2, false)?;
                            out.push(Token::Str(None));
                        } else {
                            let (_, end) = quoted_ident(sql, i + 2)?;
                            i = end;
                            out.push(Token::UnicodeIdent);
                        }
                    }
                    _ => out.push(Token::Word {
                        text: Cow::Borrowed(word),
                        quoted: false,
                    }),
                }
            }
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push(Token::Punct(b'0'));
            }
            c => {
                out.push(Token::Punct(c));
                i += 1;
            }
        }
    }
    Some(out)
}

/// The index after a (possibly nested) `/* ... */` comment starting at `i`; `None` when it
/// is not closed.
pub(crate) fn comment_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The index after the closing quote of a string starting at `i` (after the opening quote).
fn string_end(b: &[u8], mut i: usize, escapes: bool) -> Option<usize> {
    while i < b.len() {
        match b[i] {
            b'\\' if escapes => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn quoted_ident(sql: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let b = sql.as_bytes();
    let mut i = start;
    let mut doubled = false;
    while i < b.len() {
        if b[i] == b'"' {
            if b.get(i + 1) == Some(&b'"') {
                doubled = true;
                i += 2;
                continue;
            }
            let raw = &sql[start..i];
            let text = if doubled {
                Cow::Owned(raw.replace("\"\"", "\""))
            } else {
                Cow::Borrowed(raw)
            };
            return Some((text, i + 1));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<String> {
        tokens(sql)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Token::Word { text, quoted } => {
                    if quoted {
                        format!("\"{text}\"")
                    } else {
                        text.into_owned()
                    }
                }
                Token::Str(Some(v)) => format!("'{v}'"),
                Token::Str(None) => "'s'".into(),
                Token::End => ";".into(),
                Token::UnicodeIdent => "U&".into(),
                Token::Punct(c) => (c as char).to_string(),
            })
            .collect()
    }

    #[test]
    fn words_strings_comments_and_boundaries() {
        assert_eq!(
            words(
                "SELECT /* a /* nested */ c */ \"Set_Config\"(E'it\\'s', $x$;$x$) -- x;\n; Reset ALL"
            ),
            [
                "SELECT",
                "\"Set_Config\"",
                "(",
                "'s'",
                ",",
                "'s'",
                ")",
                ";",
                "Reset",
                "ALL"
            ]
        );
        assert_eq!(
            words("select u&\"\\0070atients\", U&'x', b'01', $1, 1.5e3, 'it''s', 'a\\b'"),
            [
                "select", "U&", ",", "'s'", ",", "'s'", ",", "$", ",", "0", ",", "'it's'", ",",
                "'s'"
            ]
        );
        assert_eq!(words("select \"a\"\"b\""), ["select", "\"a\"b\""]);
        for open in [
            "select 'x",
            "select \"x",
            "/* x",
            "select $a$ x",
            "select E'\\'",
        ] {
            assert!(tokens(open).is_none(), "{open}");
        }
    }
}
