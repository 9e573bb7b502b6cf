//! `phigate encrypt-existing`: converts a live plaintext column to its encrypted form, or
//! re-encrypts an encrypted one under the active key (`--rekey`), in batches.
//!
//! Encrypting works through a shadow column: each batch locks some rows whose shadow is
//! still empty, encrypts their values and fills it in one transaction. A trigger empties
//! the shadow of any row whose plaintext changes meanwhile, so concurrent writes are
//! re-encrypted. Progress lives in the table itself, so a run that is killed simply
//! resumes. When every row is done, one transaction locks the table, finishes any
//! stragglers, checks that no row is left, and swaps the shadow into the column's place
//! (`ALTER COLUMN ... TYPE phigate_encrypted USING shadow`, keeping the column's position).
//! A row is never lost (the swap refuses while one lacks its ciphertext) nor duplicated
//! (rows are updated in place).

use std::time::Duration;

use thiserror::Error;

use crate::config::Config;
use crate::crypto::KeyringError;
use crate::policy::{PolicyError, PolicySet, TableName, quote_ident as ident};
use crate::protocol::value::{self, Context, Format};
use crate::sql::{Catalog, Column};
use crate::upstream::{ServiceSession, UpstreamError};

/// Why a migration stopped. Messages name tables and columns, never values.
#[derive(Debug, Error)]
pub enum MigrateError {
    /// The policies do not load.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The keyring does not load.
    #[error("keys.file: {0}")]
    Keyring(#[from] KeyringError),
    /// The database could not be reached, or a statement failed.
    #[error("{0}")]
    Database(#[from] UpstreamError),
    /// No policy declares the column.
    #[error(
        "no table policy declares column {column} of table {table}; declare it under policies/ first"
    )]
    Undeclared {
        /// table
        table: String,
        /// column
        column: String,
    },
    /// The column does not exist.
    #[error("table {table} has no column {column}")]
    Missing {
        /// table
        table: TableName,
        /// column
        column: String,
    },
    /// A stored value cannot be converted.
    #[error("a value of column {column} of table {table} cannot be converted: {problem}")]
    Value {
        /// table
        table: TableName,
        /// column
        column: String,
        /// what is wrong (never the value)
        problem: String,
    },
    /// Row-level security would hide rows from the migration's login.
    #[error(
        "row-level security applies to table {0} for the migration's login (`phigate policies apply` forced it), so it cannot see every row; \
         run encrypt-existing before `policies apply`, or over a login with BYPASSRLS as upstream.admin_user"
    )]
    RowSecurity(TableName),
    /// The final check found rows without ciphertext; nothing was swapped.
    #[error("{0} row(s) still lack ciphertext at the swap; nothing was changed, run again")]
    Incomplete(i64),
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// rows encrypted (or re-encrypted) by this run
    pub rows: u64,
    /// the column was converted to the encrypted form by this run
    pub swapped: bool,
}

/// `'text'` quoting (standard_conforming_strings is on in the migration session).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The names a migration of one column uses.
struct Names {
    table: String,
    column: String,
    shadow: String,
    /// the shadow column's name, unquoted
    shadow_name: String,
    trigger: String,
}

impl Names {
    fn new(table: &TableName, column: &str) -> Self {
        // PostgreSQL truncates identifiers at 63 bytes; keep ours short and unique.
        let short: String = column.chars().take(40).collect();
        let shadow_name = format!("{short}__phigate");
        Self {
            table: format!("{}.{}", ident(&table.schema), ident(&table.table)),
            column: ident(column),
            shadow: ident(&shadow_name),
            shadow_name,
            trigger: ident(&format!("phigate_migrate_{short}")),
        }
    }
}

/// The protected columns a table policy declares for `table` (`schema.table` or `table`).
pub fn declared_columns(config: &Config, table: &str) -> Result<Vec<String>, MigrateError> {
    let policies = PolicySet::load(&config.policies_dir())?;
    let name = table_name(table);
    policies
        .tables()
        .find(|t| t.name == name && !t.columns.is_empty())
        .map(|t| t.columns.keys().cloned().collect())
        .ok_or(MigrateError::Undeclared {
            table: name.to_string(),
            column: "(any)".into(),
        })
}

fn table_name(table: &str) -> TableName {
    match table.split_once('.') {
        Some((s, t)) => TableName {
            schema: s.to_owned(),
            table: t.to_owned(),
        },
        None => TableName {
            schema: "public".into(),
            table: table.to_owned(),
        },
    }
}

/// Runs `encrypt-existing` for one column. `progress` hears about each batch.
pub async fn encrypt_existing(
    config: &Config,
    table: &str,
    column: &str,
    rekey: bool,
    batch: usize,
    mut progress: impl FnMut(u64),
) -> Result<Summary, MigrateError> {
    let policies = PolicySet::load(&config.policies_dir())?;
    let name = table_name(table);
    let undeclared = || MigrateError::Undeclared {
        table: name.to_string(),
        column: column.to_owned(),
    };
    let policy = policies
        .tables()
        .find(|t| t.name == name)
        .ok_or_else(undeclared)?;
    let declared = policy.columns.get(column).ok_or_else(undeclared)?;
    let keyring = config.keyring()?;
    let col = Catalog::column(&name, column, declared);
    let cipher = crate::encryption::cipher(&keyring, &col);
    let names = Names::new(&name, column);
    // The tables' owner (`upstream.admin_user`) changes the column's type; without one, the
    // service login must own the table (and `serve` then refuses until it no longer does).
    let mut db = match config.upstream.admin_user {
        Some(_) => ServiceSession::open_admin(config, "phigate:encrypt-existing").await?,
        None => ServiceSession::open(config, "phigate:encrypt-existing").await?,
    };
    if prepare_session(&mut db, &names).await? {
        return Err(MigrateError::RowSecurity(name));
    }
    let ty = db
        .query(&format!(
            "SELECT t.typname, coalesce(b.typname, '') FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type b ON b.oid = t.typbasetype \
             WHERE a.attrelid = {}::regclass AND a.attname = {} AND NOT a.attisdropped",
            literal(&names.table),
            literal(column)
        ))
        .await?;
    let Some([Some(type_name), Some(base)]) = ty.first().map(|r| [r[0].clone(), r[1].clone()])
    else {
        return Err(MigrateError::Missing {
            table: name,
            column: column.to_owned(),
        });
    };
    let encrypted = type_name == "bytea" || base == "bytea";
    let mut m = Migration {
        db: &mut db,
        col: &col,
        cipher: &cipher,
        names: &names,
        active: keyring.active(),
        batch: batch.max(1),
    };
    match (encrypted, rekey) {
        (true, false) => Ok(Summary::default()),
        (true, true) => m.rekey(&mut progress).await,
        (false, _) => m.encrypt(&mut progress).await,
    }
}

/// Settings for exact text conversions, and row security off: a query that row-level
/// security would filter then fails instead of silently seeing fewer rows (which would
/// leave rows out of the swap). True when row security still applies to the table.
async fn prepare_session(db: &mut ServiceSession, names: &Names) -> Result<bool, MigrateError> {
    db.query(
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET bytea_output = 'hex'; \
         SET standard_conforming_strings = on; SET extra_float_digits = 3; SET row_security = off",
    )
    .await?;
    let filtered = db
        .query(&format!(
            "SELECT pg_catalog.row_security_active({}::regclass)",
            literal(&names.table)
        ))
        .await?;
    Ok(filtered
        .first()
        .and_then(|r| r.first())
        .cloned()
        .flatten()
        .as_deref()
        == Some("t"))
}

struct Migration<'a> {
    db: &'a mut ServiceSession,
    col: &'a Column,
    cipher: &'a crate::crypto::ColumnCipher,
    names: &'a Names,
    active: u32,
    batch: usize,
}

impl Migration<'_> {
    async fn encrypt(&mut self, progress: &mut impl FnMut(u64)) -> Result<Summary, MigrateError> {
        let Names {
            table,
            column,
            shadow,
            shadow_name,
            trigger,
        } = self.names;
        self.db
            .query(&format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {shadow} phigate_encrypted;
                 CREATE OR REPLACE FUNCTION phigate_migration_reset() RETURNS trigger
                   LANGUAGE plpgsql AS $phigate$
                   BEGIN
                     IF pg_catalog.to_jsonb(NEW) -> TG_ARGV[0] IS DISTINCT FROM pg_catalog.to_jsonb(OLD) -> TG_ARGV[0] THEN
                       NEW := pg_catalog.jsonb_populate_record(NEW, pg_catalog.jsonb_build_object(TG_ARGV[1], NULL));
                     END IF;
                     RETURN NEW;
                   END $phigate$;
                 CREATE OR REPLACE TRIGGER {trigger} BEFORE UPDATE ON {table} FOR EACH ROW
                   EXECUTE FUNCTION phigate_migration_reset({}, {})",
                literal(&self.col.name),
                literal(shadow_name),
            ))
            .await?;
        let pending = format!("{column} IS NOT NULL AND {shadow} IS NULL");
        let mut summary = Summary::default();
        // Batches that skip rows other transactions hold; then, under a table lock, the rest.
        loop {
            let done = self
                .encrypt_batch(&pending, "FOR UPDATE SKIP LOCKED")
                .await?;
            summary.rows += done;
            if done > 0 {
                progress(summary.rows);
                continue;
            }
            if self.count(&pending).await? == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.db
            .query(&format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
            ))
            .await?;
        let swapped = async {
            loop {
                let done = self.encrypt_batch_in_tx(&pending, "").await?;
                summary.rows += done;
                if done == 0 {
                    break;
                }
                progress(summary.rows);
            }
            let left = self.count(&pending).await?;
            if left != 0 {
                return Err(MigrateError::Incomplete(left));
            }
            self.db
                .query(&format!(
                    "ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT, \
                       ALTER COLUMN {column} TYPE phigate_encrypted USING {shadow}; \
                     DROP TRIGGER {trigger} ON {table}; \
                     ALTER TABLE {table} DROP COLUMN {shadow}; COMMIT"
                ))
                .await?;
            Ok(())
        }
        .await;
        if let Err(e) = swapped {
            let _ = self.db.query("ROLLBACK").await;
            return Err(e);
        }
        summary.swapped = true;
        Ok(summary)
    }

    async fn count(&mut self, condition: &str) -> Result<i64, MigrateError> {
        let rows = self
            .db
            .query(&format!(
                "SELECT count(*) FROM {} WHERE {condition}",
                self.names.table
            ))
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    }

    /// One batch in its own transaction.
    async fn encrypt_batch(&mut self, pending: &str, lock: &str) -> Result<u64, MigrateError> {
        self.db.query("BEGIN").await?;
        match self.encrypt_batch_in_tx(pending, lock).await {
            Ok(n) => {
                self.db.query("COMMIT").await?;
                Ok(n)
            }
            Err(e) => {
                let _ = self.db.query("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn encrypt_batch_in_tx(
        &mut self,
        pending: &str,
        lock: &str,
    ) -> Result<u64, MigrateError> {
        let Names {
            table,
            column,
            shadow,
            ..
        } = self.names;
        let rows = self
            .db
            .query(&format!(
                "SELECT ctid::text, {column}::text FROM {table} WHERE {pending} LIMIT {} {lock}",
                self.batch
            ))
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ctx = Context {
            zone: Some(crate::protocol::zone::Zone::UTC),
            ..Context::default()
        };
        let mut values = Vec::with_capacity(rows.len());
        for row in &rows {
            let (Some(Some(tid)), Some(Some(text))) = (row.first(), row.get(1)) else {
                continue;
            };
            let canonical =
                value::to_canonical(self.col.logical_type(), Format::Text, text.as_bytes(), ctx)
                    .map_err(|e| self.value_error(e.to_string()))?;
            let sealed = self.cipher.encrypt(&canonical);
            values.push(format!(
                "({}::tid, pg_catalog.decode('{}', 'hex'))",
                literal(tid),
                hex::encode(&sealed)
            ));
        }
        self.db
            .query(&format!(
                "UPDATE {table} SET {shadow} = v.e FROM (VALUES {}) AS v(id, e) WHERE {table}.ctid = v.id",
                values.join(", ")
            ))
            .await?;
        Ok(values.len() as u64)
    }

    fn value_error(&self, problem: String) -> MigrateError {
        MigrateError::Value {
            table: self.col.table.clone(),
            column: self.col.name.clone(),
            problem,
        }
    }

    /// Re-encrypts every value not under the active key, batch by batch.
    async fn rekey(&mut self, progress: &mut impl FnMut(u64)) -> Result<Summary, MigrateError> {
        let Names { table, column, .. } = self.names;
        let active = hex::encode(self.active.to_be_bytes());
        let stale = format!(
            "{column} IS NOT NULL AND substring({column}::bytea from 3 for 4) <> pg_catalog.decode('{active}', 'hex')"
        );
        let mut summary = Summary::default();
        loop {
            self.db.query("BEGIN").await?;
            let rows = self
                .db
                .query(&format!(
                    "SELECT ctid::text, encode({column}::bytea, 'hex') FROM {table} WHERE {stale} \
                     LIMIT {} FOR UPDATE SKIP LOCKED",
                    self.batch
                ))
                .await?;
            let mut values = Vec::with_capacity(rows.len());
            for row in &rows {
                let (Some(Some(tid)), Some(Some(stored))) = (row.first(), row.get(1)) else {
                    continue;
                };
                let stored = value::parse_bytea(&format!("\\x{stored}"))
                    .map_err(|e| self.value_error(e.into()))?;
                let plain = self
                    .cipher
                    .decrypt(&stored)
                    .map_err(|e| self.value_error(e.to_string()))?;
                values.push(format!(
                    "({}::tid, pg_catalog.decode('{}', 'hex'))",
                    literal(tid),
                    hex::encode(self.cipher.encrypt(&plain))
                ));
            }
            if !values.is_empty() {
                self.db
                    .query(&format!(
                        "UPDATE {table} SET {column} = v.e FROM (VALUES {}) AS v(id, e) WHERE {table}.ctid = v.id",
                        values.join(", ")
                    ))
                    .await?;
            }
            self.db.query("COMMIT").await?;
            summary.rows += values.len() as u64;
            if !values.is_empty() {
                progress(summary.rows);
                continue;
            }
            if self.count(&stale).await? == 0 {
                return Ok(summary);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("o'clock"), "'o''clock'");
        let n = Names::new(
            &TableName {
                schema: "public".into(),
                table: "Patients".into(),
            },
            "ssn",
        );
        assert_eq!(n.table, "\"public\".\"Patients\"");
        assert_eq!(n.shadow, "\"ssn__phigate\"");
    }
}
