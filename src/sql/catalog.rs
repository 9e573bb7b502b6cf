//! What the analyser knows about protected tables: the policy joined with the live
//! schema (column order, catalog OIDs). No keys: ciphers live in `encryption`.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use crate::policy::{
    LogicalType, Mode, PolicySet, ProtectedColumn, ReadOutcome, RowPolicy, TableName,
};

/// One column of a live table, as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveColumn {
    /// the column's name
    pub name: String,
    /// its attribute number
    pub attnum: i16,
    /// its type name (`phigate_encrypted`, `bytea`, ...)
    pub type_name: String,
    /// the base type's name when the type is a domain, else empty
    pub base_type: String,
    /// the column has a default (or is generated)
    pub has_default: bool,
    /// its type as SQL writes it, with modifiers (`character varying(20)`, `phigate_encrypted`)
    pub sql_type: String,
}

/// One live table: its OID and its columns in attribute order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTable {
    /// `pg_class.oid`
    pub oid: u32,
    /// the columns, in attnum order
    pub columns: Vec<LiveColumn>,
}

/// Why the policies do not fit the live database.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CatalogError {
    /// A table policy names a table the database does not have.
    #[error("table {table} (declared in {file}) does not exist in the database")]
    MissingTable {
        /// the table
        table: TableName,
        /// the policy file
        file: String,
    },
    /// A protected column is missing or not `bytea`.
    #[error(
        "column {column} of table {table} is {found}, but a protected column must be bytea \
         (declared with the phigate_encrypted domain, see `phigate schema`)"
    )]
    NotBytea {
        /// the table
        table: TableName,
        /// the column
        column: String,
        /// what the database has ("missing" or its type)
        found: String,
    },
}

/// A protected column: its policy and which ciphertexts it can be compared with. Its
/// cipher lives in the `encryption` module, never here.
#[derive(Debug)]
pub struct Column {
    /// its table
    pub table: TableName,
    /// its name
    pub name: String,
    /// the policy
    pub policy: ProtectedColumn,
    /// columns with equal identities hold comparable ciphertexts (the same deterministic
    /// domain, or the same column), whatever the keys
    pub identity: String,
}

impl Column {
    /// The type applications see.
    pub fn logical_type(&self) -> LogicalType {
        self.policy.logical_type
    }

    /// True when equality on ciphertext means equality on plaintext.
    pub fn deterministic(&self) -> bool {
        self.policy.mode == Mode::Deterministic
    }

    /// What `role` reads from it (`Deny` when the role is not listed).
    pub fn outcome(&self, role: &str) -> ReadOutcome {
        self.policy
            .read
            .get(role)
            .copied()
            .unwrap_or(ReadOutcome::Deny)
    }
}

/// A protected table.
#[derive(Debug)]
pub struct Table {
    /// its name
    pub name: TableName,
    /// every column, in attribute order (for `*` and INSERT without a column list)
    pub columns: Vec<String>,
    /// each column's type as SQL writes it, in the same order
    pub types: Vec<String>,
    /// the columns with a database default (or generated), any type
    pub with_default: Vec<String>,
    /// the protected columns
    pub protected: HashMap<String, Arc<Column>>,
    /// protected columns with a database default: PostgreSQL would compute plaintext
    pub defaulted: Vec<String>,
    /// the table's row policies
    pub policies: Vec<RowPolicy>,
}

/// Every protected table, by name and by catalog position.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: Vec<Arc<Table>>,
    by_origin: HashMap<(u32, i16), Arc<Column>>,
    /// protected table names, as the catalog has them: a statement whose identifiers
    /// name none runs unanalysed
    needles: Vec<String>,
    /// per protected table name: the schemas holding a relation of that name
    homes: HashMap<String, Vec<String>>,
}

impl Catalog {
    /// Joins the table policies with the live schema.
    /// `live` maps each table to its description; a protected column that is missing or is
    /// not bytea is an error naming table and column.
    pub fn new(
        policies: &PolicySet,
        live: &HashMap<TableName, LiveTable>,
    ) -> Result<Self, CatalogError> {
        let mut catalog = Catalog::default();
        for policy in policies.tables() {
            let Some(table) = live.get(&policy.name) else {
                return Err(CatalogError::MissingTable {
                    table: policy.name.clone(),
                    file: policy.file.display().to_string(),
                });
            };
            let mut protected = HashMap::new();
            for (name, col) in &policy.columns {
                let found = table.columns.iter().find(|c| &c.name == name);
                let Some(found) =
                    found.filter(|c| c.type_name == "bytea" || c.base_type == "bytea")
                else {
                    return Err(CatalogError::NotBytea {
                        table: policy.name.clone(),
                        column: name.clone(),
                        found: found.map_or("missing".to_owned(), |c| c.type_name.clone()),
                    });
                };
                let column = Arc::new(Self::column(&policy.name, name, col));
                catalog
                    .by_origin
                    .insert((table.oid, found.attnum), column.clone());
                protected.insert(name.clone(), column);
            }
            catalog.needles.push(policy.name.table.clone());
            let defaulted = table
                .columns
                .iter()
                .filter(|c| c.has_default && protected.contains_key(&c.name))
                .map(|c| c.name.clone())
                .collect();
            catalog.tables.push(Arc::new(Table {
                name: policy.name.clone(),
                columns: table.columns.iter().map(|c| c.name.clone()).collect(),
                types: table.columns.iter().map(|c| c.sql_type.clone()).collect(),
                with_default: table
                    .columns
                    .iter()
                    .filter(|c| c.has_default)
                    .map(|c| c.name.clone())
                    .collect(),
                protected,
                defaulted,
                policies: policy.policies.clone(),
            }));
        }
        catalog.needles.sort();
        catalog.needles.dedup();
        for name in &catalog.needles {
            let mut schemas: Vec<String> = live
                .keys()
                .filter(|t| t.table == *name)
                .map(|t| t.schema.clone())
                .collect();
            schemas.sort();
            catalog.homes.insert(name.clone(), schemas);
        }
        Ok(catalog)
    }

    /// A protected column of `table`.
    pub fn column(table: &TableName, name: &str, col: &ProtectedColumn) -> Column {
        let ty = col.logical_type.name();
        let identity = match &col.domain {
            Some(domain) => format!("domain:{domain}/{ty}"),
            None => format!("{}.{}.{name}/{ty}", table.schema, table.table),
        };
        Column {
            table: table.clone(),
            name: name.to_owned(),
            policy: col.clone(),
            identity,
        }
    }

    /// Every protected column.
    pub fn columns(&self) -> impl Iterator<Item = &Arc<Column>> {
        self.tables.iter().flat_map(|t| t.protected.values())
    }

    /// True when no table is protected: every statement passes through.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The protected column a result field comes from, by the table OID and attribute
    /// number PostgreSQL reports in RowDescription.
    pub(crate) fn by_origin(&self, table_oid: u32, attnum: i16) -> Option<&Arc<Column>> {
        if table_oid == 0 {
            return None;
        }
        self.by_origin.get(&(table_oid, attnum))
    }

    /// The protected table a (possibly schema-qualified, already case-folded) name refers
    /// to. An unqualified name matches a protected table of that name in any schema,
    /// preferring `public`.
    pub fn table(&self, schema: Option<&str>, name: &str) -> Option<&Arc<Table>> {
        let mut matches = self
            .tables
            .iter()
            .filter(|t| t.name.table == name && schema.is_none_or(|s| t.name.schema == s));
        let first = matches.next()?;
        if first.name.schema == "public" {
            return Some(first);
        }
        Some(matches.find(|t| t.name.schema == "public").unwrap_or(first))
    }

    /// The protected table an unqualified `name` means on the search path `path`: the
    /// first schema (after pg_catalog) holding a relation of that name decides. `None` when
    /// that relation is not protected, or no schema on the path holds one.
    pub(crate) fn resolve(&self, name: &str, path: &[String]) -> Option<&Arc<Table>> {
        let homes = self.homes.get(name)?;
        let implicit = ["pg_catalog".to_owned()];
        let first = implicit
            .iter()
            .filter(|s| !path.contains(s))
            .chain(path)
            .find(|s| homes.contains(s))?;
        self.table(Some(first), name)
    }

    /// Every protected table called `name` (in any schema).
    pub(crate) fn tables_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Table>> {
        self.tables.iter().filter(move |t| t.name.table == name)
    }

    /// Lower-cased names of the protected tables.
    pub(crate) fn needles(&self) -> &[String] {
        &self.needles
    }
}
