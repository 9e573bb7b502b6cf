//! The session's prepared statements and portals, one map each: what phigate rewrote in
//! them (to encrypt parameters and decrypt rows) and what the audit log says of them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::audit::Redacted;
use crate::sql::Plan;

use crate::encryption::Shape;

/// A prepared statement phigate rewrote.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) plan: Arc<Plan>,
    /// the parameter types the client declared
    pub(super) declared: Vec<u32>,
    /// the result columns, once PostgreSQL described them
    pub(super) shape: Arc<OnceLock<Shape>>,
}

/// A portal over a rewritten statement: how its rows are decrypted.
#[derive(Debug, Clone)]
pub(super) struct Rows {
    pub(super) plan: Arc<Plan>,
    pub(super) shape: Arc<OnceLock<Shape>>,
    pub(super) formats: Arc<[i16]>,
}

/// A prepared statement.
#[derive(Debug, Default)]
pub(super) struct Statement {
    /// its text as the audit log keeps it
    pub(super) audited: Option<Arc<Redacted>>,
    /// its rewrite, when phigate rewrote it
    pub(super) prepared: Option<Prepared>,
    /// its text, in a delegating service's session (the end user may be named in it, and
    /// a statement is planned again for another end user)
    pub(super) text: Option<Arc<str>>,
}

/// A portal.
#[derive(Debug, Default)]
pub(super) struct Portal {
    /// its statement's text as the audit log keeps it
    pub(super) audited: Option<Arc<Redacted>>,
    /// the keyed hashes of its parameters
    pub(super) hashes: Vec<String>,
    /// how its rows are decrypted, when phigate rewrote its statement
    pub(super) rows: Option<Rows>,
    /// the end user it runs for (a delegating service's)
    pub(super) subject: Option<crate::sql::Subject>,
}

/// Prepared statements and portals by name.
#[derive(Debug, Default)]
pub(super) struct Registry {
    statements: HashMap<String, Statement>,
    portals: HashMap<String, Portal>,
}

impl Registry {
    /// True when a Parse of `name` fails because the statement exists, unless SQL
    /// deallocated it (the unnamed statement is always replaced).
    fn parse_fails(&self, name: &str) -> bool {
        !name.is_empty() && self.statements.contains_key(name)
    }

    /// A Parse: the statement `name` is defined. When the name exists (PostgreSQL refuses
    /// the Parse unless SQL deallocated it), the statement is returned instead, to take
    /// the name's place once PostgreSQL accepts it (see [`Registry::define`]).
    pub(super) fn parse(&mut self, name: &str, statement: Statement) -> Option<Statement> {
        if self.parse_fails(name) {
            return Some(statement);
        }
        self.define(name, statement);
        None
    }

    /// Statement `name` is now `statement`.
    pub(super) fn define(&mut self, name: &str, statement: Statement) {
        if statement.audited.is_none() && statement.prepared.is_none() && statement.text.is_none() {
            self.statements.remove(name);
        } else {
            self.statements.insert(name.to_owned(), statement);
        }
    }

    pub(super) fn statement(&self, name: &str) -> Option<&Statement> {
        self.statements.get(name)
    }

    /// A Bind: the portal `name` is (re)defined.
    pub(super) fn bind(&mut self, name: &str, portal: Portal) {
        if portal.audited.is_none()
            && portal.rows.is_none()
            && portal.hashes.is_empty()
            && portal.subject.is_none()
        {
            self.portals.remove(name);
        } else if let Some(p) = self.portals.get_mut(name) {
            *p = portal;
        } else {
            self.portals.insert(name.to_owned(), portal);
        }
    }

    pub(super) fn portal(&self, name: &str) -> Option<&Portal> {
        self.portals.get(name)
    }

    /// How the rows of portal `name` are decrypted, when phigate rewrote its statement.
    pub(super) fn rows(&self, name: &str) -> Option<&Rows> {
        self.portals.get(name)?.rows.as_ref()
    }

    pub(super) fn close_statement(&mut self, name: &str) {
        self.statements.remove(name);
    }

    pub(super) fn close_portal(&mut self, name: &str) {
        self.portals.remove(name);
    }
}
