//! The `check` of row policies in the rewrite: every row a statement inserts or updates
//! must satisfy the role's checks, or the statement fails with 42501 from
//! `phigate.check_row(ok, policy)` (installed with the native policies). The rewrite
//! evaluates each check on the new row, with the values the statement gives it:
//! - INSERT: the source becomes `SELECT <casts> FROM (<source>) AS phigate_new (<columns>)
//!   WHERE phigate.check_row(<check over phigate_new>, ...)`;
//! - UPDATE: `WHERE <where> AND CASE WHEN <where> THEN phigate.check_row(<check>) ELSE
//!   false END`, with each assigned column replaced by its new value, so only rows the
//!   statement updates are checked;
//! - ON CONFLICT DO UPDATE: the same, in the DO UPDATE's WHERE clause.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, Expr, Ident, InTarget, Insert, Query, SetExpr,
    Statement, visit_expressions_mut,
};

use super::{Res, Table, Walker, fold, idents, parse_expr, policy_expr};
use crate::policy::Commands;
use crate::sql::Refusal;

/// The alias the rewritten INSERT gives its new rows.
const NEW: &str = "phigate_new";

fn and(left: Expr, right: Expr) -> Expr {
    Expr::BinaryOp {
        left: Box::new(Expr::Nested(Box::new(left))),
        op: BinaryOperator::And,
        right: Box::new(Expr::Nested(Box::new(right))),
    }
}

/// `phigate.check_row(<check>, '<policies>')`.
fn check_call(check: &Expr, names: &str) -> Res<Expr> {
    let text = format!(
        "phigate.check_row({check}, {})",
        crate::policy::quote_text(names)
    );
    parse_expr(&text).ok_or_else(|| Refusal::unsupported("a row policy check", names))
}

/// `CASE WHEN <when> THEN <then> ELSE false END`.
fn case(when: Expr, then: Expr) -> Expr {
    Expr::Case {
        case_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
        end_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
        operand: None,
        conditions: vec![sqlparser::ast::CaseWhen {
            condition: when,
            result: then,
        }],
        else_result: Some(Box::new(Expr::Value(
            sqlparser::ast::Value::Boolean(false).into(),
        ))),
    }
}

impl Walker<'_> {
    /// True when new rows of `t` are checked for this role (INSERT).
    pub(super) fn row_check_applies(&self, t: &Table) -> bool {
        !t.policies.is_empty()
            && self.access.filtered()
            && t.policies
                .iter()
                .any(|p| p.check.is_some() && p.roles.iter().any(|r| r == self.access.role()))
    }

    /// The role's `check` on new rows of `t` for `command` (INSERT or UPDATE): `None` when
    /// nothing is checked (no row policies, the role bypasses them, or every check that
    /// applies is absent); `false` when no policy admits the command.
    fn row_check(&self, t: &Table, command: u8) -> Res<Option<(String, String)>> {
        if t.policies.is_empty() || !self.access.filtered() {
            return Ok(None);
        }
        let mut terms = Vec::new();
        let mut names = Vec::new();
        for p in &t.policies {
            let admits =
                p.commands.has(command) || (command == Commands::INSERT && p.check.is_some());
            if !admits || !p.roles.iter().any(|r| r == self.access.role()) {
                continue;
            }
            names.push(format!("{}.{}", t.name, p.name));
            let Some(check) = &p.check else {
                return Ok(None);
            };
            terms.push(format!("({})", self.for_user(check, p, t)?));
        }
        let mut applied = self.applied.borrow_mut();
        for n in &names {
            if !applied.contains(n) {
                applied.push(n.clone());
            }
        }
        if terms.is_empty() {
            return Ok(Some(("false".into(), format!("of table {}", t.name))));
        }
        Ok(Some((terms.join(" OR "), names.join(", "))))
    }

    /// A policy condition as an expression over one row of `t`: assigned columns replaced
    /// by their new values, the others qualified with `target` (EXCLUDED or a FROM item may
    /// be in scope). A condition with a subquery (whose columns cannot be told apart that
    /// way), on a protected column, or on a column assigned as part of a tuple is refused.
    pub(super) fn policy_condition(
        &self,
        t: &Table,
        check: &str,
        target: &Ident,
        assigned: &[(String, Option<Expr>)],
    ) -> Res<Expr> {
        let mut expr = policy_expr(check, t)?;
        let mut problem: Option<String> = None;
        let _ = visit_expressions_mut(&mut expr, |e| {
            match e {
                Expr::Subquery(_)
                | Expr::Exists { .. }
                | Expr::In {
                    target: InTarget::Subquery(_),
                    ..
                } => {
                    problem = Some("a row policy with a subquery here".into());
                }
                Expr::Identifier(id) if t.columns.contains(&fold(id)) => {
                    let name = fold(id);
                    if t.protected.contains_key(&name) {
                        problem = Some(format!("a row policy on encrypted column {name}"));
                    }
                    match assigned.iter().find(|(n, _)| *n == name) {
                        Some((_, Some(value))) => *e = Expr::Nested(Box::new(value.clone())),
                        Some((_, None)) => {
                            problem = Some(format!(
                                "a row policy on column {name} assigned as part of a tuple"
                            ));
                        }
                        None => *e = Expr::CompoundIdentifier(vec![target.clone(), id.clone()]),
                    }
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        match problem {
            Some(p) => Err(Refusal::unsupported(&p, &t.name)),
            None => Ok(expr),
        }
    }

    /// Checks the rows UPDATE (or ON CONFLICT DO UPDATE) writes: `selection` becomes
    /// `selection AND CASE WHEN selection THEN phigate.check_row(...) ELSE false END`.
    pub(super) fn check_update(
        &self,
        t: &Table,
        target: &Ident,
        assignments: &[Assignment],
        selection: &mut Option<Expr>,
    ) -> Res {
        let Some((check, names)) = self.row_check(t, Commands::UPDATE)? else {
            return Ok(());
        };
        let mut assigned = Vec::new();
        for a in assignments {
            match &a.target {
                AssignmentTarget::ColumnName(n) => {
                    assigned.push((idents(n).pop().unwrap_or_default(), Some(a.value.clone())));
                }
                AssignmentTarget::Tuple(ns) => {
                    assigned.extend(
                        ns.iter()
                            .map(|n| (idents(n).pop().unwrap_or_default(), None)),
                    );
                }
            }
        }
        let expr = self.policy_condition(t, &check, target, &assigned)?;
        let call = check_call(&expr, &names)?;
        *selection = Some(match selection.take() {
            None => call,
            Some(w) => and(w.clone(), case(w, call)),
        });
        Ok(())
    }

    /// Checks the rows INSERT writes by filtering its source through `phigate.check_row`.
    /// `columns` are the target columns the source fills, in order.
    pub(super) fn check_insert(&self, t: &Table, ins: &mut Insert, columns: &[String]) -> Res {
        let Some((check, names)) = self.row_check(t, Commands::INSERT)? else {
            return Ok(());
        };
        if check == "false" {
            return Err(Refusal::new(
                "42501",
                format!(
                    "role {} may not insert into table {}: no row policy admits it",
                    self.access.role(),
                    t.name
                ),
                "the table's [[policy]] entries list the roles that may insert",
            ));
        }
        let Some(source) = ins.source.as_mut() else {
            return Err(Refusal::unsupported(
                "INSERT ... DEFAULT VALUES under a row policy check",
                &t.name,
            ));
        };
        let columns = drop_default_columns(source, columns, t)?;
        let types: Vec<String> = columns
            .iter()
            .map(|c| column_type(t, c))
            .collect::<Res<_>>()?;
        cast_values(source, &types)?;
        let assigned: Vec<(String, Option<Expr>)> = Vec::new();
        let new = Ident::new(NEW);
        let expr = self.policy_condition(t, &check, &new, &assigned)?;
        if let Some(c) = read_unlisted(&expr, &columns) {
            return Err(Refusal::new(
                "0A000",
                format!(
                    "INSERT into table {} must give column {c}: its row policy check reads it",
                    t.name
                ),
                "list the column in the INSERT with its value",
            ));
        }
        let quoted = |c: &String| Ident::with_quote('"', c).to_string();
        let select: Vec<String> = columns
            .iter()
            .zip(&types)
            .map(|(c, ty)| format!("{NEW}.{}::{ty}", quoted(c)))
            .collect();
        let list: Vec<String> = columns.iter().map(quoted).collect();
        let sql = format!(
            "SELECT {} FROM ({source}) AS {NEW} ({}) WHERE {}",
            select.join(", "),
            list.join(", "),
            check_call(&expr, &names)?
        );
        let parsed =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &sql)
                .ok()
                .and_then(|mut v| v.pop());
        let Some(Statement::Query(q)) = parsed else {
            return Err(Refusal::unsupported(
                "this INSERT under a row policy check",
                &t.name,
            ));
        };
        ins.source = Some(q);
        ins.columns = columns
            .iter()
            .map(|c| sqlparser::ast::ObjectName::from(vec![Ident::with_quote('"', c)]))
            .collect();
        Ok(())
    }
}

/// The SQL type of column `c` of `t`.
fn column_type(t: &Table, c: &str) -> Res<String> {
    t.columns
        .iter()
        .position(|n| n == c)
        .and_then(|i| t.types.get(i))
        .cloned()
        .ok_or_else(|| {
            Refusal::new(
                "42703",
                format!("column {c} of table {} does not exist", t.name),
                "check the column list",
            )
        })
}

/// A column of the new row that a check reads and the INSERT does not list.
fn read_unlisted(expr: &Expr, columns: &[String]) -> Option<String> {
    let mut found = None;
    let mut probe = expr.clone();
    let _ = visit_expressions_mut(&mut probe, |e| {
        if let Expr::CompoundIdentifier(parts) = e
            && parts.len() == 2
            && parts[0].value == NEW
            && !columns.contains(&fold(&parts[1]))
        {
            found = Some(fold(&parts[1]));
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// Rewrites DEFAULT in a VALUES source, which a subquery's VALUES cannot say: NULL for a
/// column without a default; a column with one is dropped when every row says DEFAULT, and
/// refused when only some do.
fn drop_default_columns(source: &mut Query, columns: &[String], t: &Table) -> Res<Vec<String>> {
    let SetExpr::Values(values) = source.body.as_mut() else {
        return Ok(columns.to_vec());
    };
    let width = values.rows.first().map_or(0, |r| r.content.len());
    let is_default = |e: &Expr| matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"));
    let mut keep = Vec::new();
    for (i, column) in columns.iter().enumerate().take(width) {
        let defaults = values
            .rows
            .iter()
            .filter(|r| r.content.get(i).is_some_and(is_default))
            .count();
        if defaults == 0 || !t.with_default.contains(column) {
            keep.push(i);
            for row in &mut values.rows {
                if let Some(e) = row.content.get_mut(i).filter(|e| is_default(e)) {
                    *e = Expr::Value(sqlparser::ast::Value::Null.into());
                }
            }
        } else if defaults != values.rows.len() {
            return Err(Refusal::unsupported(
                "DEFAULT in some rows of a multi-row INSERT under a row policy check (for a column with a default)",
                &t.name,
            ));
        }
    }
    for row in &mut values.rows {
        let content = std::mem::take(&mut row.content);
        row.content = content
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, e)| e)
            .collect();
    }
    Ok(keep.iter().map(|&i| columns[i].clone()).collect())
}

/// Casts each value of a VALUES source to its column's type, so that PostgreSQL infers
/// the same types for literals and parameters as it would in the plain INSERT.
fn cast_values(source: &mut Query, types: &[String]) -> Res {
    let SetExpr::Values(values) = source.body.as_mut() else {
        return Ok(());
    };
    for row in &mut values.rows {
        for (e, ty) in row.content.iter_mut().zip(types) {
            *e = parse_expr(&format!("({e})::{ty}"))
                .ok_or_else(|| Refusal::unsupported("a value of this INSERT", ty))?;
        }
    }
    Ok(())
}
