//! The text of a rewritten statement, with the values phigate must encrypt left as slots.
//!
//! Analysis never encrypts: it leaves each literal written to or compared with an encrypted
//! column as a [`Literal`] (the column and the value's canonical plaintext) and marks where
//! it goes in the text; the `encryption` module fills the slots at every execution, so a
//! randomized literal gets a fresh nonce each time and every plan can be cached.

use std::sync::Arc;

use sqlparser::ast::{Expr, Value};

use super::Column;

/// A value the statement writes to, or compares with, an encrypted column.
#[derive(Clone)]
pub struct Literal {
    /// the column whose cipher encrypts it
    pub column: Arc<Column>,
    /// the value's canonical plaintext
    pub value: Vec<u8>,
}

/// A rewritten statement's text, its literals, and where each goes.
#[derive(Clone, Default)]
pub struct Sql {
    text: String,
    literals: Vec<Literal>,
    /// (byte offset in `text`, index in `literals`), in text order; a literal the rewrite
    /// repeats (a WHERE clause copied into a row check) has several slots
    slots: Vec<(usize, usize)>,
}

impl Sql {
    /// Text with no slots.
    pub fn plain(text: String) -> Self {
        Self {
            text,
            ..Self::default()
        }
    }

    /// The text around the slots.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The literals to encrypt.
    pub fn literals(&self) -> &[Literal] {
        &self.literals
    }

    /// A text with its literals and their slots, in text order.
    pub(super) fn from_parts(
        text: String,
        literals: Vec<Literal>,
        slots: Vec<(usize, usize)>,
    ) -> Self {
        Self {
            text,
            literals,
            slots,
        }
    }

    /// True when both send the same text with the same values, slot for slot.
    pub(super) fn same(&self, other: &Self) -> bool {
        fn value(sql: &Sql, i: usize) -> Option<(&str, &[u8])> {
            (sql.literals.get(i)).map(|l| (l.column.identity.as_str(), l.value.as_slice()))
        }
        self.text == other.text
            && self.slots.len() == other.slots.len()
            && (self.slots.iter().zip(&other.slots))
                .all(|(a, b)| a.0 == b.0 && value(self, a.1) == value(other, b.1))
    }

    /// Where each literal goes: (byte offset in the text, index in [`Sql::literals`]), in
    /// text order.
    pub(crate) fn slots(&self) -> &[(usize, usize)] {
        &self.slots
    }

    /// Splits `rendered` (statements printed with [`marker`] expressions) into text and
    /// slots. `None` when a marker names no literal, a literal has no marker, or the text
    /// holds a NUL (PostgreSQL ends the text at a NUL: the rest would be read as other
    /// messages).
    pub(super) fn split(rendered: &str, literals: Vec<Literal>) -> Option<Self> {
        if rendered.contains('\0') {
            return None;
        }
        let prefix = marker_prefix();
        let mut sql = Self {
            literals,
            ..Self::default()
        };
        let mut rest = rendered;
        while let Some(start) = rest.find(prefix) {
            sql.text.push_str(&rest[..start]);
            let after = &rest[start + prefix.len()..];
            let end = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let index = after[..end].parse::<usize>().ok()?;
            (index < sql.literals.len()).then_some(())?;
            sql.slots.push((sql.text.len(), index));
            rest = &after[end..];
        }
        sql.text.push_str(rest);
        let all_placed = (0..sql.literals.len()).all(|i| sql.slots.iter().any(|s| s.1 == i));
        all_placed.then_some(sql)
    }
}

/// The expression standing for literal `index` until the text is split: a placeholder that
/// prints and parses back as itself (analysis re-parses some of what it prints), tagged
/// with a random number of this process that no statement can know (it never leaves the
/// process: the slots are filled before anything is sent).
pub(super) fn marker(index: usize) -> Expr {
    Expr::value(Value::Placeholder(format!("{}{index}", marker_prefix())))
}

fn marker_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("$phigate_{:016x}_", rand::random::<u64>()))
}

#[cfg(test)]
impl Sql {
    /// The text as `Debug` shows it.
    pub(crate) fn shown(&self) -> String {
        format!("{self:?}")
    }
}

/// Shows the column, never the value.
impl std::fmt::Debug for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Literal {{ column: {} }}", self.column.name)
    }
}

/// The text with each slot shown as `<encrypted column>`: for logs and tests, never sent.
impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut from = 0;
        for &(at, i) in &self.slots {
            let column = &self.literals[i].column.name;
            write!(f, "{}<encrypted {column}>", &self.text[from..at])?;
            from = at;
        }
        f.write_str(&self.text[from..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_nuls_and_unmatched_markers_are_refused() {
        assert!(Sql::split("SELECT '\0'", Vec::new()).is_none());
        assert!(Sql::split(&format!("SELECT {}", marker(0)), Vec::new()).is_none());
        let plain = Sql::split("SELECT 1", Vec::new()).expect("no slots");
        assert_eq!(plain.text(), "SELECT 1");
    }

    #[test]
    fn markers_become_slots_in_text_order() {
        let catalog = crate::sql::tests::analyzer();
        let col = |n: &str| {
            let patients = catalog.catalog().table(None, "patients").expect("patients");
            patients.protected[n].clone()
        };
        let literal = |n: &str, v: &[u8]| Literal {
            column: col(n),
            value: v.to_vec(),
        };
        let rendered = format!("SELECT {} , {}, {}", marker(1), marker(0), marker(1));
        let literals = vec![literal("ssn", b"x"), literal("full_name", b"y")];
        let sql = Sql::split(&rendered, literals.clone()).expect("matched");
        assert_eq!(sql.text(), "SELECT  , , ");
        assert_eq!(sql.slots(), [(7, 1), (10, 0), (12, 1)]);
        assert_eq!(
            sql.shown(),
            "SELECT <encrypted full_name> , <encrypted ssn>, <encrypted full_name>"
        );
        // every literal must be placed
        let one = format!("SELECT {}", marker(1));
        assert!(Sql::split(&one, literals).is_none());
    }
}
