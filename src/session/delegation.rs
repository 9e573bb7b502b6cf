//! Delegated end users in the session (see `policy::delegation`): which end user each
//! statement of a delegating service runs for, and that user's identity set upstream in
//! protocol order, so the native row policies are theirs too.
//!
//! The identity is `phigate.identity`: the end user's role and attributes as JSON, tagged
//! with the session key for this backend. Once any end user's has been set, phigate sets
//! the identity before every statement (the service's own is the empty value): a setting
//! made inside a transaction may be undone by a rollback phigate learns of only later,
//! and a statement that carries its own identity cannot be run under another.

use std::sync::{Arc, OnceLock};

use super::frontend::is_two_words;
use super::queue::{Hidden, Pending};
use super::registry::{Prepared, Statement};
use super::{Outbound, Session};
use crate::encryption;
use crate::policy::session_key::IDENTITY;
use crate::policy::{Delegation, WithoutEndUser};
use crate::protocol::backend::Backend;
use crate::protocol::build;
use crate::protocol::frame::Frame;
use crate::protocol::message::Frontend;
use crate::sql::Analysis;
use crate::sql::{Refusal, Subject};

/// The statement and portal name of phigate's identity setting (closed at once).
const IDENTITY_STATEMENT: &str = "\u{1}phigate_identity";

/// A delegating service's session state.
#[derive(Debug)]
pub(super) struct Delegated {
    rules: Delegation,
    /// the end user `SET phigate.end_user` named
    end_user: Option<String>,
    /// the client's application_name, as last set, and as set at start-up
    app_name: (String, String),
    /// an end user's identity has been set upstream: every statement sets its own now
    injected: bool,
}

impl Delegated {
    /// The state of a session of a service with `rules`, started with `app_name`.
    pub(super) fn new(rules: Delegation, app_name: String) -> Self {
        Self {
            rules,
            end_user: None,
            app_name: (app_name.clone(), app_name),
            injected: false,
        }
    }
}

/// `DISCARD ALL` or `RESET ALL`, alone: they end the session-level end user.
fn resets_all(sql: &str) -> bool {
    is_two_words(sql, "discard", "all") || is_two_words(sql, "reset", "all")
}

impl Session {
    /// The end user a statement with text `sql` runs for; `None` for the session's own
    /// user (no delegation, or none named and the service runs as itself).
    pub(super) fn end_user_of(&self, sql: &str) -> Result<Option<Subject>, Refusal> {
        let (Some(d), Some(g)) = (&self.delegated, &self.guard) else {
            return Ok(None);
        };
        let named = (d.rules.comment.as_deref())
            .and_then(|key| crate::sql::comment_tag(sql, key))
            .or_else(|| d.end_user.clone())
            .or_else(|| d.rules.from_application_name(&d.app_name.0));
        let service = &g.subject.user;
        let Some(name) = named else {
            return match d.rules.without_end_user {
                WithoutEndUser::Service => Ok(None),
                WithoutEndUser::Refuse => Err(Refusal {
                    code: "42501",
                    message: format!("service {service} must name the end user of every statement"),
                    hint: "name them in a comment, the application_name or SET phigate.end_user, as users.toml's `delegate` says".into(),
                }),
            };
        };
        let enforced = g.enforcement.current();
        match enforced.analyzer.policies().user(&name) {
            Some(u) if u.delegate.is_none() => Ok(Some(Subject {
                user: Arc::from(name.as_str()),
                role: Arc::from(u.role.as_str()),
                emergency: false,
            })),
            _ => Err(Refusal {
                code: "42501",
                message: format!(
                    "end user {name:?} named by service {service} is not declared in users.toml"
                ),
                hint: "declare them (auth = \"delegated\" for a person who never logs in directly)"
                    .into(),
            }),
        }
    }

    /// Follows what a simple query does to the end user: `SET phigate.end_user`,
    /// `SET application_name`, `DISCARD ALL` / `RESET ALL`. `Err` when the session may not
    /// name an end user.
    pub(super) fn follow_end_user(
        &mut self,
        msg: &Frontend<'_>,
        set: Option<Option<&str>>,
    ) -> Result<(), Refusal> {
        let Frontend::Query { sql } = msg else {
            return Ok(());
        };
        let Some(d) = &mut self.delegated else {
            return match set {
                Some(_) => Err(Refusal {
                    code: "42501",
                    message: "only a delegating service may name an end user".into(),
                    hint: "users.toml's `delegate` declares which services may, and how".into(),
                }),
                None => Ok(()),
            };
        };
        match set {
            Some(_) if !d.rules.set => Err(Refusal {
                code: "42501",
                message: "this service names its end users otherwise, not by SET phigate.end_user"
                    .into(),
                hint: "users.toml's `delegate` says how (set = true allows the SET)".into(),
            }),
            Some(name) => {
                d.end_user = name.map(str::to_owned);
                Ok(())
            }
            None if resets_all(sql) => {
                d.end_user = None;
                d.app_name.0 = d.app_name.1.clone();
                Ok(())
            }
            None => {
                if let Some(name) = crate::sql::application_name_set(sql) {
                    d.app_name.0 = name;
                }
                Ok(())
            }
        }
    }

    /// Before a statement runs for `who` (`None`: the service itself), the identity
    /// upstream becomes `who`'s, in protocol order: by a simple query before a simple
    /// query, by extended-protocol messages before an Execute. Their answers are hidden.
    pub(super) fn set_identity(&mut self, who: Option<&Subject>, simple: bool, out: &mut Outbound) {
        let Some(d) = &mut self.delegated else { return };
        if who.is_none() && !d.injected {
            return;
        }
        d.injected = true;
        let value = who.map(|s| self.identity_value(s)).unwrap_or_default();
        let sql = format!(
            "SELECT pg_catalog.set_config('{IDENTITY}', {}, false)",
            crate::policy::quote_text(&value)
        );
        if simple {
            build::query(&sql, &mut out.upstream);
            return self.queue.owe_now(Pending::Hidden(Hidden::Query));
        }
        let up = &mut out.upstream;
        build::parse(IDENTITY_STATEMENT, &sql, &[], up);
        build::bind_empty(IDENTITY_STATEMENT, IDENTITY_STATEMENT, up);
        build::execute(IDENTITY_STATEMENT, 0, up);
        build::close(b'P', IDENTITY_STATEMENT, up);
        build::close(b'S', IDENTITY_STATEMENT, up);
        for hidden in [
            Hidden::Completion,
            Hidden::Completion,
            Hidden::Execute,
            Hidden::Completion,
            Hidden::Completion,
        ] {
            self.queue.owe(Pending::Hidden(hidden));
        }
    }

    /// The end user a Bind of statement `name` runs for. A statement planned for someone
    /// else is planned again for them and prepared anew upstream (the answers hidden).
    pub(super) fn bind_subject(
        &mut self,
        name: &str,
        out: &mut Outbound,
    ) -> Result<Option<Subject>, Arc<Refusal>> {
        let Some(statement) = self.statement_now(name).0 else {
            return Ok(None);
        };
        let Some(text) = statement.text.clone() else {
            return Ok(None);
        };
        let planned_for = (statement.prepared.as_ref())
            .and_then(|p| p.plan.subject.as_ref())
            .map(|s| s.user.clone());
        let who = self.end_user_of(&text).map_err(Arc::new)?;
        let wanted = match (&who, &self.guard) {
            (Some(w), _) => Some(w.user.clone()),
            (None, Some(g)) => Some(g.subject.user.clone()),
            (None, None) => None,
        };
        if planned_for.is_some() && planned_for != wanted {
            self.replan(name, &text, who.as_ref(), out)?;
        }
        Ok(who)
    }

    /// Plans statement `name` again for `who` (the service when `None`), and prepares it
    /// anew upstream: Close, Parse and Describe, their answers hidden.
    fn replan(
        &mut self,
        name: &str,
        text: &Arc<str>,
        who: Option<&Subject>,
        out: &mut Outbound,
    ) -> Result<(), Arc<Refusal>> {
        let (Some(g), Some(enforced)) = (&self.guard, self.enforced()) else {
            return Ok(());
        };
        let mut service = g.subject.clone();
        service.emergency = self.emergency.is_some();
        let subject = who.unwrap_or(&service);
        let plan =
            match (enforced.analyzer).analyse_on(subject, self.ctx(), &self.search_path, text) {
                Analysis::Rewrite(plan) => plan,
                Analysis::Refuse(r) => return Err(r),
                _ => return Ok(()),
            };
        let old = self.statement_now(name).0;
        let audited = old.and_then(|s| s.audited.clone());
        let old_bound = old.and_then(|s| s.bound.clone());
        let declared = (old.and_then(|s| s.prepared.as_ref()))
            .map(|p| p.declared.clone())
            .unwrap_or_default();
        let mut parse = bytes::BytesMut::new();
        encryption::parse(name, &plan, &declared, &enforced.ciphers, &mut parse)
            .map_err(Arc::new)?;
        build::close(b'S', name, &mut out.upstream);
        out.upstream.extend_from_slice(&parse);
        build::describe(b'S', name, &mut out.upstream);
        let shape = Arc::new(OnceLock::new());
        self.queue.owe(Pending::Hidden(Hidden::Completion));
        self.queue.owe(Pending::Hidden(Hidden::Completion));
        self.queue
            .owe(Pending::HiddenDescribe(plan.clone(), shape.clone()));
        let prepared = Prepared {
            plan,
            declared,
            shape,
        };
        let statement = Statement {
            audited,
            prepared: Some(prepared),
            text: Some(text.clone()),
            bound: old_bound,
        };
        self.registry.define(name, statement);
        Ok(())
    }

    /// A server message while phigate's own message is at the head of the queue: its
    /// answer is hidden. An error in the extended protocol is the client's to see (the
    /// server now skips the client's messages up to Sync); true when `msg` was handled.
    pub(super) fn hidden_answer(
        &mut self,
        hidden: Hidden,
        msg: &Backend<'_>,
        frame: &Frame,
        out: &mut Outbound,
    ) -> bool {
        let done = match (hidden, msg) {
            (_, Backend::ParameterStatus(_) | Backend::Other) => return false,
            (Hidden::Query, Backend::ReadyForQuery(status)) => {
                self.tx_status = *status;
                true
            }
            (Hidden::Query, _) => false,
            (_, Backend::Error(_)) => {
                out.client.extend_from_slice(frame.raw());
                self.queue.skip_after_error();
                return true;
            }
            (
                Hidden::Completion,
                Backend::ParseComplete | Backend::BindComplete | Backend::CloseComplete,
            )
            | (Hidden::Execute, Backend::CommandComplete(_) | Backend::EmptyQuery) => true,
            (
                Hidden::Execute,
                Backend::DataRow(_) | Backend::RowDescription(_) | Backend::NoData,
            ) => false,
            _ => return false,
        };
        if done {
            self.queue.complete_head();
        }
        true
    }

    /// `who`'s identity for this backend: role and attributes as JSON, tagged.
    fn identity_value(&self, who: &Subject) -> String {
        let Some(g) = &self.guard else {
            return String::new();
        };
        let enforced = g.enforcement.current();
        let mut settings = serde_json::Map::new();
        settings.insert("phigate.role".into(), who.role.as_ref().into());
        if let Some(u) = enforced.analyzer.policies().user(&who.user) {
            for (name, value) in &u.attributes {
                if let Some(text) = crate::policy::setting_text(value) {
                    settings.insert(format!("phigate.user.{name}"), text.into());
                }
            }
        }
        let json = serde_json::Value::Object(settings).to_string();
        g.session_key.identity(&json, g.backend_pid)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resets_are_recognised_alone() {
        for sql in ["DISCARD ALL", " reset  all ;", "discard all;"] {
            assert!(super::resets_all(sql), "{sql}");
        }
        for sql in ["DISCARD PLANS", "RESET ALL; SELECT 1", "reset work_mem"] {
            assert!(!super::resets_all(sql), "{sql}");
        }
    }
}
