//! phigate's one PostgreSQL lexer, a single pass over the bytes: words (keywords and
//! identifiers), quoted identifiers, string literals of every form, numbers, parameters,
//! statement boundaries and punctuation, each with its place in the text. Comments and
//! whitespace are skipped (a lexeme notes whether any came before it).
//!
//! It serves the statement firewall ([`tokens`]), the search for protected table names,
//! and audit redaction (which replaces every literal by `?`). It is lenient: an
//! unterminated string, identifier or comment runs to the end of the text, and
//! [`Lexer::unterminated`] says so (the firewall then refuses the statement).
//!
//! It reads strings as PostgreSQL 15's scanner does: a string followed by whitespace that
//! holds a newline and another quote continues in that quote, in its own form (so an
//! `E'...'` continues with backslash escapes), and a plain `'...'` (or `N'...'`) takes
//! backslash escapes only when `standard_conforming_strings` is off ([`Lexer::escaping`]).

use std::borrow::Cow;

/// The form of a string literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `'...'`
    Plain,
    /// `E'...'`: backslash escapes
    Escaped,
    /// `B'...'`, `X'...'`, `N'...'`
    Prefixed,
    /// `U&'...'`
    Unicode,
    /// `$tag$...$tag$`, with the length of `$tag$`
    Dollar(usize),
}

/// What a lexeme is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// a keyword or unquoted identifier
    Word,
    /// `"..."`
    QuotedIdent,
    /// `U&"..."`: its name cannot be read without decoding
    UnicodeIdent,
    /// a string literal
    Str(Form),
    /// a numeric constant
    Number,
    /// `$n`
    Param,
    /// `;`
    End,
    /// any other character (operators, parentheses, a lone `$`)
    Punct(u8),
}

/// One lexeme: its kind and where it is in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lexeme {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// whitespace or a comment came before it
    pub(crate) spaced: bool,
}

/// The lexemes of a text, in order.
pub(crate) struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    unterminated: bool,
    /// plain and `N'...'` strings take backslash escapes (`standard_conforming_strings`
    /// off)
    escaping: bool,
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// A byte that continues an identifier (letters, digits, `_`, `$`, any non-ASCII byte).
pub(crate) fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl<'a> Lexer<'a> {
    /// The lexemes of `sql` as PostgreSQL reads it with `standard_conforming_strings` on.
    pub(crate) fn new(sql: &'a str) -> Self {
        Self {
            b: sql.as_bytes(),
            i: 0,
            unterminated: false,
            escaping: false,
        }
    }

    /// The lexemes of `sql` as PostgreSQL reads it with `standard_conforming_strings` off.
    pub(crate) fn escaping(sql: &'a str) -> Self {
        Self {
            escaping: true,
            ..Self::new(sql)
        }
    }

    /// True once a string, identifier or comment ran to the end of the text unclosed.
    pub(crate) fn unterminated(&self) -> bool {
        self.unterminated
    }

    /// Skips whitespace and comments; true when there were any.
    fn skip_space(&mut self) -> bool {
        let start = self.i;
        let b = self.b;
        while self.i < b.len() {
            match b[self.i] {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.i += 1,
                b'-' if b.get(self.i + 1) == Some(&b'-') => self.i = line_end(b, self.i),
                b'/' if b.get(self.i + 1) == Some(&b'*') => {
                    self.i = self.closed(comment_end(b, self.i));
                }
                _ => break,
            }
        }
        self.i > start
    }

    /// `end`, or the end of the text (noted) when the construct is not closed.
    fn closed(&mut self, end: Option<usize>) -> usize {
        end.unwrap_or_else(|| {
            self.unterminated = true;
            self.b.len()
        })
    }

    /// The lexeme starting at `self.i` (not a space): its kind and end.
    fn lexeme(&mut self) -> (Kind, usize) {
        let (b, i) = (self.b, self.i);
        match b[i] {
            b'\'' => (Kind::Str(Form::Plain), self.string(i + 1, self.escaping)),
            b'"' => (Kind::QuotedIdent, self.quoted_ident(i + 1)),
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                (Kind::Param, digits_end(b, i + 1))
            }
            b'$' => match dollar_tag(&b[i..]) {
                Some(len) => {
                    let tag = &b[i..i + len];
                    let close = find(&b[i + len..], tag).map(|p| i + len + p + len);
                    (Kind::Str(Form::Dollar(len)), self.closed(close))
                }
                None => (Kind::Punct(b'$'), i + 1),
            },
            b';' => (Kind::End, i + 1),
            c if ident_start(c) => self.word(i),
            c if c.is_ascii_digit() => (Kind::Number, number_end(b, i)),
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                (Kind::Number, number_end(b, i))
            }
            c => (Kind::Punct(c), i + 1),
        }
    }

    /// A word, or the string or identifier a one-letter prefix introduces.
    fn word(&mut self, start: usize) -> (Kind, usize) {
        let b = self.b;
        let mut i = start;
        while i < b.len() && ident_byte(b[i]) {
            i += 1;
        }
        let prefix = if i - start == 1 {
            b[start].to_ascii_lowercase()
        } else {
            0
        };
        match (prefix, b.get(i)) {
            (b'e', Some(b'\'')) => (Kind::Str(Form::Escaped), self.string(i + 1, true)),
            (b'n', Some(b'\'')) => (Kind::Str(Form::Prefixed), self.string(i + 1, self.escaping)),
            (b'b' | b'x', Some(b'\'')) => (Kind::Str(Form::Prefixed), self.string(i + 1, false)),
            (b'u', Some(b'&')) => match b.get(i + 1) {
                Some(b'\'') => (Kind::Str(Form::Unicode), self.string(i + 2, false)),
                Some(b'"') => (Kind::UnicodeIdent, self.quoted_ident(i + 2)),
                _ => (Kind::Word, i),
            },
            _ => (Kind::Word, i),
        }
    }

    /// The index after the closing quote of a string whose body starts at `i` (and of the
    /// last of the quotes it continues in).
    fn string(&mut self, mut i: usize, escapes: bool) -> usize {
        let b = self.b;
        while i < b.len() {
            match b[i] {
                b'\\' if escapes => i += 2,
                b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                b'\'' => match continuation(b, i + 1) {
                    Some(next) => i = next,
                    None => return i + 1,
                },
                _ => i += 1,
            }
        }
        self.closed(None)
    }

    /// The index after the closing quote of an identifier whose body starts at `i`.
    fn quoted_ident(&mut self, mut i: usize) -> usize {
        let b = self.b;
        while i < b.len() {
            if b[i] == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return i + 1;
            }
            i += 1;
        }
        self.closed(None)
    }
}

impl Iterator for Lexer<'_> {
    type Item = Lexeme;

    fn next(&mut self) -> Option<Lexeme> {
        let spaced = self.skip_space();
        if self.i >= self.b.len() {
            return None;
        }
        let start = self.i;
        let (kind, end) = self.lexeme();
        self.i = end.clamp(start + 1, self.b.len());
        Some(Lexeme {
            kind,
            start,
            end: self.i,
            spaced,
        })
    }
}

/// Where a string whose closing quote ends at `i` continues: the index after the next
/// quote, when only whitespace and `--` comments holding a newline come between
/// (PostgreSQL's `quotecontinue`; a `/* */` comment ends the string).
fn continuation(b: &[u8], mut i: usize) -> Option<usize> {
    let mut newline = false;
    while i < b.len() {
        match b[i] {
            b'\n' | b'\r' => newline = true,
            b' ' | b'\t' | b'\x0c' => {}
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = line_end(b, i);
                continue;
            }
            b'\'' if newline => return Some(i + 1),
            _ => return None,
        }
        i += 1;
    }
    None
}

/// Where a `--` comment starting at `i` ends: at the next newline or carriage return (both
/// end a line for PostgreSQL), or the end of the text.
fn line_end(b: &[u8], i: usize) -> usize {
    memchr::memchr2(b'\n', b'\r', &b[i..]).map_or(b.len(), |p| i + p)
}

/// The index after a (possibly nested) `/* ... */` comment starting at `i`; `None` when it
/// is not closed.
fn comment_end(b: &[u8], mut i: usize) -> Option<usize> {
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

/// The number of parameters PostgreSQL counts in `sql`: the highest `$n` it holds
/// (outside strings, quoted names and comments), 0 for none.
pub(crate) fn arity(sql: &str) -> usize {
    Lexer::new(sql)
        .filter(|l| l.kind == Kind::Param)
        .filter_map(|l| sql[l.start + 1..l.end].parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

fn digits_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

fn number_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
        if matches!(b[i], b'e' | b'E') {
            // an exponent only with its digits: PostgreSQL gives back an `e` without
            // them, so `1e'...'` is 1 and an E'...' string
            let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
            if !b.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
                return i;
            }
            i += sign;
        }
        i += 1;
    }
    i
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

/// True when `hay` contains `needle` (lowercase ASCII) in any case: a cheap first look,
/// run on every statement, before a text is lexed.
pub(crate) fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), hay).any(|i| {
        hay.get(i + 1..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(rest))
    })
}

/// False when `sql` surely holds a literal (a quote, or a digit starting a word): a
/// cheap first look, before a text is lexed, so that a statement with values is not
/// looked up among the texts kept without them.
pub(crate) fn literal_free(sql: &[u8]) -> bool {
    let mut prev = b' ';
    for &b in sql {
        if b == b'\'' || (b.is_ascii_digit() && !ident_byte(prev)) {
            return false;
        }
        prev = b;
    }
    true
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of a string literal lexeme (for hashing, never for storing): its body with
/// quotes undoubled, the quotes it continues in joined and, in an `E''` string, backslash
/// escapes taken literally. An unterminated literal runs to the end of the text.
pub(crate) fn literal_value(sql: &str, l: &Lexeme) -> Vec<u8> {
    let raw = &sql.as_bytes()[l.start..l.end];
    let (body, escapes) = match l.kind {
        Kind::Str(Form::Dollar(len)) => {
            let (tag, body) = raw.split_at(len.min(raw.len()));
            let body = match body.strip_suffix(tag) {
                Some(closed) if body.len() >= len => closed,
                _ => body,
            };
            return body.to_vec();
        }
        Kind::Str(Form::Plain) => (&raw[1..], false),
        Kind::Str(Form::Escaped) => (&raw[2..], true),
        Kind::Str(Form::Prefixed) => (&raw[2..], false),
        Kind::Str(Form::Unicode) => (&raw[3..], false),
        _ => return raw.to_vec(),
    };
    let mut value = Vec::with_capacity(body.len());
    let mut j = 0;
    while j < body.len() {
        match body[j] {
            b'\\' if escapes && j + 1 < body.len() => {
                value.push(body[j + 1]);
                j += 2;
            }
            b'\'' if body.get(j + 1) == Some(&b'\'') => {
                value.push(b'\'');
                j += 2;
            }
            b'\'' => match continuation(body, j + 1) {
                Some(next) => j = next,
                None => break,
            },
            other => {
                value.push(other);
                j += 1;
            }
        }
    }
    value
}

/// One token, as the statement firewall reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token<'a> {
    /// a keyword or identifier as written (compare ignoring ASCII case); `quoted` for
    /// `"..."`, with its doubled quotes undone
    Word { text: Cow<'a, str>, quoted: bool },
    /// a string literal of any form; its value only for a plain `'...'` without
    /// backslashes (which reads the same whatever `standard_conforming_strings` says)
    Str(Option<Cow<'a, str>>),
    /// `;`
    End,
    /// a Unicode-escaped identifier, `U&"..."`
    UnicodeIdent,
    /// a parameter `$n`, with its number (`usize::MAX` past what fits)
    Param(usize),
    /// any other character (operators, parentheses, numbers: `0`)
    Punct(u8),
}

/// The longest name PostgreSQL keeps, in bytes (NAMEDATALEN - 1).
const NAME_LEN: usize = 63;

/// The name an identifier denotes, as PostgreSQL reads it: unquoted, its ASCII letters
/// lower-cased (and no other: `PÄTIENTS` is `pÄtients`); past 63 bytes, cut at the last
/// whole character within them.
pub(crate) fn name(text: &str, quoted: bool) -> Cow<'_, str> {
    let mut end = text.len().min(NAME_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &text[..end];
    if quoted || !kept.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(kept)
    } else {
        Cow::Owned(kept.to_ascii_lowercase())
    }
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

/// The firewall's tokens of `sql`; `None` when a string, quoted identifier or comment is
/// not closed.
pub(super) fn tokens(sql: &str) -> Option<Vec<Token<'_>>> {
    let mut lexer = Lexer::new(sql);
    let tokens = lexer.by_ref().map(|l| token(sql, l)).collect();
    (!lexer.unterminated()).then_some(tokens)
}

fn token(sql: &str, l: Lexeme) -> Token<'_> {
    let text = &sql[l.start..l.end];
    match l.kind {
        Kind::Word => Token::Word {
            text: Cow::Borrowed(text),
            quoted: false,
        },
        Kind::QuotedIdent => {
            // (an unterminated one makes the whole text unreadable: see `tokens`)
            let inner = text[1..].strip_suffix('"').unwrap_or(&text[1..]);
            Token::Word {
                text: if inner.contains("\"\"") {
                    Cow::Owned(inner.replace("\"\"", "\""))
                } else {
                    Cow::Borrowed(inner)
                },
                quoted: true,
            }
        }
        Kind::UnicodeIdent => Token::UnicodeIdent,
        Kind::Str(Form::Plain) => {
            let raw = text[1..].strip_suffix('\'').unwrap_or(&text[1..]);
            Token::Str((!raw.contains('\\')).then(|| {
                if raw.contains('\'') {
                    // doubled quotes, or quotes it continues in
                    Cow::Owned(String::from_utf8_lossy(&literal_value(sql, &l)).into_owned())
                } else {
                    Cow::Borrowed(raw)
                }
            }))
        }
        Kind::Str(_) => Token::Str(None),
        Kind::Number => Token::Punct(b'0'),
        Kind::Param => Token::Param(text[1..].parse().unwrap_or(usize::MAX)),
        Kind::End => Token::End,
        Kind::Punct(c) => Token::Punct(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_ignore_case_finds_a_word_in_any_case_anywhere() {
        let hay = b"SELECT 1; Fetch ALL IN c";
        assert!(contains_ignore_case(hay, b"fetch") && contains_ignore_case(hay, b"in c"));
        assert!(contains_ignore_case(hay, b"select") && contains_ignore_case(hay, b""));
        assert!(!contains_ignore_case(hay, b"in cx") && !contains_ignore_case(b"", b"a"));
        assert!(!contains_ignore_case(b"fetc", b"fetch"));
    }

    #[test]
    fn literal_free_sees_a_quote_or_a_number_outside_a_word() {
        for sql in ["SELECT 1", "x = 'a'", "WHERE id=42", "a (3)", "LIMIT\t10"] {
            assert!(!literal_free(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT t1.c2 FROM t1 WHERE id = $12",
            "BEGIN",
            "SELECT \"é1\" FROM x_9",
        ] {
            assert!(literal_free(sql.as_bytes()), "{sql}");
        }
    }

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
                Token::Param(n) => format!("${n}"),
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
                "select", "U&", ",", "'s'", ",", "'s'", ",", "$1", ",", "0", ",", "'it's'", ",",
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

    #[test]
    fn a_string_continues_in_a_quote_after_a_newline_in_its_own_form() {
        // PostgreSQL reads E'x' '\' , ' as one string, and runs what follows it
        let sql = "SELECT E'x'\n'\\' , ' ; SELECT pg_ls_dir('.') --'";
        assert_eq!(
            words(sql),
            ["SELECT", "'s'", ";", "SELECT", "pg_ls_dir", "(", "'.'", ")"]
        );
        assert_eq!(words("SELECT 'a' -- c\n  'b'"), ["SELECT", "'ab'"]);
        assert_eq!(words("SELECT 'a'\r\n--c\n'b'''"), ["SELECT", "'ab''"]);
        // an `e` without an exponent's digits after a number starts an E'...' string
        assert_eq!(
            words("SELECT 1e'\\' , ' ; SHOW ALL; --'"),
            ["SELECT", "0", "'s'", ";", "SHOW", "ALL", ";"]
        );
        assert_eq!(
            words("SELECT 1e5, 2E-3, .5e+1"),
            ["SELECT", "0", ",", "0", ",", "0"]
        );
        // a carriage return ends a line comment
        assert_eq!(
            words("SELECT 1 --x\r; SHOW ALL"),
            ["SELECT", "0", ";", "SHOW", "ALL"]
        );
        // no newline, or a block comment between: two strings
        assert_eq!(words("SELECT 'a' 'b'"), ["SELECT", "'a'", "'b'"]);
        assert_eq!(words("SELECT 'a'\n/* */'b'"), ["SELECT", "'a'", "'b'"]);
        let sql = "E'a\\''\n'\\'b' 'c'\n'd'";
        let values: Vec<Vec<u8>> = Lexer::new(sql).map(|l| literal_value(sql, &l)).collect();
        assert_eq!(values, [b"a''b".to_vec(), b"cd".to_vec()]);
    }

    #[test]
    fn with_the_setting_off_plain_and_national_strings_take_escapes() {
        let sql = "SELECT 'a\\' , ', N'\\'', B'1'";
        let kinds = |l: Lexer<'_>| {
            l.map(|l| sql[l.start..l.end].to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(Lexer::escaping(sql)),
            ["SELECT", "'a\\' , '", ",", "N'\\''", ",", "B'1'"]
        );
        assert_eq!(kinds(Lexer::new(sql))[1], "'a\\'");
    }

    #[test]
    fn literal_values_of_every_form() {
        let sql = "E'it\\'s' 'o''clock' $x$a;b$x$ X'ff' U&'d' 'open";
        let values: Vec<Vec<u8>> = Lexer::new(sql).map(|l| literal_value(sql, &l)).collect();
        assert_eq!(
            values,
            [
                b"it's".to_vec(),
                b"o'clock".to_vec(),
                b"a;b".to_vec(),
                b"ff".to_vec(),
                b"d".to_vec(),
                b"open".to_vec()
            ]
        );
    }
}
