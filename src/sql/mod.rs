//! Statement analysis and rewriting: which protected tables a statement touches, whether
//! phigate can run it correctly on ciphertext, and the rewritten text to send upstream.
//!
//! Pure: SQL text in, an [`Analysis`] out. The [`Analyzer`] keeps a bounded cache so a
//! statement text is analysed once per role (a prepared statement pays at Parse only).
//! Statements whose text cannot name a protected table (a byte scan) are not parsed at all.

mod analyse;
pub mod catalog;

use std::sync::Arc;

use dashmap::DashMap;
use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

pub use catalog::{Catalog, Column};

use crate::protocol::build::PgError;
use crate::protocol::value::{Context, ValueError};

/// How a bound parameter must be transformed before it reaches PostgreSQL.
#[derive(Debug, Clone)]
pub enum ParamUse {
    /// one value of the column: encrypt it
    Scalar(Arc<Column>),
    /// an array of values of the column (`col = ANY($n)`): encrypt each element
    Array(Arc<Column>),
}

impl ParamUse {
    /// The column whose cipher applies.
    pub fn column(&self) -> &Arc<Column> {
        match self {
            Self::Scalar(c) | Self::Array(c) => c,
        }
    }

    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Scalar(a), Self::Scalar(b)) | (Self::Array(a), Self::Array(b)) => {
                a.identity == b.identity && a.logical_type() == b.logical_type()
            }
            _ => false,
        }
    }
}

/// The options of a COPY in text or CSV format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// CSV rather than PostgreSQL's text format
    pub csv: bool,
    /// the field delimiter
    pub delimiter: u8,
    /// the string that stands for NULL
    pub null: String,
    /// the first line is a header (CSV)
    pub header: bool,
    /// the CSV quote character
    pub quote: u8,
    /// the CSV escape character
    pub escape: u8,
}

/// A COPY to or from a protected table: which fields to encrypt or decrypt.
#[derive(Debug)]
pub struct CopyPlan {
    /// per field of each row: the protected column it holds
    pub columns: Vec<Option<Arc<Column>>>,
    /// the data format
    pub format: CopyFormat,
}

/// A statement phigate rewrote.
#[derive(Debug)]
pub struct Plan {
    /// the text to send upstream
    pub sql: String,
    /// per parameter ($1 is index 0): how to transform it, `None` to pass it unchanged
    pub params: Vec<Option<ParamUse>>,
    /// the protected tables the statement touches
    pub tables: Vec<Arc<catalog::Table>>,
    /// the protected columns it reads or writes (`schema.table.column`)
    pub columns: Vec<String>,
    /// the COPY the statement runs, when it copies a protected table
    pub copy: Option<CopyPlan>,
    /// the protected column behind each result column, when the text is one statement
    /// whose outputs phigate can list: used where PostgreSQL reports no origin (set
    /// operations, expressions over CTEs)
    pub outputs: Option<Vec<Option<Arc<Column>>>>,
    /// false when a literal was encrypted in randomized mode: the text must then not be
    /// reused for another execution, or equal values would share a ciphertext
    pub reusable: bool,
}

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
    fn new(code: &'static str, message: String, hint: &str) -> Self {
        Self {
            code,
            message,
            hint: hint.to_owned(),
        }
    }

    fn unsupported(what: &str, table: impl std::fmt::Display) -> Self {
        Self::new(
            "0A000",
            format!("phigate cannot safely analyse {what} on protected table {table}"),
            "rewrite the statement in a simpler form (see the phigate README, \"What phigate \
             understands\"), or run it over a direct connection as an administrator",
        )
    }

    fn encrypted(col: &Column, why: &str, hint: &str) -> Self {
        Self::new(
            "0A000",
            format!(
                "column {} of table {} is encrypted: {why}",
                col.name, col.table
            ),
            hint,
        )
    }

    fn randomized(col: &Column, what: &str) -> Self {
        Self::encrypted(
            col,
            &format!(
                "it is encrypted in randomized mode, which allows only IS [NOT] NULL, not {what}"
            ),
            "declare the column deterministic if it must be searched or grouped",
        )
    }

    fn order_by(col: &Column) -> Self {
        Self::encrypted(
            col,
            "ORDER BY and range comparisons would order ciphertext",
            "sort in the application",
        )
    }

    fn denied(col: &Column) -> Self {
        Self::new(
            "42501",
            format!(
                "permission denied for column {} of table {}",
                col.name, col.table
            ),
            "your role may not read this column; leave it out of the statement",
        )
    }

    fn invalid_value(col: &Column, err: &ValueError) -> Self {
        Self::new(
            "22P02",
            format!("{err} (column {} of table {})", col.name, col.table),
            "write the value in PostgreSQL's standard text form",
        )
    }

    fn syntax(message: &str) -> Self {
        Self::new("42601", message.to_owned(), "check the statement's syntax")
    }

    /// The error sent to the client.
    pub fn to_error(&self) -> PgError {
        PgError::error(self.code, self.message.clone()).with_hint(self.hint.clone())
    }
}

/// What to do with a statement.
#[derive(Debug, Clone)]
pub enum Analysis {
    /// forward it unchanged: it touches no protected table
    Pass,
    /// forward the plan's text and transform its parameters
    Rewrite(Arc<Plan>),
    /// refuse it
    Refuse(Arc<Refusal>),
}

/// The protected table names that identifier tokens (not strings or comments) of `sql`
/// spell, case-folded as PostgreSQL folds them.
fn protected_names(catalog: &Catalog, sql: &str) -> Result<Vec<String>, Refusal> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|_| Refusal::syntax("phigate could not read the statement (unterminated string, comment or identifier?)"))?;
    let mut names = Vec::new();
    for t in &tokens {
        if let Token::Word(w) = t {
            let name = match w.quote_style {
                Some(_) => w.value.clone(),
                None => w.value.to_lowercase(),
            };
            if catalog.needles().contains(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

fn analyse_touched(
    catalog: &Catalog,
    role: &str,
    ctx: Context,
    sql: &str,
) -> Result<Option<Plan>, Refusal> {
    if sql.to_ascii_lowercase().contains("u&\"") {
        return Err(Refusal::new(
            "0A000",
            "phigate does not accept Unicode-escaped identifiers (U&\"...\") while tables are protected".into(),
            "write the identifier plainly",
        ));
    }
    let fetch = mentions_fetch(sql);
    if !fetch && protected_names(catalog, sql)?.is_empty() {
        return Ok(None);
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| {
        Refusal::new(
            "0A000",
            format!(
                "phigate cannot parse a statement that names a protected table ({})",
                parse_position(&e)
            ),
            "phigate refuses what it cannot analyse; rewrite the statement in a simpler form",
        )
    })?;
    let mut walker = analyse::Walker::new(catalog, role, ctx);
    for stmt in &mut statements {
        walker.statement(stmt)?;
    }
    if walker.tables.is_empty()
        && walker.params.iter().all(Option::is_none)
        && walker.copy.is_none()
        && !walker.fetch
    {
        return Ok(None);
    }
    let outputs = if statements.len() == 1 {
        walker.outputs.take()
    } else {
        None
    };
    let sql = statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Some(Plan {
        sql,
        params: walker.params,
        columns: walker.columns.take(),
        tables: walker.tables,
        copy: walker.copy,
        outputs,
        reusable: !walker.randomized_literal,
    }))
}

/// True when `sql` may FETCH from a cursor: its rows may come from a protected table, so
/// the result is inspected even though the text names none.
fn mentions_fetch(sql: &str) -> bool {
    sql.as_bytes()
        .windows(5)
        .any(|w| w.eq_ignore_ascii_case(b"fetch"))
}

/// Where the parser stopped, without the tokens it found there (they may be values).
fn parse_position(e: &sqlparser::parser::ParserError) -> String {
    let text = e.to_string();
    match text.rfind(" at Line: ") {
        Some(i) => text[i + 1..].to_owned(),
        None => "syntax not understood".to_owned(),
    }
}

/// `pg_catalog.decode('<hex>', 'hex')`: a bytea value whatever `standard_conforming_strings`
/// says.
fn bytea_literal(bytes: &[u8]) -> Expr {
    let hex = hex::encode(bytes);
    let arg = |s: String| {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::value(
            Value::SingleQuotedString(s),
        )))
    };
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("pg_catalog"), Ident::new("decode")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![arg(hex), arg("hex".to_owned())],
            clauses: Vec::new(),
        }),
        within_group: Vec::new(),
        filter: None,
        null_treatment: None,
        over: None,
    })
}

/// Most distinct statement texts kept per process; beyond it the cache starts over.
const CACHE_LIMIT: usize = 4096;

/// [`analyse`] with a cache keyed by role, session context and text.
#[derive(Debug)]
pub struct Analyzer {
    catalog: Arc<Catalog>,
    cache: DashMap<(Arc<str>, bool, Box<str>), Analysis>,
}

impl Analyzer {
    /// An analyser over `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self {
            catalog,
            cache: DashMap::new(),
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Analyses `sql` for `role`, from the cache when it was seen before.
    pub fn analyse(&self, role: &Arc<str>, ctx: Context, sql: &str) -> Analysis {
        if !self.catalog.may_touch(sql) {
            return Analysis::Pass;
        }
        let key = (role.clone(), ctx.utc, Box::<str>::from(sql));
        if let Some(hit) = self.cache.get(&key) {
            return hit.clone();
        }
        let (analysis, reusable) = match analyse_touched(&self.catalog, role, ctx, sql) {
            Ok(None) => (Analysis::Pass, true),
            Ok(Some(plan)) => {
                let reusable = plan.reusable;
                (Analysis::Rewrite(Arc::new(plan)), reusable)
            }
            Err(r) => (Analysis::Refuse(Arc::new(r)), true),
        };
        if reusable {
            if self.cache.len() >= CACHE_LIMIT {
                self.cache.clear();
            }
            self.cache.insert(key, analysis.clone());
        }
        analysis
    }
}

#[cfg(test)]
mod tests;
