//! `roles.toml`: per-role session settings, the statement firewall, table access,
//! row-policy bypass and who may declare an emergency.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{PolicyError, TableName};

/// A kind of statement, as the firewall sorts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// SELECT, VALUES, TABLE, SHOW, EXPLAIN without ANALYZE, cursors (DECLARE, FETCH, MOVE,
    /// CLOSE)
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, LOCK
    Write,
    /// COPY to STDOUT or from STDIN
    Copy,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ...
    Transaction,
    /// SET, RESET, DISCARD of ordinary settings; LISTEN, NOTIFY, UNLISTEN
    Session,
    /// PREPARE, EXECUTE, DEALLOCATE
    Prepare,
    /// CREATE, ALTER, DROP, TRUNCATE, COMMENT, GRANT, REVOKE, ... (but routines)
    Ddl,
    /// DO blocks, CALL, CREATE [OR REPLACE] FUNCTION and PROCEDURE: code phigate cannot see
    Procedural,
    /// VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT
    Maintenance,
}

impl StatementKind {
    /// Every kind, with its name in `roles.toml`.
    pub const ALL: [(&'static str, StatementKind); 9] = [
        ("read", Self::Read),
        ("write", Self::Write),
        ("copy", Self::Copy),
        ("transaction", Self::Transaction),
        ("session", Self::Session),
        ("prepare", Self::Prepare),
        ("ddl", Self::Ddl),
        ("procedural", Self::Procedural),
        ("maintenance", Self::Maintenance),
    ];

    /// The kinds a role may run when `statements` is not given: no DDL, no procedural
    /// code, no maintenance.
    const DEFAULT: [StatementKind; 6] = [
        Self::Read,
        Self::Write,
        Self::Copy,
        Self::Transaction,
        Self::Session,
        Self::Prepare,
    ];

    /// The kind's name in `roles.toml`.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("", |(n, _)| n)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of statement kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementKinds(u16);

impl StatementKinds {
    /// True when `kind` is in the set.
    pub fn allows(self, kind: StatementKind) -> bool {
        self.0 & kind.bit() != 0
    }

    fn of(kinds: impl IntoIterator<Item = StatementKind>) -> Self {
        Self(kinds.into_iter().fold(0, |acc, k| acc | k.bit()))
    }

    /// The kinds' names, for reports.
    pub fn names(self) -> Vec<&'static str> {
        StatementKind::ALL
            .iter()
            .filter(|(_, k)| self.allows(*k))
            .map(|(n, _)| *n)
            .collect()
    }
}

impl Default for StatementKinds {
    fn default() -> Self {
        Self::of(StatementKind::DEFAULT)
    }
}

/// A role's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    /// overrides `session.idle_timeout` for this role's sessions
    pub idle_timeout: Option<Duration>,
    /// row policies do not apply to the role (its statements are audited all the same)
    pub bypass_row_policies: bool,
    /// the protected tables the role may name at all; `None` for every one
    pub tables: Option<Vec<TableName>>,
    /// the statement kinds the role may run
    pub statements: StatementKinds,
    /// functions the role may call, besides the built-in list, in statements that name a
    /// protected table
    pub functions: Vec<String>,
    /// the role may declare an emergency (`SET phigate.break_glass = '<reason>'`)
    pub break_glass: bool,
    /// the most rows one statement may return from protected tables
    pub max_rows: Option<u64>,
    /// the most rows of protected tables one user of the role may read in an hour
    pub max_rows_per_hour: Option<u64>,
}

impl Role {
    /// The most rows one statement may return from protected tables: `max_rows`, and
    /// never more than the hour's budget.
    pub(crate) fn row_cap(&self) -> Option<u64> {
        match (self.max_rows, self.max_rows_per_hour) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when the role may name the protected table `t`.
    pub(crate) fn may_use(&self, t: &TableName) -> bool {
        self.tables.as_ref().is_none_or(|ts| ts.contains(t))
    }
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
    #[serde(default)]
    bypass_row_policies: bool,
    tables: Option<Vec<String>>,
    statements: Option<Vec<String>>,
    #[serde(default)]
    functions: Vec<String>,
    /// the roles that may declare an emergency (DESIGN's form: it may sit in any role)
    #[serde(default)]
    break_glass: Vec<String>,
    max_rows: Option<u64>,
    max_rows_per_hour: Option<u64>,
}

pub(super) fn parse(file: &Path, text: &str) -> Result<HashMap<String, Role>, PolicyError> {
    let raw: RolesFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    let mut roles = HashMap::new();
    let mut declarers = Vec::new();
    for (name, r) in raw.roles {
        let invalid = |key: &str, problem: String| PolicyError::Invalid {
            file: file.to_owned(),
            key: format!("roles.{}.{key}", super::toml_key(&name)),
            problem,
        };
        declarers.extend(r.break_glass.iter().map(|d| (name.clone(), d.clone())));
        let role = role(r).map_err(|(key, problem)| invalid(key, problem))?;
        roles.insert(name, role);
    }
    for (listed_in, declarer) in declarers {
        match roles.get_mut(&declarer) {
            Some(role) => role.break_glass = true,
            None => {
                return Err(PolicyError::Invalid {
                    file: file.to_owned(),
                    key: format!("roles.{}.break_glass", super::toml_key(&listed_in)),
                    problem: format!("role `{declarer}` is not declared"),
                });
            }
        }
    }
    Ok(roles)
}

/// One role; an error names the key and the problem.
fn role(r: RawRole) -> Result<Role, (&'static str, String)> {
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
                .map_err(|problem| ("idle_timeout", problem))
        })
        .transpose()?;
    let tables = r
        .tables
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    super::tables::table_name(t)
                        .ok_or_else(|| ("tables", format!("`{t}` is not schema.table")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let statements = statement_kinds(r.statements)?;
    if let Some(f) = r
        .functions
        .iter()
        .find(|f| f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(("functions", format!("`{f}` is not a plain function name")));
    }
    for (key, cap) in [
        ("max_rows", r.max_rows),
        ("max_rows_per_hour", r.max_rows_per_hour),
    ] {
        if cap == Some(0) {
            return Err((key, "must be at least 1 (leave it out for no cap)".into()));
        }
    }
    Ok(Role {
        max_rows: r.max_rows,
        max_rows_per_hour: r.max_rows_per_hour,
        idle_timeout,
        bypass_row_policies: r.bypass_row_policies,
        tables,
        statements,
        functions: r.functions.iter().map(|f| f.to_lowercase()).collect(),
        break_glass: false,
    })
}

/// The statement kinds a role lists (`all`, or kinds by name; none listed: the default).
fn statement_kinds(names: Option<Vec<String>>) -> Result<StatementKinds, (&'static str, String)> {
    let names = match names {
        None => return Ok(StatementKinds::default()),
        Some(names) if names.iter().any(|n| n == "all") => {
            return Ok(StatementKinds::of(StatementKind::ALL.map(|(_, k)| k)));
        }
        Some(names) => names,
    };
    let mut kinds = Vec::new();
    for n in &names {
        let kind = StatementKind::ALL
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                let all: Vec<_> = StatementKind::ALL.iter().map(|(n, _)| *n).collect();
                (
                    "statements",
                    format!("`{n}` is not one of all, {}", all.join(", ")),
                )
            })?;
        kinds.push(kind);
    }
    Ok(StatementKinds::of(kinds))
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

    #[test]
    fn the_design_example_and_the_firewall_settings() {
        let f = Path::new("roles.toml");
        let roles = parse(
            f,
            "[roles.clinician]\nidle_timeout = \"10m\"\n[roles.admin]\nbypass_row_policies = true\n\
             statements = [\"all\"]\n[roles.auditor]\ntables = []\nbreak_glass = [\"clinician\"]\n\
             [roles.billing]\nstatements = [\"read\", \"transaction\"]\nfunctions = [\"Pg_Size\"]\n\
             tables = [\"patients\", \"billing.claims\"]\n",
        )
        .unwrap();
        assert!(roles["clinician"].break_glass && !roles["auditor"].break_glass);
        assert!(roles["admin"].bypass_row_policies);
        assert!(roles["admin"].statements.allows(StatementKind::Ddl));
        let clinician = &roles["clinician"].statements;
        assert!(clinician.allows(StatementKind::Write) && !clinician.allows(StatementKind::Ddl));
        let billing = &roles["billing"];
        assert_eq!(billing.statements.names(), ["read", "transaction"]);
        assert_eq!(billing.functions, ["pg_size"]);
        let patients = TableName {
            schema: "public".into(),
            table: "patients".into(),
        };
        assert!(billing.may_use(&patients) && !roles["auditor"].may_use(&patients));
        assert!(roles["clinician"].may_use(&patients));
        for (text, key) in [
            ("[roles.a]\nstatements = [\"dml\"]\n", "roles.a.statements"),
            (
                "[roles.a]\nbreak_glass = [\"nobody\"]\n",
                "roles.a.break_glass",
            ),
            ("[roles.a]\ntables = [\"a.b.c\"]\n", "roles.a.tables"),
            ("[roles.a]\nfunctions = [\"f()\"]\n", "roles.a.functions"),
            ("[roles.a]\nmax_rows = 0\n", "roles.a.max_rows"),
        ] {
            let e = parse(f, text).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
