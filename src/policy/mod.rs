//! The policy set declared by the DBA under `policies/`: who may connect (users) and what
//! their roles allow. Loaded and validated as a whole; a set that does not validate is never
//! used.

mod roles;
mod users;

pub use roles::Role;
pub use users::{ScramVerifier, User, add_user};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A policy file that could not be loaded.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{file}: {cause}")]
    Io {
        /// the file
        file: PathBuf,
        /// why
        cause: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{file}: {message}")]
    Parse {
        /// the file
        file: PathBuf,
        /// the parser's message, naming the key
        message: String,
    },
    /// A value is well-formed but unusable.
    #[error("{file}: {key}: {problem}")]
    Invalid {
        /// the file
        file: PathBuf,
        /// the key, e.g. `users."dr.smith".role`
        key: String,
        /// what is wrong
        problem: String,
    },
}

/// Users and roles, as loaded from a policy directory.
#[derive(Debug, Default)]
pub struct PolicySet {
    users: HashMap<String, User>,
    roles: HashMap<String, Role>,
}

impl PolicySet {
    /// Loads `dir/users.toml` and `dir/roles.toml` (each optional) and validates them
    /// together: every user's role must be declared.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let users_file = dir.join("users.toml");
        let roles_file = dir.join("roles.toml");
        let users = match read_optional(&users_file)? {
            Some(text) => users::parse(&users_file, &text)?,
            None => HashMap::new(),
        };
        let roles = match read_optional(&roles_file)? {
            Some(text) => roles::parse(&roles_file, &text)?,
            None => HashMap::new(),
        };
        let mut names: Vec<_> = users.keys().collect();
        names.sort();
        for name in names {
            let role = &users[name].role;
            if !roles.contains_key(role) {
                return Err(PolicyError::Invalid {
                    file: users_file,
                    key: format!("users.{}.role", toml_key(name)),
                    problem: format!("role `{role}` is not declared in roles.toml"),
                });
            }
        }
        Ok(Self { users, roles })
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The role called `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Number of users and roles, for summaries.
    pub fn counts(&self) -> (usize, usize) {
        (self.users.len(), self.roles.len())
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, PolicyError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(PolicyError::Io {
            file: path.to_owned(),
            cause,
        }),
    }
}

/// `name` as a TOML key: bare when possible, quoted otherwise.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_with_an_undeclared_role_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        add_user(
            &dir.path().join("users.toml"),
            "dr.smith",
            "clinician",
            "pw",
        )
        .unwrap();
        std::fs::write(dir.path().join("roles.toml"), "[roles.billing]\n").unwrap();
        let e = PolicySet::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("users.\"dr.smith\".role") && e.contains("clinician"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("roles.toml"),
            "[roles.clinician]\nidle_timeout = \"10m\"\n",
        )
        .unwrap();
        let set = PolicySet::load(dir.path()).unwrap();
        assert_eq!(set.user("dr.smith").unwrap().role, "clinician");
        assert_eq!(set.counts(), (1, 1));
    }
}
