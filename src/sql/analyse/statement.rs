//! Statements by kind: queries, cursors, UPDATE and DELETE (their target filtered in
//! place), and any other statement, which may not name a protected table.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Walker<'_> {
    /// The whole statement.
    pub(in crate::sql) fn statement(&mut self, stmt: &mut Statement) -> Res {
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
            Statement::Update(up) => self.update(up),
            Statement::Delete(del) => self.delete(del),
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                payload,
            } => self.copy(
                source,
                (*to, target),
                (options, legacy_options),
                payload.is_some(),
            ),
            other => self.other(other),
        }
    }

    /// The protected table UPDATE or DELETE changes: the first relation of its level.
    pub(super) fn target_table(&self) -> Option<Arc<Table>> {
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
    pub(super) fn where_returning(
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

    /// UPDATE: its target is filtered in place, its assignments written as values.
    fn update(&mut self, up: &mut sqlparser::ast::Update) -> Res {
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
        let fed = match &target {
            Some(t) => self.update_from_values(up, t)?,
            None => Vec::new(),
        };
        for (i, a) in up.assignments.iter_mut().enumerate() {
            if !fed.contains(&i) {
                self.assignment(a, target.as_ref(), None)?;
            }
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

    /// DELETE: its target is filtered in place.
    fn delete(&mut self, del: &mut sqlparser::ast::Delete) -> Res {
        if !del.tables.is_empty() || !del.order_by.is_empty() || del.limit.is_some() {
            return Err(Refusal::unsupported("this form of DELETE", self.first()));
        }
        self.scope.push(Vec::new());
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &mut del.from;
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

    /// Any other statement (BEGIN, SET, ... in a multi-statement string) runs as it is,
    /// unless it names a protected table.
    fn other(&mut self, other: &Statement) -> Res {
        // Statements that do not name a protected table (BEGIN, SET, ... in a
        // multi-statement string) run as they are.
        let text = other.to_string();
        let tokens = crate::sql::firewall::read(&text)?;
        let names = crate::sql::protected_names(self.catalog, &tokens)?;
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
