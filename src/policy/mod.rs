//! The policy set declared by the DBA under `policies/`: who may connect (users) and what
//! their roles allow. Loaded and validated as a whole; a set that does not validate is never
//! used.

mod budget;
mod delegation;
pub(crate) mod native;
mod roles;
mod rows;
pub mod session_key;
pub(crate) mod settings;
mod tables;
mod users;

/// The encryption mode a column is declared with.
pub use crate::crypto::Mode;
pub use budget::RowBudgets;
pub use delegation::{Delegation, WithoutEndUser};
pub use roles::{Role, StatementKind, StatementKinds};
pub use rows::{
    AttributeType, Commands, PolicyExpr, RowPolicy, quote_ident, quote_text, setting_text,
};
pub use tables::{LogicalType, MaskKind, ProtectedColumn, ReadOutcome, TableName, TablePolicy};
pub use users::{Auth, Login, ScramVerifier, User, add_user, add_user_with};

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
    attribute_types: BTreeMap<String, AttributeType>,
}

/// Every attribute has one type across all users, a type a policy can use.
fn attribute_types(
    file: &Path,
    users: &HashMap<String, User>,
) -> Result<BTreeMap<String, AttributeType>, PolicyError> {
    let mut names: Vec<_> = users.keys().collect();
    names.sort();
    let mut types: BTreeMap<String, (AttributeType, &str)> = BTreeMap::new();
    for name in names {
        for (attr, value) in &users[name].attributes {
            let invalid = |problem: String| PolicyError::Invalid {
                file: file.to_owned(),
                key: format!("users.{}.attributes.{}", toml_key(name), toml_key(attr)),
                problem,
            };
            if attr.is_empty()
                || !attr
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(invalid(
                    "an attribute name has lower-case letters, digits and _ only".into(),
                ));
            }
            let ty = AttributeType::of(value).ok_or_else(|| {
                invalid(
                    "an attribute is an integer, a float, a boolean or a string (without NUL)"
                        .into(),
                )
            })?;
            let (first, seen_at) = *types.entry(attr.clone()).or_insert((ty, name));
            if first != ty {
                return Err(invalid(format!(
                    "has a different type than for user `{seen_at}`: one attribute, one type"
                )));
            }
        }
    }
    Ok(types.into_iter().map(|(k, (t, _))| (k, t)).collect())
}

/// Every user a row policy applies to has the attributes the policy refers to.
fn check_attributes(
    file: &Path,
    users: &HashMap<String, User>,
    tables: &BTreeMap<TableName, TablePolicy>,
) -> Result<(), PolicyError> {
    let mut names: Vec<_> = users.keys().collect();
    names.sort();
    for t in tables.values() {
        for p in &t.policies {
            for name in &names {
                let user = &users[*name];
                if !p.roles.contains(&user.role) {
                    continue;
                }
                let exprs = p.using.iter().chain(&p.check);
                if let Some(attr) = exprs
                    .flat_map(PolicyExpr::attributes)
                    .find(|a| !user.attributes.contains_key(*a))
                {
                    return Err(PolicyError::Invalid {
                        file: file.to_owned(),
                        key: format!("users.{}.attributes", toml_key(name)),
                        problem: format!(
                            "lacks `{attr}`, which policy `{}` of {} uses for role `{}`",
                            p.name, t.name, user.role
                        ),
                    });
                }
            }
        }
    }
    Ok(())
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
        let mut role_names: Vec<_> = roles.keys().collect();
        role_names.sort();
        for name in role_names {
            if let Some(t) = roles[name]
                .tables
                .iter()
                .flatten()
                .find(|t| !tables.contains_key(t))
            {
                return Err(PolicyError::Invalid {
                    file: roles_file,
                    key: format!("roles.{}.tables", toml_key(name)),
                    problem: format!("{t} has no table policy"),
                });
            }
        }
        let attribute_types = attribute_types(&users_file, &users)?;
        check_attributes(&users_file, &users, &tables)?;
        Ok(Self {
            users,
            roles,
            tables,
            attribute_types,
        })
    }

    /// The type of each user attribute (one per name across all users).
    pub(crate) fn attribute_types(&self) -> &BTreeMap<String, AttributeType> {
        &self.attribute_types
    }

    /// What each role may do, for `phigate check`: the statements it may run, and for each
    /// protected table the columns it reads (and how) and the rows it sees.
    pub fn access_report(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut roles: Vec<_> = self.roles.iter().collect();
        roles.sort_by(|a, b| a.0.cmp(b.0));
        for (name, role) in roles {
            let mut flags = Vec::new();
            if role.bypass_row_policies {
                flags.push("bypasses row policies".to_owned());
            }
            if let Some(cap) = role.max_rows {
                flags.push(format!("at most {cap} rows per statement"));
            }
            if let Some(cap) = role.max_rows_per_hour {
                flags.push(format!("at most {cap} rows per user per hour"));
            }
            if role.break_glass {
                flags.push("may declare an emergency".to_owned());
            }
            lines.push(format!(
                "role {name}: statements {}{}",
                role.statements.names().join(", "),
                if flags.is_empty() {
                    String::new()
                } else {
                    format!("; {}", flags.join("; "))
                }
            ));
            for t in self.tables.values() {
                if !role.may_use(&t.name) {
                    lines.push(format!("  {}: no access", t.name));
                    continue;
                }
                let columns: Vec<String> = t
                    .columns
                    .iter()
                    .map(|(c, p)| {
                        let outcome = p.read.get(name).copied().unwrap_or(ReadOutcome::Deny);
                        format!("{c} {}", outcome.name())
                    })
                    .collect();
                let rows = if t.policies.is_empty() || role.bypass_row_policies {
                    "all rows".to_owned()
                } else {
                    let terms: Vec<String> = t
                        .policies
                        .iter()
                        .filter(|p| p.commands.has(Commands::SELECT) && p.roles.contains(name))
                        .map(|p| match &p.using {
                            Some(u) => format!("({})", u.text()),
                            None => "all rows".to_owned(),
                        })
                        .collect();
                    if terms.is_empty() {
                        "no rows (no policy names the role)".to_owned()
                    } else {
                        format!("rows where {}", terms.join(" OR "))
                    }
                };
                let columns = if columns.is_empty() {
                    String::new()
                } else {
                    format!("columns {}; ", columns.join(", "))
                };
                lines.push(format!("  {}: {columns}{rows}", t.name));
            }
        }
        lines
    }

    /// The roles, by name.
    pub fn roles(&self) -> impl Iterator<Item = (&String, &Role)> {
        self.roles.iter()
    }

    /// True when phigate needs its functions in the database: a table has row policies
    /// (native row-level security, the rewrite's row checks) or a role has a row cap.
    pub fn uses_database_functions(&self) -> bool {
        self.tables().any(|t| !t.policies.is_empty())
            || self.roles.values().any(|r| r.row_cap().is_some())
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

    #[test]
    fn policy_attributes_must_exist_and_keep_one_type() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        add_user(&users, "dr.smith", "clinician", "pw").unwrap();
        add_user(&users, "dr.jones", "clinician", "pw").unwrap();
        std::fs::write(
            dir.path().join("roles.toml"),
            "[roles.clinician]\n[roles.admin]\ntables = [\"visits\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("visits.toml"),
            "[table]\nname = \"visits\"\n[[policy]]\nname = \"own\"\nroles = [\"clinician\"]\n\
             commands = [\"all\"]\nusing = \"clinic = :user.clinic\"\n",
        )
        .unwrap();
        let e = PolicySet::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("lacks `clinic`"), "{e}");
        let text = std::fs::read_to_string(&users).unwrap();
        let with = |jones: &str| {
            text.replace(
                "[users.\"dr.smith\"]",
                "[users.\"dr.smith\"]\nattributes = { clinic = 3 }",
            )
            .replace(
                "[users.\"dr.jones\"]",
                &format!("[users.\"dr.jones\"]\nattributes = {{ clinic = {jones} }}"),
            )
        };
        std::fs::write(&users, with("\"3\"")).unwrap();
        let e = PolicySet::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("different type"), "{e}");
        std::fs::write(&users, with("4")).unwrap();
        let set = PolicySet::load(dir.path()).unwrap();
        assert_eq!(set.attribute_types()["clinic"], AttributeType::Integer);
        std::fs::write(
            dir.path().join("roles.toml"),
            "[roles.clinician]\n[roles.admin]\ntables = [\"patients\"]\n",
        )
        .unwrap();
        let e = PolicySet::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("roles.admin.tables"), "{e}");
    }
}
