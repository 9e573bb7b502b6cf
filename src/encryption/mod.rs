//! Where values are encrypted and decrypted: the one module that holds the column ciphers.
//!
//! Analysis (`sql`) decides *what* must be encrypted and leaves typed slots in its plan:
//! literals as [`crate::sql::Literal`]s, parameters as [`crate::sql::ParamUse`]s, COPY fields
//! as the columns of a [`crate::sql::CopyPlan`]. This module fills them at every execution
//! (so a randomized value gets a fresh nonce each time and every plan can be cached):
//! - `literals`: the statement text with its slots encrypted;
//! - `params`: Parse and Bind of a rewritten statement, ParameterDescription;
//! - `rows`: RowDescription and DataRow, decrypted or masked for the reader's role;
//! - `copy`: COPY data in both directions;
//! - `errors`: the server's errors and notices, with the ciphertext they print withheld.
//!
//! Pure: messages in, messages out; the ciphers come from the keyring loaded at start-up.

mod copy;
mod errors;
mod literals;
mod params;
mod rows;

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use crate::crypto::{self, ColumnCipher, CryptoError, Keyring};
use crate::protocol::ProtocolError;
use crate::sql::{Catalog, Column};

pub(crate) use copy::{CopyIn, CopyOut};
pub(crate) use errors::withheld;
pub(crate) use literals::render;
pub(crate) use params::{bind, parameter_description, parse};
#[cfg(test)]
pub(crate) use rows::mask;
pub(crate) use rows::{FieldOut, Shape, data_row, row_description};

/// The cipher of every protected column, derived from the keyring.
pub struct Ciphers {
    keyring: Keyring,
    /// by column identity
    by_column: HashMap<String, Arc<ColumnCipher>>,
}

impl std::fmt::Debug for Ciphers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ciphers({} columns)", self.by_column.len())
    }
}

impl Ciphers {
    /// The ciphers of every column of `catalog`, derived from `keyring`.
    pub fn new(keyring: Keyring, catalog: &Catalog) -> Self {
        let mut by_column = HashMap::new();
        for col in catalog.columns() {
            by_column
                .entry(col.identity.clone())
                .or_insert_with(|| Arc::new(cipher(&keyring, col)));
        }
        Self { keyring, by_column }
    }

    /// The cipher of `col`. A column the catalog did not hold (a statement prepared before
    /// the policies reloaded) gets its cipher derived afresh: the same keys, never another
    /// column's.
    pub(crate) fn of(&self, col: &Column) -> Arc<ColumnCipher> {
        match self.by_column.get(&col.identity) {
            Some(c) if c.mode() == col.policy.mode => c.clone(),
            _ => Arc::new(cipher(&self.keyring, col)),
        }
    }
}

/// The cipher of `col`, bound to its column's (or deterministic domain's) AAD.
pub(crate) fn cipher(keyring: &Keyring, col: &Column) -> ColumnCipher {
    let ty = col.logical_type().name();
    let aad = match &col.policy.domain {
        Some(domain) => crypto::domain_aad(domain, ty),
        None => crypto::column_aad(&col.table.schema, &col.table.table, &col.name, ty),
    };
    ColumnCipher::new(keyring, col.policy.mode, &aad)
}

/// A value that does not decrypt: the session ends (the data is corrupt or was tampered
/// with, and the result can no longer be delivered whole).
#[derive(Debug, Error)]
pub(crate) enum RowError {
    /// the server's message is malformed
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// a stored value does not decrypt or decode
    #[error("a value of column {column} of table {table} cannot be read: {problem}")]
    Unreadable {
        /// column
        column: String,
        /// table
        table: String,
        /// what is wrong (never the value)
        problem: String,
    },
}

fn unreadable(col: &Column, problem: String) -> RowError {
    RowError::Unreadable {
        column: col.name.clone(),
        table: col.table.to_string(),
        problem,
    }
}

/// Decrypts an envelope of `col` into its canonical plaintext.
fn decrypt(cipher: &ColumnCipher, col: &Column, envelope: &[u8]) -> Result<Vec<u8>, RowError> {
    cipher
        .decrypt(envelope)
        .map_err(|e: CryptoError| unreadable(col, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::tests::{analyzer, plan};

    fn ciphers(a: &crate::sql::Analyzer) -> Ciphers {
        Ciphers::new(Keyring::from_keys(1, vec![(1, [7u8; 32])]), a.catalog())
    }

    /// The hex of each encrypted value in a rendered text.
    fn envelopes(text: &str) -> Vec<Vec<u8>> {
        text.split("pg_catalog.decode('")
            .skip(1)
            .map(|s| hex::decode(&s[..s.find('\'').expect("closed")]).expect("hex"))
            .collect()
    }

    #[test]
    fn slots_get_a_fresh_randomized_nonce_at_every_execution() {
        let a = analyzer();
        let c = ciphers(&a);
        let p = plan(
            &a,
            "INSERT INTO patients (id, ssn, full_name) VALUES (1, '111-22-3333', 'Ada Lovelace')",
        );
        // the plan is cached (by its shape): the same text and values come back
        let again = plan(
            &a,
            "INSERT INTO patients (id, ssn, full_name) VALUES (1, '111-22-3333', 'Ada Lovelace')",
        );
        assert_eq!(again.sql.text(), p.sql.text());
        let values = |p: &crate::sql::Plan| -> Vec<Vec<u8>> {
            p.sql.literals().iter().map(|l| l.value.clone()).collect()
        };
        assert_eq!(values(&again), values(&p));
        let (first, second) = (render(&p.sql, &c), render(&p.sql, &c));
        assert!(
            !first.contains("Ada") && !first.contains("111-22"),
            "{first}"
        );
        let (e1, e2) = (envelopes(&first), envelopes(&second));
        assert_eq!(e1.len(), 2);
        assert_eq!(e1[0], e2[0], "deterministic: the same ciphertext");
        assert_ne!(e1[1], e2[1], "randomized: a fresh nonce each time");
        for (l, envelope) in p.sql.literals().iter().zip(&e1) {
            let plain = c.of(&l.column).decrypt(envelope).expect("decrypts");
            assert_eq!(plain, l.value);
        }
    }

    #[test]
    fn a_prepared_statement_takes_its_randomized_literals_as_hidden_parameters() {
        let a = analyzer();
        let c = ciphers(&a);
        let p = plan(
            &a,
            "INSERT INTO patients (id, ssn, full_name) VALUES ($2, '111-22-3333', 'Ada Lovelace')",
        );
        assert_eq!(p.arity, 2);
        let text = literals::render_prepared(&p.sql, &c, p.arity);
        assert!(text.contains("$3") && !text.contains("$4"), "{text}");
        assert_eq!(
            envelopes(&text).len(),
            1,
            "the deterministic literal stays: {text}"
        );
        let hidden: Vec<_> = literals::hidden(&p.sql).collect();
        assert_eq!(hidden.len(), 1);
        assert_eq!(hidden[0].column.name, "full_name");
        // the Parse declares the client's two parameters and the hidden bytea one
        let mut out = bytes::BytesMut::new();
        parse("s", &p, &[], &c, &mut out).expect("parses");
        assert!(
            out.ends_with(&[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17]),
            "{out:?}"
        );
    }

    #[test]
    fn a_domain_shares_its_cipher_and_a_reloaded_column_keeps_its_keys() {
        let a = analyzer();
        let c = ciphers(&a);
        let catalog = a.catalog();
        let ssn = &catalog.table(None, "patients").expect("patients").protected["ssn"];
        let claims = &catalog.table(None, "claims").expect("claims").protected["patient_ssn"];
        assert!(Arc::ptr_eq(&c.of(ssn), &c.of(claims)));
        // a column the catalog no longer holds gets the same keys, derived again
        let empty = Ciphers::new(
            Keyring::from_keys(1, vec![(1, [7u8; 32])]),
            &Catalog::default(),
        );
        let envelope = c.of(ssn).encrypt(b"123-45-6789");
        assert_eq!(
            empty.of(ssn).decrypt(&envelope).expect("same keys"),
            b"123-45-6789"
        );
    }
}
