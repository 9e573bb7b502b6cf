//! The walk over a parsed statement that touches a protected table: it resolves every
//! column reference against the tables in scope, accepts protected columns only where the
//! result stays correct on ciphertext, leaves literals written to or compared with them
//! as slots for the `encryption` module to fill,
//! and records which bound parameters must be encrypted. Anything else is refused.

use std::sync::Arc;

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, DataType, Distinct, Expr, FromTable, GroupByExpr,
    Ident, InTarget, Insert, ObjectName, ObjectNamePart, OnConflictAction, OnInsert, OrderByKind,
    Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins, UnaryOperator, UpdateTableFromKind, Value, visit_expressions,
    visit_relations,
};
use std::ops::ControlFlow;

mod batch;
mod copy;
mod filter;
mod predicate;
mod query;
mod row_check;
mod scope;
mod statement;
mod update_values;
mod write;

use copy::literal_text;

use super::catalog::{Catalog, Column, Table};
use super::{Access, CopyFormat, CopyPlan, ParamUse, Refusal};
use crate::policy::{LogicalType, ReadOutcome};
use crate::protocol::value::{self, Cast, Context, Format};

/// A relation visible in a FROM clause.
struct Rel {
    /// the name it is referred to by (alias, or the table's own name), case-folded
    name: String,
    kind: RelKind,
}

enum RelKind {
    /// a protected table
    Table(Arc<Table>),
    /// a subquery in FROM: its output columns, and whether that list is complete
    Derived(Vec<(String, Option<Arc<Column>>)>, bool),
    /// a table phigate knows nothing about (no protected columns)
    Opaque,
}

/// Where a query's output goes.
#[derive(Clone)]
enum Output {
    /// to the client, into an enclosing FROM, CTE or set operation: phigate knows which
    /// protected column each output is, so it can be decrypted
    Origin,
    /// into an expression: protected columns may not appear
    Opaque,
    /// into the columns of INSERT ... SELECT: values written to protected columns must be
    /// literals, parameters or columns of the same cipher
    Insert(Arc<[Option<Arc<Column>>]>),
}

/// What an operand of a comparison is.
enum Operand {
    Column(Arc<Column>),
    Literal(String),
    Param(usize),
    Null,
    Other,
}

pub(super) struct Walker<'a> {
    catalog: &'a Catalog,
    access: &'a Access<'a>,
    ctx: Context,
    /// scope levels, innermost last
    scope: Vec<Vec<Rel>>,
    pub(super) params: Vec<Option<ParamUse>>,
    /// per parameter: the type a cast on it named (PostgreSQL would infer that type for it)
    pub(super) param_casts: Vec<Option<Cast>>,
    pub(super) tables: Vec<Arc<Table>>,
    /// the values the statement writes to or compares with encrypted columns, each left
    /// in the text as a marker (its index here)
    pub(super) literals: Vec<super::Literal>,
    /// the COPY of a protected table the statement runs
    pub(super) copy: Option<CopyPlan>,
    /// the protected column of each output of the last statement, when phigate can list
    /// them all (decrypts outputs whose origin PostgreSQL does not report)
    pub(super) outputs: Option<Vec<Option<Arc<Column>>>>,
    /// the statement fetches from a cursor (its rows may come from a protected table)
    pub(super) fetch: bool,
    /// common table expressions in scope, innermost last
    ctes: Vec<Vec<(String, Outputs)>>,
    /// the protected columns the statement reads or writes (`schema.table.column`)
    pub(super) columns: std::cell::RefCell<Vec<String>>,
    /// the next table factor is the target of UPDATE or DELETE (filtered in its WHERE
    /// clause, not replaced by a subquery)
    target: bool,
    /// the outputs of the last RETURNING, by name (for data-modifying CTEs)
    returned: Option<Outputs>,
    /// the row policies applied (`schema.table.policy`)
    pub(super) applied: std::cell::RefCell<Vec<String>>,
    /// a protected table was named without its schema while the search path is unknown
    pub(super) unqualified: bool,
    /// the session's search path
    path: &'a super::SearchPath,
}

type Res<T = ()> = Result<T, Refusal>;

/// Output columns by name, with the protected column each one is.
type Named = Vec<(String, Option<Arc<Column>>)>;

/// A query's outputs, and whether the list is complete.
type Outputs = (Named, bool);

/// The name an identifier denotes (see [`crate::sql::lex::name`]).
fn fold(ident: &Ident) -> String {
    super::lex::name(&ident.value, ident.quote_style.is_some()).into_owned()
}

fn idents(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => fold(i),
            ObjectNamePart::Function(f) => fold(&f.name),
        })
        .collect()
}

/// SQL text phigate wrote (a policy condition, a cast, a call) as an expression.
fn parse_expr(text: &str) -> Option<Expr> {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// A row policy condition (with the user's attributes written in) as an expression.
fn policy_expr(text: &str, t: &Table) -> Res<Expr> {
    parse_expr(text)
        .ok_or_else(|| Refusal::unsupported("a row policy that does not parse", &t.name))
}

/// `e` without the casts (and parentheses) around it, and the casts' types, outermost
/// first.
fn cast_layers(e: &Expr) -> (&Expr, Vec<&DataType>) {
    let mut casts = Vec::new();
    let mut inner = e;
    loop {
        match inner {
            Expr::Nested(x) => inner = x,
            Expr::Cast {
                expr, data_type, ..
            } => {
                casts.push(data_type);
                inner = expr;
            }
            _ => return (inner, casts),
        }
    }
}

/// `e` without its casts (and parentheses), and the casts' type names, outermost first;
/// a typed literal (`DATE '...'`) keeps its place and counts as a cast.
fn peel_casts(e: &Expr) -> (&Expr, Vec<String>) {
    let (inner, layers) = cast_layers(e);
    let mut casts: Vec<String> = layers.iter().map(ToString::to_string).collect();
    if let Expr::TypedString(ts) = inner {
        casts.push(ts.data_type.to_string());
    }
    (inner, casts)
}

/// The types of the casts around `e`, outermost first.
fn cast_chain(e: &Expr) -> Vec<DataType> {
    cast_layers(e).1.into_iter().cloned().collect()
}

/// Puts `e` under the casts of `chain` (outermost first), as [`cast_chain`] read them.
fn wrap_casts(e: &mut Expr, chain: &[DataType]) {
    for data_type in chain.iter().rev() {
        *e = Expr::Cast {
            kind: sqlparser::ast::CastKind::DoubleColon,
            expr: Box::new(std::mem::replace(e, Expr::value(Value::Null))),
            data_type: data_type.clone(),
            format: None,
        };
    }
}

/// The type the innermost of `casts` names and the casts' modifiers (`varchar(2)`), when
/// every one names a type whose values mean the same in encrypted column `col` (an array of
/// them when `array`; `zoned`: phigate resolves the session's TimeZone, see
/// [`LogicalType::converts_to_at`]); else 42846. A modifier on an array cast, or one its
/// type does not take, is refused.
fn cast_type(casts: &[String], col: &Column, array: bool, zoned: bool) -> Res<Option<Cast>> {
    let target = col.logical_type();
    let mut named: Option<Cast> = None;
    for c in casts.iter().rev() {
        let element = if array {
            c.strip_suffix("[]").unwrap_or(c)
        } else {
            c.as_str()
        };
        let ty = LogicalType::from_sql_name(element)
            .filter(|t| t.converts_to_at(target, zoned) && (!array || c.ends_with("[]")));
        let Some(ty) = ty else {
            return Err(Refusal::new(
                "42846",
                format!(
                    "cannot cast a value of encrypted column {} of table {} ({}) to {c}",
                    col.name,
                    col.table,
                    target.name()
                ),
                &format!(
                    "cast to {} (or a type whose values mean the same), or leave the cast out",
                    target.name()
                ),
            ));
        };
        let modifier =
            value::Modifier::of_type_name(element, ty).map_err(|e| Refusal::modifier(col, c, e))?;
        let cast = named.get_or_insert_with(|| Cast {
            ty,
            modifiers: Vec::new(),
        });
        if let Some(m) = modifier {
            if array {
                return Err(Refusal::unsupported(
                    "a cast with a length or precision on an array of encrypted values",
                    &col.table,
                ));
            }
            cast.modifiers.push(m);
        }
    }
    Ok(named)
}

/// A literal's canonical plaintext for encrypted column `col`: read as `cast`'s type and
/// converted to the column's, as PostgreSQL converts it (`'... +02'::timestamptz` for a
/// timestamp column, in a UTC session: the UTC time), then cut or rounded by the cast's
/// modifiers (`'abc'::varchar(2)` is `ab`).
pub(super) fn literal_canonical(
    col: &Column,
    cast: Option<&Cast>,
    text: &[u8],
    ctx: Context,
) -> Res<Vec<u8>> {
    let target = col.logical_type();
    let source = cast.map_or(target, |c| c.ty);
    let mut canonical = value::to_canonical_from(source, target, Format::Text, text, ctx)
        .map_err(|err| Refusal::invalid_value(col, &err))?;
    if let Some(cast) = cast {
        value::apply_all(&cast.modifiers, target, &mut canonical)
            .map_err(|e| Refusal::modifier(col, cast.ty.name(), e))?;
    }
    Ok(canonical)
}

/// The name a statement refers to table `t` by: its alias, else the last part of `name`.
fn referred_name(alias: Option<&Ident>, name: &ObjectName, t: &Table) -> Ident {
    match (alias, name.0.last()) {
        (Some(a), _) => a.clone(),
        (None, Some(ObjectNamePart::Identifier(i))) => i.clone(),
        _ => Ident::new(t.name.table.clone()),
    }
}

/// The name a table factor is referred to by: its alias, or its last name part.
fn factor_name(f: &TableFactor, t: &Table) -> Ident {
    match f {
        TableFactor::Table { alias, name, .. } => {
            referred_name(alias.as_ref().map(|a| &a.name), name, t)
        }
        _ => Ident::new(t.name.table.clone()),
    }
}

fn unnest(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => unnest(inner),
        _ => e,
    }
}

/// [`unnest`], to change what is inside.
fn unnest_mut(e: &mut Expr) -> &mut Expr {
    match e {
        Expr::Nested(inner) => unnest_mut(inner),
        _ => e,
    }
}

impl<'a> Walker<'a> {
    pub(super) fn new(
        catalog: &'a Catalog,
        access: &'a Access<'a>,
        ctx: Context,
        path: &'a super::SearchPath,
    ) -> Self {
        Self {
            catalog,
            access,
            ctx,
            scope: Vec::new(),
            params: Vec::new(),
            param_casts: Vec::new(),
            unqualified: false,
            path,
            tables: Vec::new(),
            literals: Vec::new(),
            copy: None,
            outputs: None,
            fetch: false,
            ctes: Vec::new(),
            columns: std::cell::RefCell::new(Vec::new()),
            target: false,
            returned: None,
            applied: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn protected_table(&mut self, name: &ObjectName) -> Option<Arc<Table>> {
        let parts = idents(name);
        let (schema, table) = match parts.as_slice() {
            [t] => (None, t.as_str()),
            [.., s, t] => (Some(s.as_str()), t.as_str()),
            [] => return None,
        };
        let found = match (schema, self.path) {
            (Some(_), _) | (None, super::SearchPath::Default) => self.catalog.table(schema, table),
            (None, super::SearchPath::Known(path)) => self.catalog.resolve(table, path),
            (None, super::SearchPath::Unknown) => {
                let found = self.catalog.table(None, table);
                self.unqualified |= found.is_some();
                found
            }
        }?
        .clone();
        if !self.tables.iter().any(|t| Arc::ptr_eq(t, &found)) {
            self.tables.push(found.clone());
        }
        Some(found)
    }

    /// Notes a protected column the statement touches (for the audit log).
    fn note(&self, col: &Column) {
        let name = format!("{}.{}", col.table, col.name);
        let mut cols = self.columns.borrow_mut();
        if !cols.contains(&name) {
            cols.push(name);
        }
    }

    fn set_outputs(&mut self, (named, complete): Outputs) {
        self.outputs = complete.then(|| named.iter().map(|(_, c)| c.clone()).collect());
        self.returned = Some((named, complete));
    }

    /// The first protected table the statement names, for messages.
    fn first(&self) -> String {
        self.tables
            .first()
            .map_or_else(|| "a protected table".to_owned(), |t| t.name.to_string())
    }
}
