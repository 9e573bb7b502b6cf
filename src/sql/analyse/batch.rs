//! The INSERT sources ORMs write for batches of rows, which read their values from a list
//! rather than from a table:
//! - SQLAlchemy's "insertmanyvalues": `SELECT p0::INTEGER, p1::VARCHAR FROM (VALUES ($1, $2,
//!   0), ...) AS imp_sen (p0, p1, sen_counter) ORDER BY sen_counter`;
//! - Django's `bulk_create`: `SELECT * FROM UNNEST(($1)::integer[], ($2)::text[])`.
//!
//! A value reaching an encrypted column is then written exactly as in `VALUES`: literals
//! and parameters encrypted, casts checked and removed (an array parameter is encrypted
//! element by element).

use std::sync::Arc;

use sqlparser::ast::{
    DataType, Expr, GroupByExpr, Query, Select, SelectItem, SetExpr, TableFactor,
};

use super::{
    Operand, Res, Walker, cast_chain, cast_type, fold, parse_expr, peel_casts, wrap_casts,
};
use crate::sql::catalog::Column;
use crate::sql::{ParamUse, Refusal};

/// A column reference under casts: its name and the casts' type names, outermost first.
fn cast_column(e: &Expr) -> Option<(String, Vec<String>)> {
    match peel_casts(e) {
        (Expr::Identifier(i), casts) => Some((fold(i), casts)),
        _ => None,
    }
}

/// A plain `SELECT ... FROM <one item>` without WHERE, GROUP BY, HAVING or DISTINCT.
fn plain_select(s: &Select) -> bool {
    s.distinct.is_none()
        && s.from.len() == 1
        && s.from[0].joins.is_empty()
        && s.selection.is_none()
        && s.having.is_none()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
}

impl Walker<'_> {
    /// Analyses `source` when it has one of the batch shapes; false when it has neither
    /// (the general INSERT ... SELECT analysis applies then). `targets` holds, per target
    /// column, the encrypted column it is.
    pub(super) fn batch_source(
        &mut self,
        source: &mut Query,
        targets: &[Option<Arc<Column>>],
    ) -> Res<bool> {
        if source.with.is_some() || source.limit_clause.is_some() || source.fetch.is_some() {
            return Ok(false);
        }
        let SetExpr::Select(select) = source.body.as_mut() else {
            return Ok(false);
        };
        if !plain_select(select) {
            return Ok(false);
        }
        match &select.from[0].relation {
            TableFactor::UNNEST {
                with_offset: false,
                with_ordinality: false,
                ..
            } if source.order_by.is_none()
                && matches!(select.projection.as_slice(), [SelectItem::Wildcard(_)]) =>
            {
                self.unnest_source(select, targets).map(|()| true)
            }
            TableFactor::Derived {
                lateral: false,
                subquery,
                alias: Some(alias),
                ..
            } if matches!(subquery.body.as_ref(), SetExpr::Values(_))
                && subquery.order_by.is_none()
                && subquery.limit_clause.is_none()
                && !alias.columns.is_empty() =>
            {
                self.values_source(source, targets)
            }
            _ => Ok(false),
        }
    }

    /// `SELECT * FROM UNNEST(a1, a2, ...)`: target column i takes the elements of ai.
    fn unnest_source(&mut self, select: &mut Select, targets: &[Option<Arc<Column>>]) -> Res {
        let TableFactor::UNNEST { array_exprs, .. } = &mut select.from[0].relation else {
            return Ok(());
        };
        if array_exprs.len() != targets.len() {
            return Err(Refusal::unsupported(
                "INSERT ... SELECT * FROM UNNEST(...) with another number of arrays than columns",
                self.first(),
            ));
        }
        for (e, target) in array_exprs.iter_mut().zip(targets) {
            let Some(col) = target else {
                self.forbid(e, "a value")?;
                continue;
            };
            self.note(col);
            self.value_casts(e, col, true)?;
            match self.operand(e)? {
                Operand::Param(n) => self.param(n, ParamUse::Array(col.clone()))?,
                // a client that binds on its side (Django's default with psycopg) writes
                // the array as a literal: each element is encrypted like a VALUES literal
                Operand::Literal(text) => *e = self.encrypted_array(&text, col)?,
                _ => {
                    return Err(Refusal::encrypted(
                        col,
                        "UNNEST takes one array parameter per encrypted column",
                        "bind the column's values as one array parameter",
                    ));
                }
            }
        }
        Ok(())
    }

    /// An array literal's elements encrypted: `ARRAY[decode(...), NULL, ...]::bytea[]`.
    pub(super) fn encrypted_array(&mut self, text: &str, col: &Arc<Column>) -> Res<Expr> {
        let items = crate::protocol::value::parse_text_array(text).map_err(|m| {
            Refusal::new(
                "22P02",
                format!(
                    "an array for encrypted column {} of table {}: {m}",
                    col.name, col.table
                ),
                "write the array as '{a,b,...}'",
            )
        })?;
        let unsupported = || Refusal::unsupported("an array of encrypted values", &col.table);
        let mut array = parse_expr("ARRAY[]::bytea[]").ok_or_else(unsupported)?;
        let Expr::Cast { expr, .. } = &mut array else {
            return Err(unsupported());
        };
        let Expr::Array(sqlparser::ast::Array { elem, .. }) = expr.as_mut() else {
            return Err(unsupported());
        };
        for item in items {
            let mut e = Expr::Value(sqlparser::ast::Value::Null.into());
            if let Some(v) = item {
                self.encrypt_literal(&mut e, col, &v)?;
            }
            elem.push(e);
        }
        Ok(array)
    }

    /// `SELECT c1, c2::t, ... FROM (VALUES ...) AS a (c1, c2, ...) [ORDER BY ...]`: target
    /// column i takes the VALUES column its select item names.
    fn values_source(&mut self, source: &mut Query, targets: &[Option<Arc<Column>>]) -> Res<bool> {
        let SetExpr::Select(select) = source.body.as_mut() else {
            return Ok(false);
        };
        let TableFactor::Derived {
            subquery, alias, ..
        } = &mut select.from[0].relation
        else {
            return Ok(false);
        };
        let names: Vec<String> = alias
            .as_ref()
            .map(|a| a.columns.iter().map(|c| fold(&c.name)).collect())
            .unwrap_or_default();
        if select.projection.len() != targets.len() {
            return Ok(false);
        }
        // the VALUES column each select item names (checked before anything changes)
        let Some(named) = values_columns(&select.projection, &names) else {
            return Ok(false);
        };
        // per VALUES column: the encrypted column its values are written to, and the casts
        // each value takes (those that cut or round it: `p1::VARCHAR(50)`)
        let mut feeds: Vec<Option<(Arc<Column>, Vec<DataType>)>> = vec![None; names.len()];
        for ((item, target), (name, casts, k)) in
            select.projection.iter_mut().zip(targets).zip(named)
        {
            let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item
            else {
                continue;
            };
            let Some(col) = target else { continue };
            if feeds[k].is_some() {
                return Err(Refusal::encrypted(
                    col,
                    "one VALUES column feeds two encrypted columns",
                    "give each column its own values",
                ));
            }
            // the VALUES rows are encrypted as the column's type: only casts that keep
            // its meaning; a length or precision applies to each value
            let cut = cast_type(&casts, col, false, false)?
                .filter(|c| !c.modifiers.is_empty())
                .map(|_| cast_chain(expr))
                .unwrap_or_default();
            *expr = Expr::Identifier(sqlparser::ast::Ident::new(name));
            feeds[k] = Some((col.clone(), cut));
        }
        if let Some(order) = &source.order_by {
            let ordered = order.to_string();
            if feeds.iter().zip(&names).any(|(f, n)| {
                f.is_some()
                    && ordered
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .any(|w| w.eq_ignore_ascii_case(n))
            }) {
                return Err(Refusal::unsupported(
                    "ORDER BY a value written to an encrypted column",
                    self.first(),
                ));
            }
        }
        let SetExpr::Values(values) = subquery.body.as_mut() else {
            return Ok(false);
        };
        self.values_rows(&mut values.rows, &feeds)?;
        Ok(true)
    }

    /// The rows of [`Walker::values_source`]: each value fed to an encrypted column is
    /// written to it, under the casts its select item applies.
    fn values_rows(
        &mut self,
        rows: &mut [sqlparser::ast::Parens<Vec<Expr>>],
        feeds: &[Option<(Arc<Column>, Vec<DataType>)>],
    ) -> Res {
        for row in rows {
            if row.content.len() != feeds.len() {
                return Err(Refusal::syntax("VALUES lists must all be the same length"));
            }
            for (e, feed) in row.content.iter_mut().zip(feeds) {
                match feed {
                    Some((col, cut)) => {
                        wrap_casts(e, cut);
                        self.write_value(e, col, None)?;
                    }
                    None => self.forbid(e, "a value")?,
                }
            }
        }
        Ok(())
    }
}

/// Per select item: the VALUES column (of `names`) it names, under its casts, as (name,
/// casts, index); `None` when an item is anything else.
fn values_columns(
    projection: &[SelectItem],
    names: &[String],
) -> Option<Vec<(String, Vec<String>, usize)>> {
    projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                let (name, casts) = cast_column(e)?;
                let k = names.iter().position(|n| *n == name)?;
                Some((name, casts, k))
            }
            _ => None,
        })
        .collect()
}
