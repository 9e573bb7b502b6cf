//! The walk over a parsed statement that touches a protected table: it resolves every
//! column reference against the tables in scope, accepts protected columns only where the
//! result stays correct on ciphertext, encrypts literals written to or compared with them,
//! and records which bound parameters must be encrypted. Anything else is refused.

use std::sync::Arc;

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, Distinct, Expr, FromTable, GroupByExpr, Ident,
    InTarget, Insert, ObjectName, ObjectNamePart, OnConflictAction, OnInsert, OrderByKind, Query,
    Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins, UnaryOperator, UpdateTableFromKind, Value, visit_expressions,
    visit_relations,
};
use std::ops::ControlFlow;

mod batch;
mod row_check;

use super::catalog::{Catalog, Column, Table};
use super::{Access, CopyFormat, CopyPlan, ParamUse, Refusal};
use crate::crypto::Mode;
use crate::policy::{LogicalType, ReadOutcome};
use crate::protocol::value::{self, Context, Format};

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
    pub(super) param_casts: Vec<Option<crate::policy::LogicalType>>,
    pub(super) tables: Vec<Arc<Table>>,
    /// a literal was encrypted in randomized mode: the rewritten text must not be reused
    pub(super) randomized_literal: bool,
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

/// Case-folds an identifier as PostgreSQL does: unquoted names are lower-cased.
fn fold(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
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

/// `e` without its casts (and parentheses), and the casts' type names, outermost first;
/// a typed literal (`DATE '...'`) keeps its place and counts as a cast.
fn peel_casts(e: &Expr) -> (&Expr, Vec<String>) {
    let mut casts = Vec::new();
    let mut inner = e;
    loop {
        match inner {
            Expr::Nested(x) => inner = x,
            Expr::Cast {
                expr, data_type, ..
            } => {
                casts.push(data_type.to_string());
                inner = expr;
            }
            Expr::TypedString(ts) => {
                casts.push(ts.data_type.to_string());
                return (inner, casts);
            }
            _ => return (inner, casts),
        }
    }
}

/// The type the innermost of `casts` names, when every one names a type whose values mean
/// the same in encrypted column `col` (an array of them when `array`); else 42846.
fn cast_type(casts: &[String], col: &Column, array: bool) -> Res<Option<LogicalType>> {
    let target = col.logical_type();
    let mut named = None;
    for c in casts {
        let element = if array {
            c.strip_suffix("[]").unwrap_or(c)
        } else {
            c.as_str()
        };
        let ty = LogicalType::from_sql_name(element)
            .filter(|t| t.converts_to(target) && (!array || c.ends_with("[]")));
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
        named = Some(ty);
    }
    Ok(named)
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
            randomized_literal: false,
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

    /// The whole statement.
    pub(super) fn statement(&mut self, stmt: &mut Statement) -> Res {
        match stmt {
            Statement::Query(q) => {
                let outputs = self.query(q, Output::Origin)?;
                self.set_outputs(outputs);
                Ok(())
            }
            Statement::Declare { stmts, .. } => {
                for d in stmts {
                    if let Some(q) = &mut d.for_query {
                        self.query(q, Output::Origin)?;
                    }
                }
                Ok(())
            }
            Statement::Fetch { .. } => {
                self.fetch = true;
                Ok(())
            }
            Statement::Insert(ins) => self.insert(ins),
            Statement::Update(up) => {
                self.scope.push(Vec::new());
                if !up.table.joins.is_empty() {
                    return Err(Refusal::unsupported("UPDATE of a join", self.first()));
                }
                self.target = true;
                self.add_from(&mut up.table)?;
                self.target = false;
                match &mut up.from {
                    Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) => {
                        for item in f {
                            self.add_from(item)?;
                        }
                    }
                    None => {}
                }
                let target = self.target_table();
                for a in &mut up.assignments {
                    self.assignment(a, target.as_ref(), None)?;
                }
                self.where_returning(
                    target.as_ref(),
                    crate::policy::Commands::UPDATE,
                    &mut up.selection,
                    &mut up.returning,
                )?;
                if let Some(t) = &target {
                    let name = factor_name(&up.table.relation, t);
                    self.check_update(t, &name, &up.assignments, &mut up.selection)?;
                }
                if !up.order_by.is_empty() || up.limit.is_some() {
                    return Err(Refusal::unsupported(
                        "UPDATE ... ORDER BY/LIMIT",
                        self.first(),
                    ));
                }
                self.scope.pop();
                Ok(())
            }
            Statement::Delete(del) => {
                if !del.tables.is_empty() || !del.order_by.is_empty() || del.limit.is_some() {
                    return Err(Refusal::unsupported("this form of DELETE", self.first()));
                }
                self.scope.push(Vec::new());
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) =
                    &mut del.from;
                if from.len() != 1 || from.iter().any(|f| !f.joins.is_empty()) {
                    return Err(Refusal::unsupported("this form of DELETE", self.first()));
                }
                for item in from {
                    self.target = true;
                    self.add_from(item)?;
                    self.target = false;
                }
                let target = self.target_table();
                for item in del.using.iter_mut().flatten() {
                    self.add_from(item)?;
                }
                self.where_returning(
                    target.as_ref(),
                    crate::policy::Commands::DELETE,
                    &mut del.selection,
                    &mut del.returning,
                )?;
                self.scope.pop();
                Ok(())
            }
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                payload,
            } => {
                use sqlparser::ast::{CopySource, CopyTarget};
                let mut filtered: Option<Box<Query>> = None;
                let columns = match source {
                    CopySource::Table {
                        table_name,
                        columns,
                    } => {
                        let Some(t) = self.protected_table(table_name) else {
                            return Ok(());
                        };
                        if !*to && !t.policies.is_empty() && self.access.filtered() {
                            return Err(Refusal::new(
                                "0A000",
                                format!(
                                    "COPY FROM into table {} is not supported: it has row policies",
                                    t.name
                                ),
                                "use INSERT (its rows are checked against the policies)",
                            ));
                        }
                        if *to
                            && let Some(filter) =
                                self.row_filter(&t, crate::policy::Commands::SELECT)?
                        {
                            let list = if columns.is_empty() {
                                "*".to_owned()
                            } else {
                                columns
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            };
                            let sql = format!(
                                "SELECT {list} FROM {}.{} WHERE {filter}",
                                Ident::with_quote('"', &t.name.schema),
                                Ident::with_quote('"', &t.name.table),
                            );
                            let parsed = sqlparser::parser::Parser::parse_sql(
                                &sqlparser::dialect::PostgreSqlDialect {},
                                &sql,
                            );
                            match parsed.ok().and_then(|mut v| v.pop()) {
                                Some(Statement::Query(q)) => filtered = Some(q),
                                _ => {
                                    return Err(Refusal::unsupported(
                                        "a row policy that does not parse",
                                        &t.name,
                                    ));
                                }
                            }
                        }
                        let names: Vec<String> = if columns.is_empty() {
                            t.columns.clone()
                        } else {
                            columns.iter().map(fold).collect()
                        };
                        let cols: Vec<Option<Arc<Column>>> =
                            names.iter().map(|n| t.protected.get(n).cloned()).collect();
                        if *to {
                            for c in cols.iter().flatten() {
                                self.copied_out(c)?;
                            }
                        }
                        cols
                    }
                    CopySource::Query(q) if *to => {
                        let (named, complete) = self.query(q, Output::Origin)?;
                        if named.iter().all(|(_, c)| c.is_none()) {
                            return Ok(());
                        }
                        if !complete {
                            return Err(Refusal::unsupported(
                                "COPY of a query whose columns phigate cannot list",
                                self.first(),
                            ));
                        }
                        for c in named.iter().filter_map(|(_, c)| c.as_ref()) {
                            self.copied_out(c)?;
                        }
                        named.into_iter().map(|(_, c)| c).collect()
                    }
                    CopySource::Query(_) => {
                        return Err(Refusal::syntax("COPY (query) FROM is not valid"));
                    }
                };
                let from_client = !*to;
                let stdio = matches!(
                    (to, target),
                    (true, CopyTarget::Stdout) | (false, CopyTarget::Stdin)
                );
                if !stdio || payload.is_some() || self.copy.is_some() {
                    return Err(Refusal::unsupported(
                        "COPY to or from a file or program (only STDIN and STDOUT)",
                        self.first(),
                    ));
                }
                let format = copy_format(options, legacy_options).ok_or_else(|| {
                    Refusal::unsupported("these COPY options (text, CSV with DELIMITER, NULL, HEADER, QUOTE, ESCAPE, or binary)", self.first())
                })?;
                if !format.binary && !self.ctx.encoding.ascii_safe() {
                    return Err(Refusal::new(
                        "0A000",
                        format!(
                            "phigate cannot split text COPY data of protected table {} in a client encoding whose characters may hold ASCII bytes",
                            self.first()
                        ),
                        "use COPY (FORMAT binary), or the UTF8 client encoding",
                    ));
                }
                for c in columns.iter().flatten() {
                    self.note(c);
                }
                if let Some(q) = filtered {
                    *source = CopySource::Query(q);
                }
                self.copy = Some(CopyPlan {
                    from_client,
                    columns,
                    format,
                });
                Ok(())
            }
            other => {
                // Statements that do not name a protected table (BEGIN, SET, ... in a
                // multi-statement string) run as they are.
                let text = other.to_string();
                let tokens = super::firewall::read(&text)?;
                let names = super::protected_names(self.catalog, &tokens);
                let Some(name) = names.first() else {
                    return Ok(());
                };
                let word = text.split_whitespace().next().unwrap_or("this");
                Err(Refusal::unsupported(
                    &format!("{} statements", word.to_uppercase()),
                    name,
                ))
            }
        }
    }

    /// The protected table UPDATE or DELETE changes: the first relation of its level.
    fn target_table(&self) -> Option<Arc<Table>> {
        match self.scope.last().and_then(|l| l.first()) {
            Some(Rel {
                kind: RelKind::Table(t),
                ..
            }) => Some(t.clone()),
            _ => None,
        }
    }

    /// The WHERE clause and RETURNING list of UPDATE or DELETE (`command`), then the row
    /// filter on its target.
    fn where_returning(
        &mut self,
        target: Option<&Arc<Table>>,
        command: u8,
        selection: &mut Option<Expr>,
        returning: &mut Option<Vec<SelectItem>>,
    ) -> Res {
        if let Some(w) = selection {
            self.predicate(w)?;
        }
        if let Some(r) = returning {
            let outputs = self.projection(r, &Output::Origin)?;
            self.set_outputs(outputs);
        }
        if let Some(t) = target {
            let reads = selection.is_some() || returning.is_some();
            self.filter_target(t, command, selection, reads)?;
        }
        Ok(())
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

    fn insert(&mut self, ins: &mut Insert) -> Res {
        let TableObject::TableName(name) = &ins.table else {
            return Err(Refusal::unsupported(
                "INSERT INTO a table function",
                self.first(),
            ));
        };
        let target = self.protected_table(name);
        if ins.partitioned.is_some() || !ins.after_columns.is_empty() || !ins.assignments.is_empty()
        {
            return Err(Refusal::unsupported("this form of INSERT", self.first()));
        }
        let columns: Vec<String> = if ins.columns.is_empty() {
            target
                .as_ref()
                .map(|t| t.columns.clone())
                .unwrap_or_default()
        } else {
            ins.columns
                .iter()
                .map(|c| idents(c).pop().unwrap_or_default())
                .collect()
        };
        let column = |i: usize| -> Option<Arc<Column>> {
            let t = target.as_ref()?;
            t.protected.get(columns.get(i)?).cloned()
        };
        // A protected column left to its database default would receive plaintext.
        if let Some(t) = &target {
            let omitted = |name: &String| ins.source.is_none() || !columns.contains(name);
            if let Some(name) = t.defaulted.iter().find(|n| omitted(n))
                && let Some(col) = t.protected.get(name)
            {
                return Err(default_refusal(col));
            }
        }
        self.scope.push(Vec::new());
        if let Some(source) = &mut ins.source {
            match source.body.as_mut() {
                SetExpr::Values(values)
                    if source.with.is_none()
                        && source.order_by.is_none()
                        && source.limit_clause.is_none() =>
                {
                    for row in &mut values.rows {
                        if target.is_some()
                            && ins.columns.is_empty()
                            && row.content.len() > columns.len()
                        {
                            return Err(Refusal::unsupported(
                                "an INSERT with more values than the table has columns",
                                self.first(),
                            ));
                        }
                        for (i, e) in row.content.iter_mut().enumerate() {
                            match column(i) {
                                Some(col) => self.write_value(e, &col, None)?,
                                None => self.forbid(e, "a value")?,
                            }
                        }
                    }
                }
                _ if (0..columns.len()).any(|i| column(i).is_some()) => {
                    let targets: Arc<[Option<Arc<Column>>]> =
                        (0..columns.len()).map(column).collect();
                    if !self.batch_source(source, &targets)? {
                        self.query(source, Output::Insert(targets))?;
                    }
                }
                _ => {
                    self.query(source, Output::Opaque)?;
                }
            }
        }
        // The target table is in scope for ON CONFLICT and RETURNING, and so is EXCLUDED.
        let alias = ins.table_alias.as_ref().map(|a| a.alias.clone());
        let level = self.scope.last_mut();
        if let (Some(level), Some(t)) = (level, &target) {
            level.push(Rel {
                name: alias.as_ref().map_or_else(|| t.name.table.clone(), fold),
                kind: RelKind::Table(t.clone()),
            });
        }
        match &mut ins.on {
            None => {}
            Some(OnInsert::OnConflict(oc)) => {
                if let OnConflictAction::DoUpdate(du) = &mut oc.action {
                    if let Some(t) = &target
                        && let Some(level) = self.scope.last_mut()
                    {
                        level.push(Rel {
                            name: "excluded".into(),
                            kind: RelKind::Table(t.clone()),
                        });
                    }
                    for a in &mut du.assignments {
                        self.assignment(a, target.as_ref(), Some("excluded"))?;
                    }
                    if let Some(w) = &mut du.selection {
                        self.predicate(w)?;
                    }
                    if let Some(t) = &target {
                        let name = referred_name(alias.as_ref(), name, t);
                        self.filter_conflict(t, &name, &mut du.selection)?;
                        self.check_update(t, &name, &du.assignments, &mut du.selection)?;
                    }
                }
            }
            Some(_) => return Err(Refusal::unsupported("this ON clause", self.first())),
        }
        if let Some(r) = &mut ins.returning {
            let outputs = self.projection(r, &Output::Origin)?;
            self.set_outputs(outputs);
        }
        self.scope.pop();
        if let Some(t) = &target {
            if ins.columns.is_empty()
                && !matches!(
                    ins.source.as_deref().map(|q| q.body.as_ref()),
                    Some(SetExpr::Values(_))
                )
                && self.row_check_applies(t)
            {
                return Err(Refusal::new(
                    "0A000",
                    format!(
                        "INSERT into table {} without a column list: its row policy check needs the columns named",
                        t.name
                    ),
                    "list the columns the INSERT fills",
                ));
            }
            let width = match ins.source.as_deref().map(|q| q.body.as_ref()) {
                Some(SetExpr::Values(v)) if ins.columns.is_empty() => {
                    v.rows.first().map_or(0, |r| r.content.len())
                }
                _ => columns.len(),
            };
            let filled: Vec<String> = columns.iter().take(width).cloned().collect();
            self.check_insert(t, ins, &filled)?;
        }
        Ok(())
    }

    /// `SET col = value` in UPDATE or ON CONFLICT DO UPDATE.
    fn assignment(
        &mut self,
        a: &mut Assignment,
        target: Option<&Arc<Table>>,
        excluded: Option<&str>,
    ) -> Res {
        let names: Vec<&ObjectName> = match &a.target {
            AssignmentTarget::ColumnName(n) => vec![n],
            AssignmentTarget::Tuple(ns) => ns.iter().collect(),
        };
        let protected: Vec<Arc<Column>> = names
            .iter()
            .filter_map(|n| {
                let col = idents(n).pop()?;
                target?.protected.get(&col).cloned()
            })
            .collect();
        match (protected.as_slice(), &a.target) {
            ([], _) => self.forbid(&a.value, "an assigned value"),
            ([col], AssignmentTarget::ColumnName(_)) => {
                let col = col.clone();
                self.write_value(&mut a.value, &col, excluded)
            }
            _ => Err(Refusal::unsupported(
                "assigning a row to encrypted columns",
                self.first(),
            )),
        }
    }

    /// A value written to an encrypted column: a literal (encrypted here), a parameter
    /// (encrypted at Bind), NULL, DEFAULT, or the same column of EXCLUDED.
    fn write_value(&mut self, e: &mut Expr, col: &Arc<Column>, excluded: Option<&str>) -> Res {
        self.note(col);
        if let (Some(ex), Expr::CompoundIdentifier(parts)) = (excluded, unnest(e))
            && let [rel, name] = parts.as_slice()
            && fold(rel) == ex
            && fold(name) == col.name
        {
            return Ok(());
        }
        if let Expr::Identifier(i) = unnest(e)
            && i.quote_style.is_none()
            && i.value.eq_ignore_ascii_case("default")
        {
            let defaulted = self
                .tables
                .iter()
                .any(|t| t.name == col.table && t.defaulted.contains(&col.name));
            return if defaulted {
                Err(default_refusal(col))
            } else {
                Ok(())
            };
        }
        self.value_casts(e, col, false)?;
        match self.operand(e)? {
            Operand::Literal(text) => self.encrypt_literal(e, col, &text),
            Operand::Param(n) => self.param(n, ParamUse::Scalar(col.clone())),
            Operand::Null => Ok(()),
            Operand::Column(c) if c.identity == col.identity => Ok(()),
            Operand::Column(_) | Operand::Other => Err(Refusal::encrypted(
                col,
                "only a literal, a parameter, NULL, DEFAULT or a column of the same cipher \
                 (same column or domain) can be written to it",
                "compute the value in the application and send it as a parameter",
            )),
        }
    }

    /// Casts on a value that meets encrypted column `col` (`$1::VARCHAR`, `'x'::text`,
    /// `DATE '...'`, `$1::text[]` when `array`): each must name a type whose values mean
    /// the same in the column's type, else 42846. A cast on a parameter is removed, since
    /// PostgreSQL sees the parameter as bytea; its type is kept for ParameterDescription
    /// and to read the value the client binds.
    fn value_casts(&mut self, e: &mut Expr, col: &Arc<Column>, array: bool) -> Res {
        let (inner, casts) = peel_casts(e);
        if casts.is_empty() {
            return Ok(());
        }
        let named = cast_type(&casts, col, array)?;
        let param = match inner {
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()),
                _ => None,
            },
            _ => None,
        };
        if let Some(n) = param.filter(|n| (1..=65_535).contains(n)) {
            if self.param_casts.len() < n {
                self.param_casts.resize(n, None);
            }
            self.param_casts[n - 1] = named;
            *e = inner.clone();
        }
        Ok(())
    }

    fn encrypt_literal(&mut self, e: &mut Expr, col: &Arc<Column>, text: &str) -> Res {
        let canonical =
            value::to_canonical(col.logical_type(), Format::Text, text.as_bytes(), self.ctx)
                .map_err(|err| Refusal::invalid_value(col, &err))?;
        let envelope = col.cipher.encrypt(&canonical);
        if col.policy.mode == Mode::Randomized {
            self.randomized_literal = true;
        }
        *e = super::bytea_literal(&envelope);
        Ok(())
    }

    fn param(&mut self, n: usize, use_: ParamUse) -> Res {
        if n == 0 || n > 65_535 {
            return Err(Refusal::syntax("parameter numbers run from $1 to $65535"));
        }
        if self.params.len() < n {
            self.params.resize(n, None);
        }
        match &self.params[n - 1] {
            Some(existing) if !existing.same(&use_) => Err(Refusal::encrypted(
                use_.column(),
                &format!("parameter ${n} is used for differently encrypted values"),
                "use a separate parameter for each use",
            )),
            _ => {
                self.params[n - 1] = Some(use_);
                Ok(())
            }
        }
    }

    /// Classifies one side of a comparison. A protected column also passes the role check.
    fn operand(&mut self, e: &Expr) -> Res<Operand> {
        Ok(match unnest(e) {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match self.resolve(e)? {
                // Searching on a column is reading it: a masked value could be probed.
                Some(c) if self.access.outcome(&c) != ReadOutcome::Plaintext => {
                    return Err(Refusal::new(
                        "42501",
                        format!(
                            "role {} reads column {} of table {} as {}, so it may not search or join on it",
                            self.access.role(),
                            c.name,
                            c.table,
                            self.access.outcome(&c).name()
                        ),
                        "only roles that read the column in plaintext may compare it",
                    ));
                }
                Some(c) => Operand::Column(c),
                None => Operand::Other,
            },
            Expr::Value(v) => match &v.value {
                Value::Null => Operand::Null,
                Value::Placeholder(p) => match p.strip_prefix('$').and_then(|n| n.parse().ok()) {
                    Some(n) => Operand::Param(n),
                    None => Operand::Other,
                },
                other => literal_text(other).map_or(Operand::Other, Operand::Literal),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match unnest(expr) {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => Operand::Literal(format!("-{n}")),
                    _ => Operand::Other,
                },
                _ => Operand::Other,
            },
            // `'2020-01-01'::date`, `DATE '2020-01-01'`: the literal's text is what counts
            Expr::Cast { expr, .. } => match self.operand(expr)? {
                lit @ (Operand::Literal(_) | Operand::Null | Operand::Param(_)) => lit,
                _ => Operand::Other,
            },
            Expr::TypedString(ts) => {
                literal_text(&ts.value.value).map_or(Operand::Other, Operand::Literal)
            }
            _ => Operand::Other,
        })
    }

    /// Resolves a column reference; `Some` when it is a protected column (which the role
    /// may then reference at all).
    fn resolve(&self, e: &Expr) -> Res<Option<Arc<Column>>> {
        let parts: Vec<String> = match unnest(e) {
            Expr::Identifier(i) => vec![fold(i)],
            Expr::CompoundIdentifier(is) => is.iter().map(fold).collect(),
            _ => return Ok(None),
        };
        let found = match parts.as_slice() {
            [col] => {
                let found = self.unqualified(col)?;
                if found.is_none()
                    && let Some(table) = self.whole_row(col)
                {
                    return Err(Refusal::whole_row(&table));
                }
                found
            }
            [.., rel, col] => self.qualified(rel, col),
            [] => None,
        };
        if let Some(c) = &found {
            if self.access.outcome(c) == ReadOutcome::Deny {
                return Err(Refusal::denied(c));
            }
            self.note(c);
        }
        Ok(found)
    }

    /// The protected table whose whole row `name` would be (`SELECT p FROM patients p`,
    /// `row_to_json(p)`), or a subquery with protected columns.
    fn whole_row(&self, name: &str) -> Option<String> {
        self.scope
            .iter()
            .rev()
            .flatten()
            .find(|r| r.name == name)
            .and_then(|r| match &r.kind {
                RelKind::Table(t) => Some(t.name.to_string()),
                RelKind::Derived(cols, complete) => {
                    (!complete || cols.iter().any(|(_, c)| c.is_some())).then(|| self.first())
                }
                RelKind::Opaque => None,
            })
    }

    /// The row filter the role's policies put on `t` for `command` (a
    /// [`crate::policy::Commands`] constant): `None` when no policy applies to the statement
    /// (the table has none, or the role bypasses them); `false` when the table has policies
    /// but none for this role and command.
    fn row_filter(&self, t: &Table, command: u8) -> Res<Option<String>> {
        if t.policies.is_empty() || !self.access.filtered() {
            return Ok(None);
        }
        let mut terms = Vec::new();
        for p in &t.policies {
            if !p.commands.has(command) || !p.roles.iter().any(|r| r == self.access.role()) {
                continue;
            }
            let name = format!("{}.{}", t.name, p.name);
            let mut applied = self.applied.borrow_mut();
            if !applied.contains(&name) {
                applied.push(name);
            }
            drop(applied);
            match &p.using {
                None => return Ok(Some("true".to_owned())),
                Some(u) => terms.push(format!("({})", self.for_user(u, p, t)?)),
            }
        }
        Ok(Some(if terms.is_empty() {
            "false".to_owned()
        } else {
            terms.join(" OR ")
        }))
    }

    /// A policy condition with the user's attributes written in.
    fn for_user(
        &self,
        e: &crate::policy::PolicyExpr,
        p: &crate::policy::RowPolicy,
        t: &Table,
    ) -> Res<String> {
        e.for_user(self.access.attributes).ok_or_else(|| {
            Refusal::new(
                "42501",
                format!(
                    "row policy {} of table {} needs a user attribute the user lacks",
                    p.name, t.name
                ),
                "an administrator must give the user its attributes in users.toml",
            )
        })
    }

    /// `(SELECT * FROM schema.table WHERE filter) AS alias`: the rows of `t` the role may
    /// read. The planner merges the filter with the caller's conditions (indexes keep
    /// working); the native row-level security policies are what keeps a leaky condition
    /// from seeing other rows.
    fn filtered_factor(&self, t: &Table, alias: &str, filter: &str) -> Res<TableFactor> {
        let sql = format!(
            "SELECT * FROM (SELECT * FROM {}.{} WHERE {filter}) AS {}",
            Ident::with_quote('"', &t.name.schema),
            Ident::with_quote('"', &t.name.table),
            Ident::with_quote('"', alias),
        );
        let broken = || Refusal::unsupported("a row policy that does not parse", &t.name);
        let mut parsed =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &sql)
                .map_err(|_| broken())?;
        match parsed.pop() {
            Some(Statement::Query(q)) => match *q.body {
                SetExpr::Select(mut sel) if sel.from.len() == 1 => Ok(sel.from.remove(0).relation),
                _ => Err(broken()),
            },
            _ => Err(broken()),
        }
    }

    /// ANDs the row filter of the target of UPDATE or DELETE (`command`) into its WHERE
    /// clause; reading the table (WHERE, RETURNING) also needs the SELECT policies, as
    /// in PostgreSQL.
    fn filter_target(
        &self,
        t: &Table,
        command: u8,
        selection: &mut Option<Expr>,
        reads: bool,
    ) -> Res {
        let mut terms = Vec::new();
        if let Some(f) = self.row_filter(t, command)? {
            terms.push(f);
        }
        if reads
            && let Some(f) = self.row_filter(t, crate::policy::Commands::SELECT)?
            && !terms.contains(&f)
        {
            terms.push(f);
        }
        if terms.is_empty() {
            return Ok(());
        }
        if let Some(w) = selection.take() {
            terms.push(w.to_string());
        }
        let text = terms
            .iter()
            .map(|t| format!("({t})"))
            .collect::<Vec<_>>()
            .join(" AND ");
        *selection = Some(policy_expr(&text, t)?);
        Ok(())
    }

    /// ANDs the row filters of UPDATE and SELECT on `t` into the WHERE clause of
    /// `ON CONFLICT DO UPDATE`, so that the conflicting row is updated only when the role
    /// may read and update it. The policies' columns are qualified with the target's name
    /// (`EXCLUDED` is in scope there too); a policy with a subquery, whose columns cannot be
    /// told apart that way, is refused here.
    fn filter_conflict(&self, t: &Table, target: &Ident, selection: &mut Option<Expr>) -> Res {
        let mut terms: Vec<String> = Vec::new();
        for command in [
            crate::policy::Commands::UPDATE,
            crate::policy::Commands::SELECT,
        ] {
            if let Some(f) = self.row_filter(t, command)?
                && !terms.contains(&f)
            {
                terms.push(f);
            }
        }
        if terms.is_empty() {
            return Ok(());
        }
        let text = terms
            .iter()
            .map(|t| format!("({t})"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut expr = self.policy_condition(t, &text, target, &[])?;
        if let Some(w) = selection.take() {
            expr = Expr::BinaryOp {
                left: Box::new(Expr::Nested(Box::new(expr))),
                op: BinaryOperator::And,
                right: Box::new(Expr::Nested(Box::new(w))),
            };
        }
        *selection = Some(expr);
        Ok(())
    }

    fn qualified(&self, rel: &str, col: &str) -> Option<Arc<Column>> {
        for level in self.scope.iter().rev() {
            if let Some(r) = level.iter().find(|r| r.name == rel) {
                return match &r.kind {
                    RelKind::Table(t) => t.protected.get(col).cloned(),
                    RelKind::Derived(cols, _) => cols
                        .iter()
                        .find(|(n, _)| n == col)
                        .and_then(|(_, c)| c.clone()),
                    RelKind::Opaque => None,
                };
            }
        }
        None
    }

    fn unqualified(&self, col: &str) -> Res<Option<Arc<Column>>> {
        let mut unsure = false;
        for level in self.scope.iter().rev() {
            for r in level {
                match &r.kind {
                    RelKind::Table(t) if t.columns.iter().any(|c| c == col) => {
                        return Ok(t.protected.get(col).cloned());
                    }
                    RelKind::Derived(cols, complete) => {
                        if let Some((_, c)) = cols.iter().find(|(n, _)| n == col) {
                            return Ok(c.clone());
                        }
                        unsure |= !complete;
                    }
                    RelKind::Opaque => unsure = true,
                    RelKind::Table(_) => {}
                }
            }
            if unsure {
                // The name may belong to a table phigate does not know, or to a protected
                // column further out: refuse rather than guess.
                let outer = self.scope.iter().flatten().find_map(|r| match &r.kind {
                    RelKind::Table(t) => t.protected.get(col),
                    RelKind::Derived(cols, _) => cols
                        .iter()
                        .find(|(n, _)| n == col)
                        .and_then(|(_, c)| c.as_ref()),
                    RelKind::Opaque => None,
                });
                if let Some(c) = outer {
                    return Err(Refusal::encrypted(
                        c,
                        "the unqualified name could also refer to another table's column",
                        "qualify the column with its table or alias",
                    ));
                }
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// A FROM item adds its relations to the innermost scope level.
    fn add_from(&mut self, item: &mut TableWithJoins) -> Res {
        self.factor(&mut item.relation)?;
        for join in &mut item.joins {
            self.factor(&mut join.relation)?;
        }
        for join in &mut item.joins {
            use sqlparser::ast::{JoinConstraint as C, JoinOperator as J};
            let constraint = match &mut join.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Right(c)
                | J::RightOuter(c)
                | J::FullOuter(c)
                | J::CrossJoin(c) => c,
                _ => return Err(Refusal::unsupported("this kind of join", self.first())),
            };
            match constraint {
                C::On(e) => self.predicate(e)?,
                C::None => {}
                C::Using(cols) => {
                    for c in cols.iter() {
                        let name = idents(c).pop().unwrap_or_default();
                        if let Some(col) = self.level_column(&name) {
                            return Err(Refusal::encrypted(
                                &col,
                                "JOIN ... USING over an encrypted column is not supported",
                                "write the join condition with ON",
                            ));
                        }
                    }
                }
                _ => {
                    return Err(Refusal::unsupported(
                        "NATURAL joins with a protected table",
                        self.first(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn level_column(&self, name: &str) -> Option<Arc<Column>> {
        self.scope.last()?.iter().find_map(|r| match &r.kind {
            RelKind::Table(t) => t.protected.get(name).cloned(),
            RelKind::Derived(cols, _) => cols
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, c)| c.clone()),
            RelKind::Opaque => None,
        })
    }

    fn factor(&mut self, f: &mut TableFactor) -> Res {
        let rel = match f {
            TableFactor::Table {
                name, alias, args, ..
            } if args.is_none() && self.cte(name).is_some() => {
                let (mut cols, complete) = self.cte(name).cloned().unwrap_or_default();
                if let Some(a) = alias {
                    for (slot, renamed) in cols.iter_mut().zip(&a.columns) {
                        slot.0 = fold(&renamed.name);
                    }
                }
                let own = idents(name).pop().unwrap_or_default();
                Rel {
                    name: alias.as_ref().map(|a| fold(&a.name)).unwrap_or(own),
                    kind: RelKind::Derived(cols, complete),
                }
            }
            TableFactor::Table {
                name, alias, args, ..
            } => {
                let protected = self.protected_table(name);
                let own = idents(name).pop().unwrap_or_default();
                let rel_name = alias.as_ref().map(|a| fold(&a.name)).unwrap_or(own);
                match protected {
                    Some(t) if args.is_none() => {
                        if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
                            return Err(Refusal::unsupported(
                                "column aliases on a protected table",
                                self.first(),
                            ));
                        }
                        let target = std::mem::take(&mut self.target);
                        if !target
                            && let Some(filter) =
                                self.row_filter(&t, crate::policy::Commands::SELECT)?
                        {
                            *f = self.filtered_factor(&t, &rel_name, &filter)?;
                        }
                        Rel {
                            name: rel_name,
                            kind: RelKind::Table(t),
                        }
                    }
                    Some(_) => {
                        return Err(Refusal::unsupported("this table reference", self.first()));
                    }
                    None => Rel {
                        name: rel_name,
                        kind: RelKind::Opaque,
                    },
                }
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                // A non-LATERAL subquery cannot see its siblings: hide the current level.
                let hidden = (!*lateral).then(|| self.scope.pop()).flatten();
                let result = self.query(subquery, Output::Origin);
                if let Some(level) = hidden {
                    self.scope.push(level);
                }
                let (mut cols, complete) = result?;
                if let Some(a) = alias {
                    for (slot, renamed) in cols.iter_mut().zip(&a.columns) {
                        slot.0 = fold(&renamed.name);
                    }
                }
                Rel {
                    name: alias.as_ref().map(|a| fold(&a.name)).unwrap_or_default(),
                    kind: RelKind::Derived(cols, complete),
                }
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if alias.is_some() {
                    return Err(Refusal::unsupported("an aliased join", self.first()));
                }
                return self.add_from(table_with_joins);
            }
            other => {
                self.forbid_in(other, "a table function")?;
                Rel {
                    name: String::new(),
                    kind: RelKind::Opaque,
                }
            }
        };
        if let Some(level) = self.scope.last_mut() {
            level.push(rel);
        }
        Ok(())
    }

    /// A query; returns its output columns (name, protected column) and whether the list
    /// is complete.
    fn query(&mut self, q: &mut Query, out: Output) -> Res<Outputs> {
        self.with(q)?;
        // ORDER BY sees the select's FROM items: keep its scope level until the end.
        self.scope.push(Vec::new());
        let result = self.query_in_level(q, out);
        self.scope.pop();
        self.ctes.pop();
        result
    }

    /// A common table expression named `name` in scope.
    fn cte(&self, name: &ObjectName) -> Option<&Outputs> {
        let [ObjectNamePart::Identifier(id)] = name.0.as_slice() else {
            return None;
        };
        let id = fold(id);
        self.ctes
            .iter()
            .rev()
            .flat_map(|level| level.iter().rev())
            .find(|(n, _)| *n == id)
            .map(|(_, o)| o)
    }

    /// Analyses a WITH clause and brings its CTEs into scope (always pushes a level).
    fn with(&mut self, q: &mut Query) -> Res {
        let mut level = Vec::new();
        if let Some(w) = &mut q.with {
            if w.recursive {
                return Err(Refusal::unsupported("WITH RECURSIVE", self.first()));
            }
            for cte in &mut w.cte_tables {
                // Each CTE sees the ones before it.
                self.ctes.push(std::mem::take(&mut level));
                let result = self.query(&mut cte.query, Output::Origin);
                level = self.ctes.pop().unwrap_or_default();
                let (mut cols, complete) = result?;
                for (slot, renamed) in cols.iter_mut().zip(&cte.alias.columns) {
                    slot.0 = fold(&renamed.name);
                }
                level.push((fold(&cte.alias.name), (cols, complete)));
            }
        }
        self.ctes.push(level);
        Ok(())
    }

    fn query_in_level(&mut self, q: &mut Query, out: Output) -> Res<Outputs> {
        let result = self.body(&mut q.body, &out)?;
        if let Some(ob) = &q.order_by {
            match &ob.kind {
                OrderByKind::Expressions(items) => {
                    for item in items {
                        self.order_key(&item.expr, &result.0)?;
                    }
                }
                OrderByKind::All(_) => {
                    return Err(Refusal::unsupported("ORDER BY ALL", self.first()));
                }
            }
        }
        if let Some(l) = &q.limit_clause {
            self.forbid_in(l, "LIMIT")?;
        }
        if let Some(f) = &q.fetch {
            self.forbid_in(f, "FETCH")?;
        }
        if !q.pipe_operators.is_empty() || q.for_clause.is_some() || q.settings.is_some() {
            return Err(Refusal::unsupported("this query form", self.first()));
        }
        Ok(result)
    }

    /// A query body: SELECT, a set operation, VALUES.
    fn body(&mut self, body: &mut SetExpr, out: &Output) -> Res<Outputs> {
        Ok(match body {
            SetExpr::Select(s) => self.select(s, out.clone())?,
            SetExpr::Query(inner) => self.query(inner, out.clone())?,
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                let mut sides = Vec::with_capacity(2);
                for side in [left, right] {
                    self.scope.push(Vec::new());
                    let r = self.body(side, out);
                    self.scope.pop();
                    sides.push(r?);
                }
                let all = matches!(set_quantifier, sqlparser::ast::SetQuantifier::All);
                self.set_operation(&sides[0], &sides[1], all, &op.to_string())?
            }
            SetExpr::Values(v) => {
                for row in &v.rows {
                    for e in &row.content {
                        self.forbid(e, "a VALUES list")?;
                    }
                }
                (Vec::new(), false)
            }
            SetExpr::Insert(stmt) | SetExpr::Update(stmt) | SetExpr::Delete(stmt)
                if matches!(out, Output::Origin) =>
            {
                // A data-modifying CTE: the statement is analysed (and filtered) as it
                // would be on its own; its RETURNING list is the CTE's output.
                let outputs = self.outputs.take();
                self.returned = None;
                self.statement(stmt)?;
                self.outputs = outputs;
                self.returned.take().unwrap_or_default()
            }
            _ => return Err(Refusal::unsupported("this query form", self.first())),
        })
    }

    /// The outputs of `left <op> right`: each position must be plain on both sides, or the
    /// same cipher on both (deterministic unless ALL, since duplicates are compared).
    fn set_operation(&self, left: &Outputs, right: &Outputs, all: bool, op: &str) -> Res<Outputs> {
        let protected = |o: &Outputs| o.0.iter().any(|(_, c)| c.is_some());
        if !(left.1 && right.1) {
            if let Some(c) = left.0.iter().chain(&right.0).find_map(|(_, c)| c.as_ref()) {
                return Err(Refusal::encrypted(
                    c,
                    &format!("phigate cannot line up the columns of this {op}"),
                    "list the columns of each side explicitly",
                ));
            }
            return Ok((Vec::new(), false));
        }
        if !protected(left) && !protected(right) {
            return Ok((left.0.clone(), true));
        }
        let mut cols = Vec::with_capacity(left.0.len());
        for (i, (name, l)) in left.0.iter().enumerate() {
            let r = right.0.get(i).and_then(|(_, c)| c.as_ref());
            let col = match (l, r) {
                (None, None) => None,
                (Some(a), Some(b))
                    if a.identity == b.identity && a.logical_type() == b.logical_type() =>
                {
                    if !all && !a.deterministic() {
                        return Err(Refusal::randomized(a, &format!("{op} without ALL")));
                    }
                    Some(a.clone())
                }
                (Some(c), _) | (None, Some(c)) => {
                    return Err(Refusal::encrypted(
                        c,
                        &format!(
                            "each side of {op} must hold the same encrypted column (or domain) in this position"
                        ),
                        "select the same column, or a column of the same domain, on both sides",
                    ));
                }
            };
            cols.push((name.clone(), col));
        }
        Ok((cols, true))
    }

    /// ORDER BY on an encrypted column would sort ciphertext: refused.
    fn order_key(&mut self, e: &Expr, outputs: &[(String, Option<Arc<Column>>)]) -> Res {
        let by_output = match unnest(e) {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| outputs.get(i.wrapping_sub(1))),
                _ => None,
            },
            Expr::Identifier(i) => outputs.iter().find(|(n, _)| *n == fold(i)),
            _ => None,
        };
        if let Some((_, Some(col))) = by_output {
            return Err(Refusal::order_by(col));
        }
        match self.resolve(e)? {
            Some(col) => Err(Refusal::order_by(&col)),
            None => self.forbid(e, "ORDER BY"),
        }
    }

    fn select(&mut self, s: &mut Select, out: Output) -> Res<Outputs> {
        if s.top.is_some()
            || s.into.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.connect_by.is_empty()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || !s.named_window.is_empty()
            || s.qualify.is_some()
            || s.exclude.is_some()
            || s.value_table_mode.is_some()
        {
            return Err(Refusal::unsupported("this SELECT form", self.first()));
        }
        self.select_body(s, out)
    }

    fn select_body(&mut self, s: &mut Select, out: Output) -> Res<Outputs> {
        for item in &mut s.from {
            self.add_from(item)?;
        }
        if let Some(w) = &mut s.selection {
            self.predicate(w)?;
        }
        match &s.group_by {
            GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty()
                    && exprs
                        .iter()
                        .any(|e| self.resolve(e).ok().flatten().is_some())
                {
                    return Err(Refusal::unsupported("GROUP BY modifiers", self.first()));
                }
                for e in exprs {
                    self.group_key(e)?;
                }
            }
            GroupByExpr::All(_) => {
                return Err(Refusal::unsupported("GROUP BY ALL", self.first()));
            }
        }
        if let Some(h) = &mut s.having {
            self.predicate(h)?;
        }
        if let Some(Distinct::On(exprs)) = &s.distinct {
            for e in exprs {
                self.group_key(e)?;
            }
        }
        let outputs = self.projection(&mut s.projection, &out)?;
        if matches!(s.distinct, Some(Distinct::Distinct))
            && let Some(col) = outputs
                .0
                .iter()
                .find_map(|(_, c)| c.as_ref().filter(|c| !c.deterministic()))
        {
            return Err(Refusal::randomized(col, "DISTINCT"));
        }
        Ok(outputs)
    }

    /// GROUP BY / DISTINCT ON keys: deterministic columns group correctly on ciphertext.
    fn group_key(&mut self, e: &Expr) -> Res {
        match self.resolve(e)? {
            Some(col) if col.deterministic() => Ok(()),
            Some(col) => Err(Refusal::randomized(&col, "grouping")),
            None => self.forbid(e, "GROUP BY"),
        }
    }

    /// A select list or RETURNING list.
    fn projection(&mut self, items: &mut [SelectItem], out: &Output) -> Res<Outputs> {
        let mut cols = Vec::new();
        let mut complete = true;
        if let Output::Insert(targets) = out {
            return self.insert_values(items, targets);
        }
        for item in items.iter() {
            match item {
                SelectItem::Wildcard(opts) => {
                    if opts.opt_except.is_some()
                        || opts.opt_exclude.is_some()
                        || opts.opt_replace.is_some()
                        || opts.opt_rename.is_some()
                        || opts.opt_ilike.is_some()
                    {
                        return Err(Refusal::unsupported("wildcard modifiers", self.first()));
                    }
                    let level: Vec<usize> = (0..self.scope.last().map_or(0, Vec::len)).collect();
                    for i in level {
                        complete &= self.expand(i, &mut cols, out)?;
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let name = match kind {
                        SelectItemQualifiedWildcardKind::ObjectName(n) => {
                            idents(n).pop().unwrap_or_default()
                        }
                        SelectItemQualifiedWildcardKind::Expr(e) => {
                            self.forbid(e, "a wildcard")?;
                            complete = false;
                            continue;
                        }
                    };
                    let pos = self
                        .scope
                        .last()
                        .and_then(|l| l.iter().position(|r| r.name == name));
                    match pos {
                        Some(i) => complete &= self.expand(i, &mut cols, out)?,
                        None => complete = false,
                    }
                }
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    let alias = match item {
                        SelectItem::ExprWithAlias { alias, .. } => Some(fold(alias)),
                        _ => None,
                    };
                    let own = match unnest(e) {
                        Expr::Identifier(i) => Some(fold(i)),
                        Expr::CompoundIdentifier(is) => is.last().map(fold),
                        _ => None,
                    };
                    let name = alias.or(own).unwrap_or_else(|| "?column?".to_owned());
                    match self.resolve(e)? {
                        Some(col) => {
                            self.output(&col, out)?;
                            cols.push((name, Some(col)));
                        }
                        None => {
                            self.forbid(e, "an expression")?;
                            cols.push((name, None));
                        }
                    }
                }
                SelectItem::ExprWithAliases { .. } => {
                    return Err(Refusal::unsupported("multiple aliases", self.first()));
                }
            }
        }
        Ok((cols, complete))
    }

    /// The select list of INSERT ... SELECT: what goes into protected columns must be a
    /// literal (encrypted here), a parameter, NULL, or a column of the same cipher.
    fn insert_values(
        &mut self,
        items: &mut [SelectItem],
        targets: &[Option<Arc<Column>>],
    ) -> Res<Outputs> {
        for (i, item) in items.iter_mut().enumerate() {
            let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item
            else {
                return Err(Refusal::unsupported(
                    "INSERT ... SELECT * into a table with encrypted columns",
                    self.first(),
                ));
            };
            match targets.get(i).and_then(Option::as_ref) {
                Some(col) => self.write_value(e, &col.clone(), None)?,
                None => {
                    if self.resolve(e)?.is_some() {
                        return Err(Refusal::unsupported(
                            "INSERT ... SELECT of an encrypted column into a plain column",
                            self.first(),
                        ));
                    }
                    self.forbid(e, "a value")?;
                }
            }
        }
        Ok((Vec::new(), false))
    }

    /// Expands `*` over relation `i` of the innermost level.
    fn expand(&mut self, i: usize, cols: &mut Named, out: &Output) -> Res<bool> {
        let Some(rel) = self.scope.last().and_then(|l| l.get(i)) else {
            return Ok(false);
        };
        let expanded: Vec<(String, Option<Arc<Column>>)> = match &rel.kind {
            RelKind::Table(t) => t
                .columns
                .iter()
                .map(|c| (c.clone(), t.protected.get(c).cloned()))
                .collect(),
            RelKind::Derived(d, complete) => {
                let d = d.clone();
                if !complete {
                    for (_, c) in d.iter() {
                        if let Some(c) = c {
                            self.output(c, out)?;
                        }
                    }
                    cols.extend(d);
                    return Ok(false);
                }
                d
            }
            RelKind::Opaque => return Ok(false),
        };
        for (_, c) in &expanded {
            if let Some(c) = c {
                self.note(c);
                if self.access.outcome(c) == ReadOutcome::Deny {
                    return Err(Refusal::denied(c));
                }
                self.output(c, out)?;
            }
        }
        cols.extend(expanded);
        Ok(true)
    }

    /// A protected column in an output list.
    fn output(&self, col: &Arc<Column>, out: &Output) -> Res {
        if !matches!(out, Output::Origin) {
            return Err(Refusal::encrypted(
                col,
                "an encrypted column cannot be the output of an expression subquery",
                "select the column directly from its table",
            ));
        }
        match self.access.outcome(col) {
            ReadOutcome::Deny => Err(Refusal::denied(col)),
            _ => Ok(()),
        }
    }

    /// A protected column that COPY TO writes out: only plaintext readers may.
    fn copied_out(&self, col: &Arc<Column>) -> Res {
        match self.access.outcome(col) {
            ReadOutcome::Plaintext => Ok(()),
            ReadOutcome::Deny => Err(Refusal::denied(col)),
            _ => Err(Refusal::encrypted(
                col,
                "COPY TO is available only to roles that read it in plaintext",
                "select the columns with SELECT instead",
            )),
        }
    }

    /// A boolean condition (WHERE, ON, HAVING).
    fn predicate(&mut self, e: &mut Expr) -> Res {
        match e {
            Expr::Nested(inner) => self.predicate(inner),
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => self.predicate(expr),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And | BinaryOperator::Or,
                right,
            } => {
                self.predicate(left)?;
                self.predicate(right)
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq | BinaryOperator::NotEq,
                right,
            } => self.equality(left, right),
            Expr::IsDistinctFrom(left, right) | Expr::IsNotDistinctFrom(left, right) => {
                self.equality(left, right)
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => match self.resolve(inner)? {
                Some(_) => Ok(()),
                None => self.forbid(inner, "a condition"),
            },
            Expr::In {
                expr,
                target: InTarget::List(items),
                ..
            } => match self.resolve(expr)? {
                Some(col) => {
                    self.need_deterministic(&col, "IN")?;
                    for item in items {
                        self.compared_value(item, &col)?;
                    }
                    Ok(())
                }
                None => {
                    self.forbid(expr, "a condition")?;
                    items.iter().try_for_each(|i| self.forbid(i, "a condition"))
                }
            },
            Expr::In {
                expr,
                target: InTarget::Subquery(q),
                ..
            } => match self.resolve(expr)? {
                Some(col) => {
                    self.need_deterministic(&col, "IN")?;
                    let (named, _) = self.query(q, Output::Origin)?;
                    match named.as_slice() {
                        [(_, Some(c))] if c.identity == col.identity => Ok(()),
                        _ => Err(Refusal::encrypted(
                            &col,
                            "IN (subquery) must select one column of the same column or domain",
                            "select the matching encrypted column in the subquery",
                        )),
                    }
                }
                None => {
                    self.forbid(expr, "a condition")?;
                    self.query(q, Output::Opaque).map(|_| ())
                }
            },
            Expr::Exists { subquery, .. } => self.query(subquery, Output::Opaque).map(|_| ()),
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } => match self.resolve(left)? {
                Some(col) => {
                    self.need_deterministic(&col, "= ANY")?;
                    self.value_casts(right, &col, true)?;
                    match unnest(right) {
                        Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => {
                            match self.operand(right)? {
                                Operand::Param(n) => self.param(n, ParamUse::Array(col.clone())),
                                _ => Err(Refusal::syntax("bad parameter")),
                            }
                        }
                        _ => match right.as_mut() {
                            Expr::Array(arr) => {
                                for item in &mut arr.elem {
                                    self.compared_value(item, &col)?;
                                }
                                Ok(())
                            }
                            _ => Err(Refusal::encrypted(
                                &col,
                                "= ANY takes a parameter or an ARRAY[...] of literals here",
                                "bind the list as one array parameter",
                            )),
                        },
                    }
                }
                None => self.forbid(e, "a condition"),
            },
            other => self.forbid(other, "a condition"),
        }
    }

    fn need_deterministic(&self, col: &Arc<Column>, what: &str) -> Res {
        if col.deterministic() {
            Ok(())
        } else {
            Err(Refusal::randomized(col, what))
        }
    }

    /// `a = b` / `a <> b` / IS [NOT] DISTINCT FROM.
    fn equality(&mut self, left: &mut Expr, right: &mut Expr) -> Res {
        match (self.operand(left)?, self.operand(right)?) {
            (Operand::Column(a), Operand::Column(b)) => {
                self.need_deterministic(&a, "comparison")?;
                if a.identity == b.identity {
                    Ok(())
                } else {
                    Err(Refusal::encrypted(
                        &a,
                        &format!(
                            "it can only be compared with columns of its own domain, not with {}.{}",
                            b.table, b.name
                        ),
                        "declare both columns deterministic in the same domain",
                    ))
                }
            }
            (Operand::Column(col), _) => {
                self.need_deterministic(&col, "comparison")?;
                self.compared_value(right, &col)
            }
            (_, Operand::Column(col)) => {
                self.need_deterministic(&col, "comparison")?;
                self.compared_value(left, &col)
            }
            _ => {
                self.forbid(left, "a condition")?;
                self.forbid(right, "a condition")
            }
        }
    }

    /// A value compared with a deterministic column: a literal is encrypted, a parameter
    /// is encrypted at Bind.
    fn compared_value(&mut self, e: &mut Expr, col: &Arc<Column>) -> Res {
        self.value_casts(e, col, false)?;
        match self.operand(e)? {
            Operand::Literal(text) => self.encrypt_literal(e, col, &text),
            Operand::Param(n) => self.param(n, ParamUse::Scalar(col.clone())),
            Operand::Null => Ok(()),
            Operand::Column(other) if other.identity == col.identity => Ok(()),
            _ => Err(Refusal::encrypted(
                col,
                "it can only be compared with literals, parameters or columns of its own domain",
                "compare the column itself with a value the application computes",
            )),
        }
    }

    /// Refuses `e` if it uses a protected column or a subquery over a protected table:
    /// phigate cannot compute over ciphertext.
    fn forbid(&self, e: &Expr, context: &str) -> Res {
        self.forbid_in(e, context)
    }

    fn forbid_in<V: sqlparser::ast::Visit>(&self, node: &V, context: &str) -> Res {
        let rel = visit_relations(node, |name| {
            let parts = idents(name);
            let hit = match parts.as_slice() {
                [t] => self.catalog.table(None, t),
                [.., s, t] => self.catalog.table(Some(s), t),
                [] => None,
            };
            match hit {
                Some(t) => ControlFlow::Break(t.name.to_string()),
                None => ControlFlow::Continue(()),
            }
        });
        if let ControlFlow::Break(table) = rel {
            return Err(Refusal::unsupported(
                &format!("a subquery over a protected table in {context}"),
                table,
            ));
        }
        let col = visit_expressions(node, |e| match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match self.resolve(e) {
                Ok(Some(c)) => ControlFlow::Break(Ok(c)),
                Ok(None) => ControlFlow::Continue(()),
                Err(r) => ControlFlow::Break(Err(r)),
            },
            _ => ControlFlow::Continue(()),
        });
        match col {
            ControlFlow::Break(Ok(c)) => Err(Refusal::encrypted(
                &c,
                &format!("{context} cannot be computed over an encrypted column"),
                "use =, <>, IN or IS NULL on the column itself (deterministic columns), or compute in the application",
            )),
            ControlFlow::Break(Err(r)) => Err(r),
            ControlFlow::Continue(()) => Ok(()),
        }
    }
}

fn default_refusal(col: &Column) -> Refusal {
    Refusal::encrypted(
        col,
        "it has a database default, which PostgreSQL would store unencrypted",
        "give the column a value (or NULL) in the statement, and drop the column's default",
    )
}

/// The COPY format phigate can transform, from the statement's options; `None` for
/// binary format or options it does not handle.
fn copy_format(
    options: &[sqlparser::ast::CopyOption],
    legacy: &[sqlparser::ast::CopyLegacyOption],
) -> Option<CopyFormat> {
    use sqlparser::ast::{CopyLegacyCsvOption as L, CopyLegacyOption as LO, CopyOption as O};
    let byte = |c: char| u8::try_from(c).ok().filter(u8::is_ascii);
    let mut f = CopyFormat::text();
    let mut delimiter = None;
    let mut null = None;
    let mut escape = None;
    for o in options {
        match o {
            O::Format(name) => match name.value.to_lowercase().as_str() {
                "text" => f.csv = false,
                "csv" => f.csv = true,
                "binary" => f.binary = true,
                _ => return None,
            },
            O::Delimiter(c) => delimiter = Some(byte(*c)?),
            O::Null(s) => null = Some(s.clone()),
            O::Header(h) => f.header = *h,
            O::Quote(c) => f.quote = byte(*c)?,
            O::Escape(c) => escape = Some(byte(*c)?),
            O::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {
            }
            O::Freeze(_) => {}
            _ => return None,
        }
    }
    for o in legacy {
        match o {
            LO::Csv(csv) => {
                f.csv = true;
                for c in csv {
                    match c {
                        L::Header => f.header = true,
                        L::Quote(q) => f.quote = byte(*q)?,
                        L::Escape(e) => escape = Some(byte(*e)?),
                        _ => return None,
                    }
                }
            }
            LO::Delimiter(c) => delimiter = Some(byte(*c)?),
            LO::Null(s) => null = Some(s.clone()),
            LO::Header => f.header = true,
            LO::Binary => f.binary = true,
            _ => return None,
        }
    }
    if f.binary {
        // PostgreSQL refuses the text options in binary mode
        return (!f.csv && delimiter.is_none() && null.is_none() && escape.is_none() && !f.header)
            .then(CopyFormat::binary);
    }
    if f.csv {
        f.delimiter = b',';
        f.null = String::new();
        f.escape = escape.unwrap_or(f.quote);
    }
    f.delimiter = delimiter.unwrap_or(f.delimiter);
    f.null = null.unwrap_or(f.null);
    Some(f)
}

fn literal_text(v: &Value) -> Option<String> {
    match v {
        Value::SingleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::UnicodeStringLiteral(s)
        | Value::NationalStringLiteral(s)
        | Value::Number(s, _) => Some(s.clone()),
        Value::DollarQuotedString(d) => Some(d.value.clone()),
        Value::Boolean(b) => Some(if *b { "true" } else { "false" }.to_owned()),
        _ => None,
    }
}
