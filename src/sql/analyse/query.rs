//! Queries: WITH, set operations, SELECT lists (which protected column each output is),
//! ORDER BY and GROUP BY over ciphertext.

#[allow(clippy::wildcard_imports)]
use super::*;
use sqlparser::ast::{DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments};

impl Walker<'_> {
    /// A query; returns its output columns (name, protected column) and whether the list
    /// is complete.
    pub(super) fn query(&mut self, q: &mut Query, out: Output) -> Res<Outputs> {
        self.with(q)?;
        // ORDER BY sees the select's FROM items: keep its scope level until the end.
        self.scope.push(Vec::new());
        let result = self.query_in_level(q, out);
        self.scope.pop();
        self.ctes.pop();
        result
    }

    pub(super) fn query_in_level(&mut self, q: &mut Query, out: Output) -> Res<Outputs> {
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
    pub(super) fn body(&mut self, body: &mut SetExpr, out: &Output) -> Res<Outputs> {
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
    pub(super) fn set_operation(
        &self,
        left: &Outputs,
        right: &Outputs,
        all: bool,
        op: &str,
    ) -> Res<Outputs> {
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
    pub(super) fn order_key(&mut self, e: &Expr, outputs: &[(String, Option<Arc<Column>>)]) -> Res {
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

    pub(super) fn select(&mut self, s: &mut Select, out: Output) -> Res<Outputs> {
        if s.top.is_some()
            || s.into.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.connect_by.is_empty()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || s.qualify.is_some()
            || s.exclude.is_some()
            || s.value_table_mode.is_some()
        {
            return Err(Refusal::unsupported("this SELECT form", self.first()));
        }
        self.select_body(s, out)
    }

    pub(super) fn select_body(&mut self, s: &mut Select, out: Output) -> Res<Outputs> {
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
        // `WINDOW w AS (...)`: checked here, so `OVER w` needs no more
        for sqlparser::ast::NamedWindowDefinition(_, window) in &s.named_window {
            if let sqlparser::ast::NamedWindowExpr::WindowSpec(spec) = window {
                self.window(spec)?;
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
    pub(super) fn group_key(&mut self, e: &Expr) -> Res {
        match self.resolve(e)? {
            Some(col) if col.deterministic() => Ok(()),
            Some(col) => Err(Refusal::randomized(&col, "grouping")),
            None => self.forbid(e, "GROUP BY"),
        }
    }

    /// A select list or RETURNING list.
    pub(super) fn projection(&mut self, items: &mut [SelectItem], out: &Output) -> Res<Outputs> {
        let mut cols = Vec::new();
        let mut complete = true;
        if let Output::Insert(targets) = out {
            return self.insert_values(items, targets);
        }
        for item in items.iter_mut() {
            let alias = match &*item {
                SelectItem::ExprWithAlias { alias, .. } => Some(fold(alias)),
                _ => None,
            };
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
                            let mut col = None;
                            if let Expr::Subquery(q) = unnest_mut(e) {
                                // a scalar subquery: a query of its own, row filters and
                                // all, that may not select a protected column
                                self.query(q, Output::Opaque)?;
                            } else if let Some(c) = self.coalesced(e, out)? {
                                col = Some(c);
                            } else if !self.windowed(e)? && !self.counted_column(e)? {
                                self.forbid_but_nullness(e, "an expression")?;
                            }
                            cols.push((name, col));
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

    /// `count(col)` or `count(DISTINCT col)` of a protected column `col`, as a result
    /// column: counted on ciphertext, which keeps NULL as NULL and, in a deterministic
    /// column, equal values equal (DISTINCT takes what GROUP BY takes). False when `e` is
    /// not such a count.
    fn counted_column(&mut self, e: &Expr) -> Res<bool> {
        let Expr::Function(f) = unnest(e) else {
            return Ok(false);
        };
        let count = builtin(&f.name, "count");
        if !count
            || f.filter.is_some()
            || f.over.is_some()
            || f.null_treatment.is_some()
            || !f.within_group.is_empty()
            || !matches!(f.parameters, FunctionArguments::None)
        {
            return Ok(false);
        }
        let FunctionArguments::List(list) = &f.args else {
            return Ok(false);
        };
        let ([FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))], []) =
            (list.args.as_slice(), list.clauses.as_slice())
        else {
            return Ok(false);
        };
        // (a denied column is refused by `resolve`)
        if self.resolve(arg)?.is_none() {
            return Ok(false);
        }
        if matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct)) {
            self.group_key(arg)?;
        }
        Ok(true)
    }

    /// A window function in a select list, `f(...) OVER (PARTITION BY ... ORDER BY ...)` or
    /// `OVER w`: its window is checked (see [`Walker::window`]; deterministic columns
    /// partition correctly on ciphertext), and the function itself as without its window.
    /// False when `e` is not one.
    fn windowed(&mut self, e: &Expr) -> Res<bool> {
        let Expr::Function(f) = unnest(e) else {
            return Ok(false);
        };
        match &f.over {
            Some(sqlparser::ast::WindowType::WindowSpec(spec)) => self.window(spec)?,
            // defined in the SELECT's WINDOW clause, checked there
            Some(sqlparser::ast::WindowType::NamedWindow(_)) => {}
            None => return Ok(false),
        }
        let mut bare = f.clone();
        bare.over = None;
        let bare = Expr::Function(bare);
        if !self.counted_column(&bare)? {
            self.forbid_but_nullness(&bare, "an expression")?;
        }
        Ok(true)
    }

    /// A window's definition: its partition keys are grouping keys, its ORDER BY and frame
    /// offsets may not name an encrypted column.
    fn window(&mut self, spec: &sqlparser::ast::WindowSpec) -> Res {
        for key in &spec.partition_by {
            self.group_key(key)?;
        }
        for o in &spec.order_by {
            self.forbid(&o.expr, "a window's ORDER BY")?;
        }
        if let Some(frame) = &spec.window_frame {
            use sqlparser::ast::WindowFrameBound as B;
            for bound in std::iter::once(&frame.start_bound).chain(&frame.end_bound) {
                if let B::Preceding(Some(offset)) | B::Following(Some(offset)) = bound {
                    self.forbid(offset, "a window frame")?;
                }
            }
        }
        Ok(())
    }

    /// `COALESCE(col, fallback, ...)` of a protected column in a select list: each fallback
    /// is written as a value of the column (a literal encrypted for it, a parameter, NULL,
    /// a column of the same cipher), so every result is the column's ciphertext and is
    /// decrypted as the column is. Returns the column; `None` when `e` is not such a
    /// COALESCE. Only a role that reads the column in plaintext (or as NULL) may use it: a
    /// masked or ciphertext result of a value the statement chose would be an oracle.
    fn coalesced(&mut self, e: &mut Expr, out: &Output) -> Res<Option<Arc<Column>>> {
        let Expr::Function(f) = unnest_mut(e) else {
            return Ok(None);
        };
        let coalesce = builtin(&f.name, "coalesce");
        let FunctionArguments::List(list) = &mut f.args else {
            return Ok(None);
        };
        if !coalesce || f.over.is_some() || f.filter.is_some() || !list.clauses.is_empty() {
            return Ok(None);
        }
        let mut args = list.args.iter_mut().map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => Some(x),
            _ => None,
        });
        let Some(Some(first)) = args.next() else {
            return Ok(None);
        };
        let Some(col) = self.resolve(first)? else {
            return Ok(None);
        };
        self.output(&col, out)?;
        // a masked or ciphertext outcome of a chosen value is an oracle: the keyed hash
        // (`mask:hash`) or deterministic envelope of a guess, to match against other rows
        let outcome = self.access.outcome(&col);
        if !matches!(outcome, ReadOutcome::Plaintext | ReadOutcome::Null) {
            return Err(self.read_as(
                &col,
                outcome,
                "COALESCE it with values of its own",
                "select the column itself",
            ));
        }
        for arg in args {
            let Some(arg) = arg else {
                return Err(Refusal::unsupported(
                    "a named argument of COALESCE",
                    &col.table,
                ));
            };
            self.write_value(arg, &col, None)?;
        }
        Ok(Some(col))
    }

    /// A protected column in an output list.
    pub(super) fn output(&self, col: &Arc<Column>, out: &Output) -> Res {
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
    pub(super) fn copied_out(&self, col: &Arc<Column>) -> Res {
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
}

/// True when a function's `name` is PostgreSQL's `function`, bare or in pg_catalog.
fn builtin(name: &ObjectName, function: &str) -> bool {
    match idents(name).as_slice() {
        [n] => n == function,
        [schema, n] => schema == "pg_catalog" && n == function,
        _ => false,
    }
}
