//! The session's prepared statements and portals, one [`Names`] each: what phigate
//! rewrote in them (to encrypt parameters and decrypt rows) and what the audit log says of
//! them.

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
    /// the parameters that name a setting it reads or sets, checked at each Bind
    pub(super) bound: Option<Arc<[crate::sql::BoundSetting]>>,
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

/// Values by statement or portal name. The unnamed one (`""`), which most drivers use for
/// every portal and many for every statement, has a slot of its own: it is found without
/// hashing, and without comparing against a stored empty `String`. Such a string's pointer
/// is dangling, and glibc's AVX-512 `memcmp` loads from it under a mask; on AMD processors
/// that load from an unmapped page takes a fault-suppression assist, about 95 ns a
/// comparison on our test host against 3 ns for other keys (see docs/NOTES.md).
#[derive(Debug)]
struct Names<T> {
    unnamed: Option<T>,
    named: HashMap<String, T>,
}

impl<T> Default for Names<T> {
    fn default() -> Self {
        Self {
            unnamed: None,
            named: HashMap::new(),
        }
    }
}

impl<T> Names<T> {
    fn get(&self, name: &str) -> Option<&T> {
        if name.is_empty() {
            return self.unnamed.as_ref();
        }
        self.named.get(name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        if name.is_empty() {
            return self.unnamed.as_mut();
        }
        self.named.get_mut(name)
    }

    fn insert(&mut self, name: &str, value: T) {
        if name.is_empty() {
            self.unnamed = Some(value);
        } else {
            self.named.insert(name.to_owned(), value);
        }
    }

    fn remove(&mut self, name: &str) {
        if name.is_empty() {
            self.unnamed = None;
        } else {
            self.named.remove(name);
        }
    }
}

/// Prepared statements and portals by name.
#[derive(Debug, Default)]
pub(super) struct Registry {
    statements: Names<Statement>,
    portals: Names<Portal>,
}

impl Registry {
    /// True when a Parse of `name` fails because the statement exists, unless SQL
    /// deallocated it (the unnamed statement is always replaced).
    fn parse_fails(&self, name: &str) -> bool {
        !name.is_empty() && self.statements.get(name).is_some()
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
            self.statements.insert(name, statement);
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
            self.portals.insert(name, portal);
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

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn the_unnamed_slot_behaves_as_one_more_name() {
        let mut names = Names::default();
        names.insert("", 1);
        names.insert("s1", 2);
        assert_eq!((names.get(""), names.get("s1")), (Some(&1), Some(&2)));
        if let Some(v) = names.get_mut("") {
            *v = 3;
        }
        names.insert("s1", 4);
        assert_eq!((names.get(""), names.get("s1")), (Some(&3), Some(&4)));
        names.remove("");
        assert_eq!((names.get(""), names.get("s1")), (None, Some(&4)));
        names.remove("s1");
        assert_eq!((names.get(""), names.get("s1")), (None, None));
        assert_eq!(names.get_mut(""), None);
        assert!(
            names.named.is_empty(),
            "the unnamed one never enters the map"
        );
    }
}
