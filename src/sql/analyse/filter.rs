//! Row policies in the rewrite: a protected table read becomes a subquery carrying its
//! row filter; the target of UPDATE and DELETE, and ON CONFLICT, are filtered in place.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Walker<'_> {
    /// The row filter the role's policies put on `t` for `command` (a
    /// [`crate::policy::Commands`] constant): `None` when no policy applies to the statement
    /// (the table has none, or the role bypasses them); `false` when the table has policies
    /// but none for this role and command.
    pub(super) fn row_filter(&self, t: &Table, command: u8) -> Res<Option<String>> {
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
    pub(super) fn for_user(
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
    pub(super) fn filtered_factor(&self, t: &Table, alias: &str, filter: &str) -> Res<TableFactor> {
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
    pub(super) fn filter_target(
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
    pub(super) fn filter_conflict(
        &self,
        t: &Table,
        target: &Ident,
        selection: &mut Option<Expr>,
    ) -> Res {
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
}
