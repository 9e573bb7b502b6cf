//! Statements as the audit log keeps them: every literal replaced by `?` (its value kept
//! aside only to be hashed), comments removed, whitespace collapsed, and a simple query
//! split into its statements. One pass of phigate's lexer (the firewall's), no parser: it
//! runs for every statement.

use crate::sql::lex::{Kind, Lexer, literal_value};

/// One statement, redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    /// the text with literals replaced by `?` (`$n` parameters stay)
    pub text: String,
    /// the literal values, in order (to be hashed, never stored)
    pub values: Vec<Vec<u8>>,
}

/// Splits `sql` into statements (at top-level semicolons) and redacts each.
pub fn redact(sql: &str) -> Vec<Redacted> {
    let mut out = Vec::new();
    let mut text = String::with_capacity(sql.len());
    let mut values = Vec::new();
    for l in Lexer::new(sql) {
        if l.spaced && !text.is_empty() {
            text.push(' ');
        }
        match l.kind {
            Kind::End => finish(&mut text, &mut values, &mut out),
            Kind::Str(_) => {
                values.push(literal_value(sql, &l));
                text.push('?');
            }
            Kind::Number => {
                values.push(sql.as_bytes()[l.start..l.end].to_vec());
                text.push('?');
            }
            _ => text.push_str(&sql[l.start..l.end]),
        }
    }
    finish(&mut text, &mut values, &mut out);
    out
}

fn finish(text: &mut String, values: &mut Vec<Vec<u8>>, out: &mut Vec<Redacted>) {
    let s = text.trim();
    if !s.is_empty() {
        out.push(Redacted {
            text: s.to_owned(),
            values: std::mem::take(values),
        });
    }
    text.clear();
    values.clear();
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
