//! The text of a rewritten statement with its slots filled: each value encrypted with its
//! column's cipher, afresh at every execution.
//!
//! A simple Query is rendered at each execution, so its literals are encrypted in the
//! text. A statement prepared with Parse runs many times from one text: its randomized
//! literals become hidden parameters, numbered after the client's own and filled with a
//! fresh encryption at each Bind ([`hidden`]); its deterministic ones, whose ciphertext
//! never changes, stay in the text.

use std::borrow::Cow;

use super::Ciphers;
use crate::sql::{Literal, Sql};

/// The text to send upstream: each slot becomes `pg_catalog.decode('<hex>', 'hex')`, a
/// bytea value whatever `standard_conforming_strings` says.
pub(crate) fn render<'a>(sql: &'a Sql, ciphers: &Ciphers) -> Cow<'a, str> {
    if sql.slots().is_empty() {
        return Cow::Borrowed(sql.text());
    }
    Cow::Owned(fill(sql, ciphers, |_| None))
}

/// The text of a prepared statement whose client parameters are `$1..$arity`: randomized
/// literals become `$arity+1`, `$arity+2`... in the order of [`hidden`].
pub(crate) fn render_prepared<'a>(sql: &'a Sql, ciphers: &Ciphers, arity: usize) -> Cow<'a, str> {
    if sql.slots().is_empty() {
        return Cow::Borrowed(sql.text());
    }
    let mut numbers = vec![None; sql.literals().len()];
    let mut next = arity;
    for (i, l) in sql.literals().iter().enumerate() {
        if is_hidden(l) {
            next += 1;
            numbers[i] = Some(next);
        }
    }
    Cow::Owned(fill(sql, ciphers, |i| numbers[i]))
}

/// The literals a prepared statement takes as hidden parameters, in their order.
pub(crate) fn hidden(sql: &Sql) -> impl Iterator<Item = &Literal> {
    sql.literals().iter().filter(|l| is_hidden(l))
}

/// A randomized literal is a hidden parameter (its ciphertext must change at every
/// execution); a deterministic one stays in the text.
fn is_hidden(l: &Literal) -> bool {
    !l.column.deterministic()
}

/// The text with slot `i` written as `$n` where `param(i)` says so, else encrypted.
fn fill(sql: &Sql, ciphers: &Ciphers, param: impl Fn(usize) -> Option<usize>) -> String {
    let text = sql.text();
    // each literal encrypted once, however often the text repeats it
    let written: Vec<String> = (sql.literals().iter().enumerate())
        .map(|(i, l)| match param(i) {
            Some(n) => format!("${n}"),
            None => {
                let sealed = ciphers.of(&l.column).encrypt(&l.value);
                let mut call = String::with_capacity(sealed.len() * 2 + 32);
                call.push_str("pg_catalog.decode('");
                crate::protocol::value::push_hex(&sealed, &mut call);
                call.push_str("', 'hex')");
                call
            }
        })
        .collect();
    let mut out =
        String::with_capacity(text.len() + written.iter().map(String::len).sum::<usize>());
    let mut from = 0;
    for &(at, i) in sql.slots() {
        out.push_str(&text[from..at]);
        out.push_str(&written[i]);
        from = at;
    }
    out.push_str(&text[from..]);
    out
}
