//! Values written to protected columns: INSERT (VALUES or a query), SET assignments, and
//! the literals (encrypted here) and parameters (encrypted at Bind) they hold.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Walker<'_> {
    pub(super) fn insert(&mut self, ins: &mut Insert) -> Res {
        let TableObject::TableName(name) = &ins.table else {
            return Err(Refusal::unsupported(
                "INSERT INTO a table function",
                self.first(),
            ));
        };
        let name = name.clone();
        let target = self.protected_table(&name);
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
        let targets: Arc<[Option<Arc<Column>>]> = columns
            .iter()
            .map(|c| target.as_ref()?.protected.get(c).cloned())
            .collect();
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
            let unlisted = target.is_some() && ins.columns.is_empty();
            self.insert_source(source, &targets, unlisted)?;
        }
        // The target table is in scope for ON CONFLICT and RETURNING, and so is EXCLUDED.
        let alias = ins.table_alias.as_ref().map(|a| a.alias.clone());
        if let (Some(level), Some(t)) = (self.scope.last_mut(), &target) {
            level.push(Rel {
                name: alias.as_ref().map_or_else(|| t.name.table.clone(), fold),
                kind: RelKind::Table(t.clone()),
            });
        }
        match &mut ins.on {
            None => {}
            Some(OnInsert::OnConflict(oc)) => {
                if let OnConflictAction::DoUpdate(du) = &mut oc.action {
                    let referred = target
                        .as_ref()
                        .map(|t| referred_name(alias.as_ref(), &name, t));
                    self.do_update(du, target.as_ref(), referred)?;
                }
            }
            Some(_) => return Err(Refusal::unsupported("this ON clause", self.first())),
        }
        if let Some(r) = &mut ins.returning {
            let outputs = self.projection(r, &Output::Origin)?;
            self.set_outputs(outputs);
        }
        self.scope.pop();
        match &target {
            Some(t) => self.insert_checks(t, ins, &columns),
            None => Ok(()),
        }
    }

    /// The rows an INSERT writes: VALUES (each value written as to its column), or a query
    /// whose outputs go into the `targets` columns.
    fn insert_source(
        &mut self,
        source: &mut Query,
        targets: &Arc<[Option<Arc<Column>>]>,
        unlisted: bool,
    ) -> Res {
        match source.body.as_mut() {
            SetExpr::Values(values)
                if source.with.is_none()
                    && source.order_by.is_none()
                    && source.limit_clause.is_none() =>
            {
                for row in &mut values.rows {
                    if unlisted && row.content.len() > targets.len() {
                        return Err(Refusal::unsupported(
                            "an INSERT with more values than the table has columns",
                            self.first(),
                        ));
                    }
                    for (i, e) in row.content.iter_mut().enumerate() {
                        match targets.get(i).cloned().flatten() {
                            Some(col) => self.write_value(e, &col, None)?,
                            None => self.forbid(e, "a value")?,
                        }
                    }
                }
            }
            _ if targets.iter().any(Option::is_some) => {
                if !self.batch_source(source, targets)? {
                    self.query(source, Output::Insert(targets.clone()))?;
                }
            }
            _ => {
                self.query(source, Output::Opaque)?;
            }
        }
        Ok(())
    }

    /// ON CONFLICT DO UPDATE: assignments as in UPDATE, with EXCLUDED in scope, filtered
    /// and checked by the row policies of `target` (referred to as `referred`).
    fn do_update(
        &mut self,
        du: &mut sqlparser::ast::DoUpdate,
        target: Option<&Arc<Table>>,
        referred: Option<Ident>,
    ) -> Res {
        if let Some(t) = target
            && let Some(level) = self.scope.last_mut()
        {
            level.push(Rel {
                name: "excluded".into(),
                kind: RelKind::Table(t.clone()),
            });
        }
        for a in &mut du.assignments {
            self.assignment(a, target, Some("excluded"))?;
        }
        if let Some(w) = &mut du.selection {
            self.predicate(w)?;
        }
        if let (Some(t), Some(name)) = (target, referred) {
            self.filter_conflict(t, &name, &mut du.selection)?;
            self.check_update(t, &name, &du.assignments, &mut du.selection)?;
        }
        Ok(())
    }

    /// The row policy check of an INSERT into protected table `t`.
    fn insert_checks(&mut self, t: &Arc<Table>, ins: &mut Insert, columns: &[String]) -> Res {
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
        self.check_insert(t, ins, &filled)
    }

    /// `SET col = value` in UPDATE or ON CONFLICT DO UPDATE.
    pub(super) fn assignment(
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
    pub(super) fn write_value(
        &mut self,
        e: &mut Expr,
        col: &Arc<Column>,
        excluded: Option<&str>,
    ) -> Res {
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
        if self.case_value(e, col, excluded)? {
            return Ok(());
        }
        let cast = self.value_casts(e, col, false)?;
        match self.operand(e)? {
            Operand::Literal(text) => self.encrypt_literal_as(e, col, &text, cast.as_ref()),
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

    /// `CASE WHEN <condition> THEN <value> ... [ELSE <value>] END` written to encrypted
    /// column `col`, as Django's `bulk_update` writes one (cast to the column's type): each
    /// result is a value written to the column and each condition a predicate. The casts
    /// around it are checked as a value's, then dropped: the results are ciphertext.
    /// False when `e` is not a CASE.
    fn case_value(&mut self, e: &mut Expr, col: &Arc<Column>, excluded: Option<&str>) -> Res<bool> {
        let (inner, casts) = peel_casts(e);
        let Expr::Case { .. } = inner else {
            return Ok(false);
        };
        // casts that convert (timestamptz for a timestamp column) or cut (varchar(100))
        // apply to each value
        let converting = cast_type(&casts, col, false, self.ctx.zone.is_some())?
            .filter(|c| c.ty != col.logical_type() || !c.modifiers.is_empty())
            .map(|_| cast_chain(e))
            .unwrap_or_default();
        let mut case = inner.clone();
        let Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } = &mut case
        else {
            return Ok(false);
        };
        // `CASE x WHEN v`: compares x with each v, over plaintext only
        if let Some(op) = operand {
            self.forbid(op, "a CASE comparison")?;
        }
        for when in conditions.iter_mut() {
            match operand {
                Some(_) => self.forbid(&when.condition, "a CASE comparison")?,
                None => self.predicate(&mut when.condition)?,
            }
            self.case_result(&mut when.result, col, excluded, &converting)?;
        }
        if let Some(result) = else_result {
            self.case_result(result, col, excluded, &converting)?;
        }
        *e = case;
        Ok(true)
    }

    /// One result of a CASE written to `col`; a literal or parameter takes the CASE's
    /// converting casts (outermost first), if any, as its own.
    fn case_result(
        &mut self,
        result: &mut Expr,
        col: &Arc<Column>,
        excluded: Option<&str>,
        converting: &[sqlparser::ast::DataType],
    ) -> Res {
        if !converting.is_empty()
            && matches!(
                self.operand(result)?,
                Operand::Literal(_) | Operand::Param(_)
            )
        {
            wrap_casts(result, converting);
        }
        self.write_value(result, col, excluded)
    }

    /// Casts on a value that meets encrypted column `col` (`$1::VARCHAR`, `'x'::text`,
    /// `DATE '...'`, `$1::text[]` when `array`): each must name a type whose values mean
    /// the same in the column's type, else 42846. A cast on a parameter is removed, since
    /// PostgreSQL sees the parameter as bytea; its type is kept for ParameterDescription
    /// and to read the value the client binds.
    /// Returns the type the casts name, which a literal is read as, and their modifiers.
    pub(super) fn value_casts(
        &mut self,
        e: &mut Expr,
        col: &Arc<Column>,
        array: bool,
    ) -> Res<Option<Cast>> {
        let (inner, casts) = peel_casts(e);
        if casts.is_empty() {
            return Ok(None);
        }
        // an array's elements are read as the column's type (in text, without their
        // declared type): only casts that keep the value as it is
        let named = cast_type(&casts, col, array, self.ctx.zone.is_some() && !array)?;
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
            self.param_casts[n - 1].clone_from(&named);
            *e = inner.clone();
        }
        Ok(named)
    }

    /// A literal for encrypted column `col`: checked and made canonical here, left as a
    /// slot the `encryption` module fills at every execution.
    pub(super) fn encrypt_literal(&mut self, e: &mut Expr, col: &Arc<Column>, text: &str) -> Res {
        self.encrypt_literal_as(e, col, text, None)
    }

    /// [`Walker::encrypt_literal`] of a literal under `cast` (see [`literal_canonical`]).
    pub(super) fn encrypt_literal_as(
        &mut self,
        e: &mut Expr,
        col: &Arc<Column>,
        text: &str,
        cast: Option<&Cast>,
    ) -> Res {
        let canonical = literal_canonical(col, cast, text.as_bytes(), self.ctx)?;
        *e = crate::sql::text::marker(self.literals.len());
        self.literals.push(crate::sql::Literal {
            column: col.clone(),
            value: canonical,
        });
        Ok(())
    }

    pub(super) fn param(&mut self, n: usize, use_: ParamUse) -> Res {
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

    /// The select list of INSERT ... SELECT: what goes into protected columns must be a
    /// literal (encrypted here), a parameter, NULL, or a column of the same cipher.
    pub(super) fn insert_values(
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
    pub(super) fn expand(&mut self, i: usize, cols: &mut Named, out: &Output) -> Res<bool> {
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
}

pub(super) fn default_refusal(col: &Column) -> Refusal {
    Refusal::encrypted(
        col,
        "it has a database default, which PostgreSQL would store unencrypted",
        "give the column a value (or NULL) in the statement, and drop the column's default",
    )
}
