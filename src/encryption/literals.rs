//! The text of a rewritten statement with its slots filled: each value encrypted with its
//! column's cipher, afresh at every execution.

use std::borrow::Cow;

use super::Ciphers;
use crate::sql::Sql;

/// The text to send upstream: each slot becomes `pg_catalog.decode('<hex>', 'hex')`, a
/// bytea value whatever `standard_conforming_strings` says.
pub(crate) fn render<'a>(sql: &'a Sql, ciphers: &Ciphers) -> Cow<'a, str> {
    let text = sql.text();
    if sql.slots().is_empty() {
        return Cow::Borrowed(text);
    }
    // each literal encrypted once, however often the text repeats it
    let encrypted: Vec<String> = sql
        .literals()
        .iter()
        .map(|l| hex::encode(ciphers.of(&l.column).encrypt(&l.value)))
        .collect();
    let mut out = String::with_capacity(text.len() + sql.slots().len() * 128);
    let mut from = 0;
    for &(at, i) in sql.slots() {
        out.push_str(&text[from..at]);
        out.push_str("pg_catalog.decode('");
        out.push_str(&encrypted[i]);
        out.push_str("', 'hex')");
        from = at;
    }
    out.push_str(&text[from..]);
    Cow::Owned(out)
}
