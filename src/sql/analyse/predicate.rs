//! Predicates: comparisons with protected columns (equality on deterministic ciphertext
//! only), and refusing what cannot be computed over ciphertext.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Walker<'_> {
    /// Classifies one side of a comparison. A protected column also passes the role check.
    pub(super) fn operand(&mut self, e: &Expr) -> Res<Operand> {
        Ok(match unnest(e) {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match self.resolve(e)? {
                Some(c) => {
                    self.searchable(&c)?;
                    Operand::Column(c)
                }
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

    /// Searching on a column is reading it: a masked value could be probed, so only roles
    /// that read `c` in plaintext may compare it.
    fn searchable(&self, c: &Arc<Column>) -> Res {
        let outcome = self.access.outcome(c);
        if outcome == ReadOutcome::Plaintext {
            return Ok(());
        }
        Err(self.read_as(
            c,
            outcome,
            "search or join on it",
            "only roles that read the column in plaintext may compare it",
        ))
    }

    /// 42501: the role reads `c` as `outcome`, so it may not do what `may_not` says.
    pub(super) fn read_as(
        &self,
        c: &Column,
        outcome: ReadOutcome,
        may_not: &str,
        hint: &str,
    ) -> Refusal {
        Refusal::new(
            "42501",
            format!(
                "role {} reads column {} of table {} as {}, so it may not {may_not}",
                self.access.role(),
                c.name,
                c.table,
                outcome.name()
            ),
            hint,
        )
    }

    /// A boolean condition (WHERE, ON, HAVING).
    pub(super) fn predicate(&mut self, e: &mut Expr) -> Res {
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
            Expr::BinaryOp { left, op, right }
                if comparison(op)
                    && (matches!(unnest(left), Expr::Subquery(_))
                        || matches!(unnest(right), Expr::Subquery(_))) =>
            {
                let equal = matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq);
                self.subquery_comparison(left, right, equal)
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
            } => self.in_list(expr, items),
            Expr::In {
                expr,
                target: InTarget::Subquery(q),
                ..
            } => self.in_subquery(expr, q),
            Expr::Exists { subquery, .. } => self.query(subquery, Output::Opaque).map(|_| ()),
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } => match self.resolve(left)? {
                Some(col) => self.any_of(&col, right),
                None => self.forbid(e, "a condition"),
            },
            other => self.forbid_but_nullness(other, "a condition"),
        }
    }

    /// `expr IN (a, b, ...)`: values compared with a deterministic column are encrypted.
    fn in_list(&mut self, expr: &Expr, items: &mut [Expr]) -> Res {
        if let Expr::Tuple(row) = unnest(expr) {
            return self.rows_in_list(row, items);
        }
        match self.resolve(expr)? {
            Some(col) => {
                self.searchable(&col)?;
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
        }
    }

    /// `(a, b) IN ((x, y), ...)`, as SQLAlchemy's `tuple_(...).in_(...)` and composite keys
    /// send it: position by position, as `a IN (x, ...)` and `b IN (y, ...)` would be
    /// checked (each row of the list is a row comparison with `row`).
    fn rows_in_list(&mut self, row: &[Expr], items: &mut [Expr]) -> Res {
        let mut columns = Vec::with_capacity(row.len());
        for e in row {
            let col = self.resolve(e)?;
            match &col {
                Some(col) => {
                    self.searchable(col)?;
                    self.need_deterministic(col, "IN")?;
                }
                None => self.forbid(e, "a condition")?,
            }
            columns.push(col);
        }
        for item in items {
            let Expr::Tuple(values) = unnest_mut(item) else {
                return self.forbid(item, "a condition");
            };
            if values.len() != columns.len() {
                return Err(Refusal::syntax(
                    "a row in an IN list has another number of columns",
                ));
            }
            for (value, col) in values.iter_mut().zip(&columns) {
                match col {
                    Some(col) => self.compared_value(value, col)?,
                    None => self.forbid(value, "a condition")?,
                }
            }
        }
        Ok(())
    }

    /// `expr IN (subquery)`: a deterministic column against the same column or domain.
    fn in_subquery(&mut self, expr: &Expr, q: &mut Query) -> Res {
        self.against_subquery(expr, q, "IN")
    }

    /// `x <op> (SELECT ...)`, either way round, `op` a comparison (`equal`: `=` or `<>`):
    /// the subquery is walked as a query of its own, row filters and all, as
    /// `IN (subquery)` is.
    fn subquery_comparison(&mut self, left: &mut Expr, right: &mut Expr, equal: bool) -> Res {
        let (value, q) = match (unnest_mut(left), unnest_mut(right)) {
            (Expr::Subquery(q), value) | (value, Expr::Subquery(q)) => (value, q),
            (l, _) => return self.forbid(l, "a condition"),
        };
        if !equal && self.resolve(value)?.is_some() {
            return self.forbid(value, "a range comparison");
        }
        self.against_subquery(value, q, "comparison")
    }

    /// `expr` compared (`what`: IN, a comparison) with what subquery `q` selects: against
    /// a deterministic column the subquery must select one column of the same column or
    /// domain, both readable in plaintext by the role; against anything else it may not
    /// select a protected column, and `expr` may not compute over one.
    fn against_subquery(&mut self, expr: &Expr, q: &mut Query, what: &str) -> Res {
        let Some(col) = self.resolve(expr)? else {
            self.forbid(expr, "a condition")?;
            return self.query(q, Output::Opaque).map(|_| ());
        };
        self.need_deterministic(&col, what)?;
        self.searchable(&col)?;
        let (named, _) = self.query(q, Output::Origin)?;
        match named.as_slice() {
            [(_, Some(c))] if c.identity == col.identity => self.searchable(c),
            _ => Err(Refusal::encrypted(
                &col,
                &format!(
                    "{what} with a subquery must select one column of the same column or domain"
                ),
                "select the matching encrypted column in the subquery",
            )),
        }
    }

    /// `col = ANY(right)` on a deterministic column: an array parameter (encrypted element
    /// by element at Bind), an ARRAY[...] of literals or an array literal (`'{a,b}'`, as
    /// clients that write their values into the text send a list).
    fn any_of(&mut self, col: &Arc<Column>, right: &mut Box<Expr>) -> Res {
        self.searchable(col)?;
        self.need_deterministic(col, "= ANY")?;
        self.value_casts(right, col, true)?;
        if let Expr::Value(v) = unnest(right)
            && matches!(v.value, Value::Placeholder(_))
        {
            return match self.operand(right)? {
                Operand::Param(n) => self.param(n, ParamUse::Array(col.clone())),
                _ => Err(Refusal::syntax("bad parameter")),
            };
        }
        // the casts were checked: the array under them is compared as ciphertext
        let array = cast_layers(right).0.clone();
        **right = array;
        if let Operand::Literal(text) = self.operand(right)? {
            **right = self.encrypted_array(&text, col)?;
            return Ok(());
        }
        match right.as_mut() {
            Expr::Array(arr) => {
                for item in &mut arr.elem {
                    self.compared_value(item, col)?;
                }
                Ok(())
            }
            _ => Err(Refusal::encrypted(
                col,
                "= ANY takes a parameter or an ARRAY[...] of literals here",
                "bind the list as one array parameter",
            )),
        }
    }

    pub(super) fn need_deterministic(&self, col: &Arc<Column>, what: &str) -> Res {
        if col.deterministic() {
            Ok(())
        } else {
            Err(Refusal::randomized(col, what))
        }
    }

    /// `a = b` / `a <> b` / IS [NOT] DISTINCT FROM.
    pub(super) fn equality(&mut self, left: &mut Expr, right: &mut Expr) -> Res {
        if let (Expr::Tuple(ls), Expr::Tuple(rs)) = (unnest_mut(left), unnest_mut(right))
            && ls.len() == rs.len()
        {
            // a row comparison, `(ssn, clinic_id) = ('1', 3)`: its result follows from the
            // pairs' (true when all are equal, false when one differs, else NULL), so each
            // pair is compared as it would be alone
            return (ls.iter_mut().zip(rs)).try_for_each(|(l, r)| self.equality(l, r));
        }
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
                self.forbid_but_nullness(left, "a condition")?;
                self.forbid_but_nullness(right, "a condition")
            }
        }
    }

    /// A value compared with a deterministic column: a literal is encrypted, a parameter
    /// is encrypted at Bind.
    pub(super) fn compared_value(&mut self, e: &mut Expr, col: &Arc<Column>) -> Res {
        let cast = self.value_casts(e, col, false)?;
        match self.operand(e)? {
            Operand::Literal(text) => self.encrypt_literal_as(e, col, &text, cast.as_ref()),
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

    /// [`Walker::forbid`], except that `e` may test a protected column for NULL
    /// (`full_name IS NULL`, `CASE WHEN ssn IS NULL THEN ...`): NULL stays NULL in
    /// ciphertext, as a condition's `IS NULL` relies on.
    pub(super) fn forbid_but_nullness(&self, e: &Expr, context: &str) -> Res {
        let mut probe = e.clone();
        let mut failed = None;
        let _ = sqlparser::ast::visit_expressions_mut(&mut probe, |x| {
            if let Expr::IsNull(inner) | Expr::IsNotNull(inner) = x {
                match self.resolve(inner) {
                    Ok(Some(_)) => **inner = Expr::value(Value::Null),
                    Ok(None) => {}
                    Err(r) => {
                        failed = Some(r);
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        });
        match failed {
            Some(r) => Err(r),
            None => self.forbid(&probe, context),
        }
    }

    /// Refuses `e` if it uses a protected column or a subquery over a protected table:
    /// phigate cannot compute over ciphertext.
    pub(super) fn forbid(&self, e: &Expr, context: &str) -> Res {
        self.forbid_in(e, context)
    }

    pub(super) fn forbid_in<V: sqlparser::ast::Visit>(&self, node: &V, context: &str) -> Res {
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

/// `left <op> right` compares: `=`, `<>`, `<`, `<=`, `>`, `>=`.
fn comparison(op: &BinaryOperator) -> bool {
    use BinaryOperator as B;
    matches!(op, B::Eq | B::NotEq | B::Lt | B::LtEq | B::Gt | B::GtEq)
}
