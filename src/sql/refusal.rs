//! A statement phigate refuses, as the client sees it: an SQLSTATE, a message that names
//! tables, columns and rules but never a value, and a hint; one constructor per reason.

use crate::protocol::build::PgError;
use crate::protocol::value::{ModifierError, ValueError};

use super::Column;

/// A statement phigate refuses, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE
    pub code: &'static str,
    /// message (names tables and columns, never values)
    pub message: String,
    /// what to do instead
    pub hint: String,
}

impl Refusal {
    pub(super) fn new(code: &'static str, message: String, hint: &str) -> Self {
        Self {
            code,
            message,
            hint: hint.to_owned(),
        }
    }

    pub(super) fn unsupported(what: &str, table: impl std::fmt::Display) -> Self {
        Self::new(
            "0A000",
            format!("phigate cannot safely analyse {what} on protected table {table}"),
            "rewrite the statement in a simpler form (see the phigate README, \"What phigate \
             understands\"), or run it over a direct connection as an administrator",
        )
    }

    pub(super) fn encrypted(col: &Column, why: &str, hint: &str) -> Self {
        Self::new(
            "0A000",
            format!(
                "column {} of table {} is encrypted: {why}",
                col.name, col.table
            ),
            hint,
        )
    }

    pub(super) fn randomized(col: &Column, what: &str) -> Self {
        Self::encrypted(
            col,
            &format!(
                "it is encrypted in randomized mode, which allows only IS [NOT] NULL, not {what}"
            ),
            "declare the column deterministic if it must be searched or grouped",
        )
    }

    pub(super) fn order_by(col: &Column) -> Self {
        Self::encrypted(
            col,
            "ORDER BY and range comparisons would order ciphertext",
            "sort in the application",
        )
    }

    pub(super) fn denied(col: &Column) -> Self {
        Self::new(
            "42501",
            format!(
                "permission denied for column {} of table {}",
                col.name, col.table
            ),
            "your role may not read this column; leave it out of the statement",
        )
    }

    pub(super) fn invalid_value(col: &Column, err: &ValueError) -> Self {
        Self::new(
            err.sqlstate(),
            format!("{err} (column {} of table {})", col.name, col.table),
            "write the value in PostgreSQL's standard text form",
        )
    }

    /// A cast's modifier that PostgreSQL would refuse (22023), or a value it does not fit
    /// (22003); `cast` names the type the modifier was written on.
    pub(crate) fn modifier(col: &Column, cast: &str, e: ModifierError) -> Self {
        match e {
            ModifierError::Invalid(problem) => Self::new(
                "22023",
                format!(
                    "invalid type modifier in a cast to {cast} for encrypted column {} of table {}: {problem}",
                    col.name, col.table
                ),
                "write the type as PostgreSQL accepts it, or leave the modifier out",
            ),
            ModifierError::Overflow(problem) => Self::out_of_range(col, problem),
        }
    }

    /// A value that does not fit a cast's (or a column's) precision: PostgreSQL's 22003.
    pub(super) fn out_of_range(col: &Column, problem: &str) -> Self {
        Self::new(
            "22003",
            format!(
                "numeric field overflow: {problem} (column {} of table {})",
                col.name, col.table
            ),
            "round the value in the application, or cast it to a wider type",
        )
    }

    pub(super) fn whole_row(table: &str) -> Self {
        Self::new(
            "42501",
            format!("phigate does not allow whole-row references to protected table {table}"),
            "name the columns you need",
        )
    }

    pub(super) fn table_denied(role: &str, table: &crate::policy::TableName) -> Self {
        Self::new(
            "42501",
            format!("permission denied for table {table}: role {role} may not use it"),
            "the role's `tables` in roles.toml lists the protected tables it may use",
        )
    }

    pub(super) fn unqualified() -> Self {
        Self::new(
            "0A000",
            "the session's search_path was changed in a way phigate does not follow (SET LOCAL, inside a transaction block, among other statements, \"$user\"), so it cannot tell which table an unqualified protected table name means".into(),
            "qualify protected tables with their schema (public.patients)",
        )
    }

    pub(super) fn syntax(message: &str) -> Self {
        Self::new("42601", message.to_owned(), "check the statement's syntax")
    }

    /// The error sent to the client.
    pub(crate) fn to_error(&self) -> PgError {
        PgError::error(self.code, self.message.clone()).with_hint(self.hint.clone())
    }
}
