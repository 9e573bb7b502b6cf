//! Delegated end users: a service login (an application's pooled connection) that names
//! the person behind each request, so that policies and the audit log are that person's.
//!
//! ```toml
//! [users.ehr_app]
//! role = "app_service"                 # what the service may do on its own
//! scram = "..."
//! delegate = { comment = "db_user", application_name = "ehr:{user}", set = true,
//!              without_end_user = "service" }
//!
//! [users."dr.smith"]
//! role = "clinician"
//! auth = "delegated"                   # named by a service, never logs in itself
//! attributes = { clinic_id = 3 }
//! ```

use serde::Deserialize;

/// What a delegating service's statements run as when they name no end user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WithoutEndUser {
    /// the service's own role
    #[default]
    Service,
    /// refused (42501)
    Refuse,
}

/// The sources a delegating service names its end users by.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// the key of the end user in a leading or trailing SQL comment (sqlcommenter
    /// `/*db_user='dr.smith'*/`, or marginalia `/*db_user:dr.smith*/`)
    #[serde(default)]
    pub comment: Option<String>,
    /// `application_name` as a template with one `{user}` (`ehr:{user}`)
    #[serde(default)]
    pub application_name: Option<String>,
    /// the service may run `SET phigate.end_user = '<user>'` (a simple query), which holds
    /// until changed, `RESET phigate.end_user`, `RESET ALL` or `DISCARD ALL` (simple
    /// queries too)
    #[serde(default)]
    pub set: bool,
    /// what a statement naming no end user runs as
    #[serde(default)]
    pub without_end_user: WithoutEndUser,
}

impl Delegation {
    /// A problem with the declaration: no source, a bad template or key.
    pub(super) fn problem(&self) -> Option<String> {
        if self.comment.is_none() && self.application_name.is_none() && !self.set {
            return Some("names no source of end users (comment, application_name or set)".into());
        }
        if let Some(k) = &self.comment
            && (k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
        {
            return Some(format!(
                "comment key `{k}` must be letters, digits, _ - or ."
            ));
        }
        match &self.application_name {
            Some(t) if t.matches("{user}").count() != 1 => Some(format!(
                "application_name `{t}` must hold `{{user}}` exactly once"
            )),
            _ => None,
        }
    }

    /// The end user an `application_name` names, by the template.
    pub fn from_application_name(&self, name: &str) -> Option<String> {
        let template = self.application_name.as_ref()?;
        let (prefix, suffix) = template.split_once("{user}")?;
        let user = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        (!user.is_empty()).then(|| user.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delegation(text: &str) -> Delegation {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn application_names_match_the_template() {
        let d = delegation("application_name = \"ehr:{user}/web\"");
        assert_eq!(
            d.from_application_name("ehr:dr.smith/web").as_deref(),
            Some("dr.smith")
        );
        for other in ["ehr:/web", "ehr:dr.smith", "psql", ""] {
            assert_eq!(d.from_application_name(other), None, "{other}");
        }
        assert_eq!(d.problem(), None);
    }

    #[test]
    fn declarations_need_a_source_and_sound_patterns() {
        assert!(delegation("set = false").problem().is_some());
        assert!(delegation("application_name = \"x\"").problem().is_some());
        assert!(delegation("comment = \"a b\"").problem().is_some());
        let d = delegation("comment = \"db_user\"\nwithout_end_user = \"refuse\"");
        assert_eq!(
            (d.problem(), d.without_end_user),
            (None, WithoutEndUser::Refuse)
        );
    }
}
