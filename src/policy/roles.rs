//! `roles.toml`: per-role session settings.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::PolicyError;

/// A role's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    /// overrides `session.idle_timeout` for this role's sessions
    pub idle_timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    #[serde(default)]
    roles: HashMap<String, RawRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    idle_timeout: Option<String>,
}

pub(super) fn parse(file: &Path, text: &str) -> Result<HashMap<String, Role>, PolicyError> {
    let raw: RolesFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    raw.roles
        .into_iter()
        .map(|(name, r)| {
            let idle_timeout = r
                .idle_timeout
                .map(|s| {
                    crate::config::parse_duration(&s)
                        .and_then(|d| {
                            if d.is_zero() {
                                Err("must be longer than zero".into())
                            } else {
                                Ok(d)
                            }
                        })
                        .map_err(|problem| PolicyError::Invalid {
                            file: file.to_owned(),
                            key: format!("roles.{}.idle_timeout", super::toml_key(&name)),
                            problem,
                        })
                })
                .transpose()?;
            Ok((name, Role { idle_timeout }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates_roles() {
        let f = Path::new("roles.toml");
        let roles = parse(
            f,
            "[roles.nurse_station]\nidle_timeout = \"2m\"\n[roles.admin]\n",
        )
        .unwrap();
        assert_eq!(
            roles["nurse_station"].idle_timeout,
            Some(Duration::from_secs(120))
        );
        assert_eq!(roles["admin"], Role::default());
        let e = parse(f, "[roles.x]\nidle_timeout = \"never\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("roles.x.idle_timeout"), "{e}");
        let e = parse(f, "[roles.x]\nidel = 1\n").unwrap_err().to_string();
        assert!(e.contains("idel"), "{e}");
    }
}
