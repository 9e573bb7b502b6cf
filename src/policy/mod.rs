//! The policy set declared by the DBA under `policies/`: who may connect (users) and what
//! their roles allow. Loaded and validated as a whole; a set that does not validate is never
//! used.

mod roles;
mod tables;
mod users;

pub use roles::Role;
pub use tables::{LogicalType, MaskKind, ProtectedColumn, ReadOutcome, TableName, TablePolicy};
pub use users::{ScramVerifier, User, add_user};

use std::collections::{BTreeMap, HashMap};
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

/// Users, roles and protected tables, as loaded from a policy directory.
#[derive(Debug, Default)]
pub struct PolicySet {
    users: HashMap<String, User>,
    roles: HashMap<String, Role>,
    tables: BTreeMap<TableName, TablePolicy>,
}

impl PolicySet {
    /// Loads `dir/users.toml`, `dir/roles.toml` (each optional) and every other `*.toml`
    /// as a table policy, and validates them together: every role named must be declared,
    /// a table is declared once, and the columns of a deterministic domain share one type.
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
        let tables = load_tables(dir, &roles)?;
        Ok(Self {
            users,
            roles,
            tables,
        })
    }

    /// The protected tables.
    pub fn tables(&self) -> impl Iterator<Item = &TablePolicy> {
        self.tables.values()
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

fn load_tables(
    dir: &Path,
    roles: &HashMap<String, Role>,
) -> Result<BTreeMap<TableName, TablePolicy>, PolicyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(cause) => {
            return Err(PolicyError::Io {
                file: dir.to_owned(),
                cause,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n == "users.toml" || n == "roles.toml")
        })
        .collect();
    files.sort();
    let declared = |r: &str| roles.contains_key(r);
    let mut tables: BTreeMap<TableName, TablePolicy> = BTreeMap::new();
    let mut domains: HashMap<String, (LogicalType, PathBuf)> = HashMap::new();
    for file in files {
        let text = read_optional(&file)?.unwrap_or_default();
        let table = tables::parse(&file, &text, &declared)?;
        for (column, c) in &table.columns {
            if let Some(d) = &c.domain {
                let (ty, first) = domains
                    .entry(d.clone())
                    .or_insert((c.logical_type, file.clone()));
                if *ty != c.logical_type {
                    return Err(PolicyError::Invalid {
                        file: file.clone(),
                        key: format!("columns.{}.domain", toml_key(column)),
                        problem: format!(
                            "domain `{d}` holds {} values (see {}), not {}",
                            ty.name(),
                            first.display(),
                            c.logical_type.name()
                        ),
                    });
                }
            }
        }
        if let Some(other) = tables.get(&table.name) {
            return Err(PolicyError::Invalid {
                file: file.clone(),
                key: "table.name".into(),
                problem: format!(
                    "{} is declared in {} already",
                    table.name,
                    other.file.display()
                ),
            });
        }
        tables.insert(table.name.clone(), table);
    }
    Ok(tables)
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
