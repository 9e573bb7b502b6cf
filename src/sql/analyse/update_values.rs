//! `UPDATE t SET c = v.x FROM (VALUES (1, 'a'), (2, 'b')) AS v (id, x) WHERE t.id = v.id`:
//! the bulk update by key that hand-written SQL and bulk-update libraries send. A VALUES
//! column assigned to an encrypted column (under casts that keep its meaning) *feeds* it:
//! each row's value is written to the column as in `VALUES` (literals and parameters
//! encrypted, a cast's length applied), and the assignment takes the VALUES column bare.
//!
//! A fed VALUES column then holds ciphertext, so it may appear nowhere else in the
//! statement (a RETURNING of it would hand out the envelope of a chosen value, a condition
//! on it would compare ciphertext with plaintext), and RETURNING may not list it through a
//! wildcard.

use std::sync::Arc;

use sqlparser::ast::{
    AssignmentTarget, DataType, Expr, SelectItem, SetExpr, TableFactor, TableWithJoins, Update,
    UpdateTableFromKind, visit_expressions,
};

use super::{Res, Walker, cast_chain, cast_type, fold, idents, peel_casts, wrap_casts};
use crate::sql::Refusal;
use crate::sql::catalog::{Column, Table};

/// A VALUES column feeding an encrypted column: the FROM item, the column's position, the
/// encrypted column and the casts each value takes (those that cut or round it).
struct Feed {
    from: usize,
    position: usize,
    column: Arc<Column>,
    cut: Vec<DataType>,
}

impl Walker<'_> {
    /// The assignments of `up` fed by a VALUES list in its FROM, handled here: returns
    /// their indexes, which the caller leaves out of its own walk.
    pub(super) fn update_from_values(
        &mut self,
        up: &mut Update,
        target: &Table,
    ) -> Res<Vec<usize>> {
        let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            &up.from
        else {
            return Ok(Vec::new());
        };
        let mut feeds: Vec<Feed> = Vec::new();
        let mut handled = Vec::new();
        for (i, a) in up.assignments.iter().enumerate() {
            let AssignmentTarget::ColumnName(n) = &a.target else {
                continue;
            };
            let Some(column) = idents(n)
                .pop()
                .and_then(|c| target.protected.get(&c).cloned())
            else {
                continue;
            };
            let (inner, casts) = peel_casts(&a.value);
            let Some((from, position, name)) = values_column(from, inner, target) else {
                continue;
            };
            if feeds
                .iter()
                .any(|f| f.from == from && f.position == position)
            {
                return Err(Refusal::encrypted(
                    &column,
                    "one VALUES column feeds two encrypted columns",
                    "give each column its own values",
                ));
            }
            if references(up, &name) != 1 || returns_everything(&up.returning) {
                return Err(Refusal::encrypted(
                    &column,
                    "a VALUES column written to an encrypted column holds ciphertext: it may be used only in that assignment",
                    "use another VALUES column for conditions and RETURNING, and list RETURNING's columns",
                ));
            }
            let cut = cast_type(&casts, &column, false, false)?
                .filter(|c| !c.modifiers.is_empty())
                .map(|_| cast_chain(&a.value))
                .unwrap_or_default();
            feeds.push(Feed {
                from,
                position,
                column,
                cut,
            });
            handled.push(i);
        }
        self.feed(up, &feeds, &handled)?;
        Ok(handled)
    }

    /// Writes each fed VALUES column's rows to its encrypted column, and leaves the fed
    /// assignments (`handled`) the bare VALUES column (its casts would apply to ciphertext).
    fn feed(&mut self, up: &mut Update, feeds: &[Feed], handled: &[usize]) -> Res {
        for &i in handled {
            if let Some(a) = up.assignments.get_mut(i) {
                a.value = peel_casts(&a.value).0.clone();
            }
        }
        let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            &mut up.from
        else {
            return Ok(());
        };
        for feed in feeds {
            let Some(rows) = from.get_mut(feed.from).and_then(values_rows) else {
                continue;
            };
            for row in rows {
                let Some(e) = row.get_mut(feed.position) else {
                    return Err(Refusal::syntax("VALUES lists must all be the same length"));
                };
                wrap_casts(e, &feed.cut);
                self.write_value(e, &feed.column, None)?;
            }
        }
        Ok(())
    }
}

/// The rows of a FROM item that is `(VALUES ...) AS alias (columns)`.
fn values_rows(item: &mut TableWithJoins) -> Option<Vec<&mut Vec<Expr>>> {
    let TableFactor::Derived { subquery, .. } = &mut item.relation else {
        return None;
    };
    match subquery.body.as_mut() {
        SetExpr::Values(v) => Some(v.rows.iter_mut().map(|r| &mut r.content).collect()),
        _ => None,
    }
}

/// The VALUES column `e` names among `from`'s items, as (item, position, column name): a
/// qualified `v.x`, or a bare `x` that is no column of the target.
fn values_column(
    from: &[TableWithJoins],
    e: &Expr,
    target: &Table,
) -> Option<(usize, usize, String)> {
    let (rel, name) = match e {
        Expr::Identifier(i) if !target.columns.contains(&fold(i)) => (None, fold(i)),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [rel, name] => (Some(fold(rel)), fold(name)),
            _ => return None,
        },
        _ => return None,
    };
    let mut found = from.iter().enumerate().filter_map(|(i, item)| {
        let TableFactor::Derived {
            subquery,
            alias: Some(alias),
            ..
        } = &item.relation
        else {
            return None;
        };
        if !matches!(subquery.body.as_ref(), SetExpr::Values(_))
            || rel.as_ref().is_some_and(|r| *r != fold(&alias.name))
        {
            return None;
        }
        let position = alias.columns.iter().position(|c| fold(&c.name) == name)?;
        Some((i, position))
    });
    let (i, position) = found.next()?;
    // a bare name found in two VALUES lists is ambiguous: PostgreSQL refuses it
    found.next().is_none().then_some((i, position, name))
}

/// How many column references in `up` end in `name`, however qualified.
fn references(up: &Update, name: &str) -> usize {
    let mut n = 0;
    let _ = visit_expressions(up, |e| {
        let last = match e {
            Expr::Identifier(i) => Some(i),
            Expr::CompoundIdentifier(parts) => parts.last(),
            _ => None,
        };
        n += usize::from(last.is_some_and(|i| fold(i) == name));
        std::ops::ControlFlow::<()>::Continue(())
    });
    n
}

/// RETURNING `*` or `v.*`: the VALUES columns among what it returns.
fn returns_everything(returning: &Option<Vec<SelectItem>>) -> bool {
    returning.iter().flatten().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    })
}
