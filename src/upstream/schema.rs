//! The live schema as phigate reads it: every relation's columns (for the catalog of
//! protected columns), and what the database says of each protected column.

use std::collections::HashMap;

use super::{ServiceSession, UpstreamError};
use crate::config::Config;
use crate::policy::{PolicySet, TableName};
use crate::sql::catalog::{LiveColumn, LiveTable};

/// What the live schema says about a protected column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnStatus {
    /// `phigate_encrypted` (bytea with the envelope CHECK): as it should be
    Backstopped,
    /// plain `bytea`: works, but a write around phigate could store plaintext
    LacksDomain,
    /// any other type: phigate cannot store envelopes in it
    WrongType(String),
    /// no such table or column
    Missing,
}

/// The tables and columns of the live database, as read by [`LiveSchema::read`].
pub struct LiveSchema {
    /// every table, view, materialized view and foreign table, with its columns in
    /// attribute order (the views only tell which schemas hold a name)
    pub tables: HashMap<TableName, LiveTable>,
}

impl LiveSchema {
    /// Reads every table's columns over a session of phigate's own service login.
    pub async fn read(config: &Config) -> Result<Self, UpstreamError> {
        let mut conn = ServiceSession::open(config, "phigate:check").await?;
        let sql = "SELECT n.nspname, c.relname, c.oid, a.attnum, a.attname, t.typname, coalesce(b.typname, ''), \
                   a.atthasdef, pg_catalog.format_type(a.atttypid, a.atttypmod) \
                   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                   JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid \
                   LEFT JOIN pg_type b ON b.oid = t.typbasetype \
                   WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                   ORDER BY c.oid, a.attnum";
        let mut tables: HashMap<TableName, LiveTable> = HashMap::new();
        for row in conn.query(sql).await? {
            let Ok(
                [
                    Some(schema),
                    Some(table),
                    Some(oid),
                    Some(attnum),
                    Some(name),
                    Some(ty),
                    Some(base),
                    Some(has_default),
                    Some(sql_type),
                ],
            ) = <[Option<String>; 9]>::try_from(row)
            else {
                continue;
            };
            let (Ok(oid), Ok(attnum)) = (oid.parse(), attnum.parse()) else {
                continue;
            };
            tables
                .entry(TableName { schema, table })
                .or_insert_with(|| LiveTable {
                    oid,
                    columns: Vec::new(),
                })
                .columns
                .push(LiveColumn {
                    name,
                    attnum,
                    type_name: ty,
                    base_type: base,
                    has_default: has_default == "t",
                    sql_type,
                });
        }
        Ok(Self { tables })
    }

    /// Every protected column that exists as `bytea` carries the `phigate_encrypted`
    /// domain, so the database itself refuses a plaintext value.
    pub(crate) fn require_backstop(&self, policies: &PolicySet) -> Result<(), UpstreamError> {
        for t in policies.tables() {
            for name in t.columns.keys() {
                if self.column(&t.name, name) == ColumnStatus::LacksDomain {
                    return Err(UpstreamError::Config(format!(
                        "column {name} of table {} is plain bytea, without the phigate_encrypted domain \
                         that makes the database refuse plaintext; convert it with `phigate schema | psql` and \
                         ALTER TABLE {} ALTER COLUMN {name} TYPE phigate_encrypted, or set \
                         policies.allow_plain_bytea = true to serve it anyway",
                        t.name, t.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// What the database says about one protected column.
    pub fn column(&self, table: &TableName, column: &str) -> ColumnStatus {
        let found = self
            .tables
            .get(table)
            .and_then(|t| t.columns.iter().find(|c| c.name == column));
        match found.map(|c| (c.type_name.as_str(), c.base_type.as_str())) {
            None => ColumnStatus::Missing,
            Some(("phigate_encrypted", "bytea")) => ColumnStatus::Backstopped,
            Some(("bytea", _)) => ColumnStatus::LacksDomain,
            Some((other, _)) => ColumnStatus::WrongType(other.to_owned()),
        }
    }
}
