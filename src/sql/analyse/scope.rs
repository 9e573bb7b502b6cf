//! Names in scope: FROM items (tables, subqueries, joins), CTEs, and the resolution of
//! a column reference to the protected column it is.

#[allow(clippy::wildcard_imports)]
use super::*;
use sqlparser::ast::TableAlias;

impl Walker<'_> {
    /// Resolves a column reference; `Some` when it is a protected column (which the role
    /// may then reference at all).
    pub(super) fn resolve(&self, e: &Expr) -> Res<Option<Arc<Column>>> {
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
    pub(super) fn whole_row(&self, name: &str) -> Option<String> {
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

    pub(super) fn qualified(&self, rel: &str, col: &str) -> Option<Arc<Column>> {
        for level in self.scope.iter().rev() {
            if let Some(r) = level.iter().find(|r| r.name == rel) {
                return r.column(col);
            }
        }
        None
    }

    pub(super) fn unqualified(&self, col: &str) -> Res<Option<Arc<Column>>> {
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
    pub(super) fn add_from(&mut self, item: &mut TableWithJoins) -> Res {
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

    pub(super) fn level_column(&self, name: &str) -> Option<Arc<Column>> {
        self.scope.last()?.iter().find_map(|r| r.column(name))
    }

    pub(super) fn factor(&mut self, f: &mut TableFactor) -> Res {
        let (rel, replacement) = match &mut *f {
            TableFactor::Table {
                name, alias, args, ..
            } if args.is_none() && self.cte(name).is_some() => {
                (self.cte_factor(name, alias.as_ref()), None)
            }
            TableFactor::Table {
                name, alias, args, ..
            } => self.table_factor(name, alias.as_ref(), args.is_some())?,
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => (
                self.derived_factor(*lateral, subquery, alias.as_ref())?,
                None,
            ),
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
                self.forbid_in(&*other, "a table function")?;
                let opaque = Rel {
                    name: String::new(),
                    kind: RelKind::Opaque,
                };
                (opaque, None)
            }
        };
        if let Some(filtered) = replacement {
            *f = filtered;
        }
        if let Some(level) = self.scope.last_mut() {
            level.push(rel);
        }
        Ok(())
    }

    /// A reference to a CTE: its outputs, renamed by the alias's column list.
    fn cte_factor(&self, name: &ObjectName, alias: Option<&TableAlias>) -> Rel {
        let (mut cols, complete) = self.cte(name).cloned().unwrap_or_default();
        rename(&mut cols, alias);
        let own = idents(name).pop().unwrap_or_default();
        Rel {
            name: alias.map(|a| fold(&a.name)).unwrap_or(own),
            kind: RelKind::Derived(cols, complete),
        }
    }

    /// A table by name; a protected table read (not the target of UPDATE or DELETE) is
    /// replaced by a subquery carrying its row filter.
    fn table_factor(
        &mut self,
        name: &ObjectName,
        alias: Option<&TableAlias>,
        has_args: bool,
    ) -> Res<(Rel, Option<TableFactor>)> {
        let protected = self.protected_table(name);
        let own = idents(name).pop().unwrap_or_default();
        let rel_name = alias.map(|a| fold(&a.name)).unwrap_or(own);
        let t = match protected {
            None => {
                let opaque = Rel {
                    name: rel_name,
                    kind: RelKind::Opaque,
                };
                return Ok((opaque, None));
            }
            Some(_) if has_args => {
                return Err(Refusal::unsupported("this table reference", self.first()));
            }
            Some(t) => t,
        };
        if alias.is_some_and(|a| !a.columns.is_empty()) {
            return Err(Refusal::unsupported(
                "column aliases on a protected table",
                self.first(),
            ));
        }
        let target = std::mem::take(&mut self.target);
        let mut replacement = None;
        if !target && let Some(filter) = self.row_filter(&t, crate::policy::Commands::SELECT)? {
            replacement = Some(self.filtered_factor(&t, &rel_name, &filter)?);
        }
        let rel = Rel {
            name: rel_name,
            kind: RelKind::Table(t),
        };
        Ok((rel, replacement))
    }

    /// A subquery in FROM: its outputs, renamed by the alias's column list.
    fn derived_factor(
        &mut self,
        lateral: bool,
        subquery: &mut Query,
        alias: Option<&TableAlias>,
    ) -> Res<Rel> {
        // A non-LATERAL subquery cannot see its siblings: hide the current level.
        let hidden = (!lateral).then(|| self.scope.pop()).flatten();
        let result = self.query(subquery, Output::Origin);
        if let Some(level) = hidden {
            self.scope.push(level);
        }
        let (mut cols, complete) = result?;
        rename(&mut cols, alias);
        Ok(Rel {
            name: alias.map(|a| fold(&a.name)).unwrap_or_default(),
            kind: RelKind::Derived(cols, complete),
        })
    }

    /// A common table expression named `name` in scope.
    pub(super) fn cte(&self, name: &ObjectName) -> Option<&Outputs> {
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
    pub(super) fn with(&mut self, q: &mut Query) -> Res {
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
}

impl Rel {
    /// The protected column `name` of this relation is, if any.
    fn column(&self, name: &str) -> Option<Arc<Column>> {
        match &self.kind {
            RelKind::Table(t) => t.protected.get(name).cloned(),
            RelKind::Derived(cols, _) => cols
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, c)| c.clone()),
            RelKind::Opaque => None,
        }
    }
}

/// Outputs renamed by an alias's column list (`AS a (x, y)`).
fn rename(cols: &mut Named, alias: Option<&TableAlias>) {
    if let Some(a) = alias {
        for (slot, renamed) in cols.iter_mut().zip(&a.columns) {
            slot.0 = fold(&renamed.name);
        }
    }
}
