//! Table policies (`policies/*.toml` other than users.toml and roles.toml): which columns
//! hold PHI, their logical type, how they are encrypted, and what each role reads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::PolicyError;
use super::rows::{Commands, PolicyExpr, RowPolicy};
use crate::crypto::Mode;

/// A table's name as PostgreSQL stores it in its catalog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    /// the schema (`public` when the policy names none)
    pub schema: String,
    /// the table
    pub table: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// The type an application sees in a protected column (stored as `bytea`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogicalType {
    /// text
    Text,
    /// varchar
    Varchar,
    /// bpchar (char(n))
    Bpchar,
    /// int2
    Int2,
    /// int4
    Int4,
    /// int8
    Int8,
    /// numeric
    Numeric,
    /// bool
    Bool,
    /// date
    Date,
    /// timestamp
    Timestamp,
    /// timestamptz
    Timestamptz,
    /// uuid
    Uuid,
    /// json
    Json,
    /// jsonb
    Jsonb,
    /// bytea
    Bytea,
}

impl LogicalType {
    const ALL: [(&'static str, LogicalType); 15] = [
        ("text", Self::Text),
        ("varchar", Self::Varchar),
        ("bpchar", Self::Bpchar),
        ("int2", Self::Int2),
        ("int4", Self::Int4),
        ("int8", Self::Int8),
        ("numeric", Self::Numeric),
        ("bool", Self::Bool),
        ("date", Self::Date),
        ("timestamp", Self::Timestamp),
        ("timestamptz", Self::Timestamptz),
        ("uuid", Self::Uuid),
        ("json", Self::Json),
        ("jsonb", Self::Jsonb),
        ("bytea", Self::Bytea),
    ];

    /// The type's name as written in policies and in the AAD.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("", |(n, _)| n)
    }

    /// The type an SQL type name (as in a cast: `VARCHAR(20)`, `integer`,
    /// `timestamp with time zone`, `pg_catalog.int8`) denotes, if it is one of these.
    pub(crate) fn from_sql_name(name: &str) -> Option<Self> {
        let lower = name.trim().to_ascii_lowercase();
        let lower = lower.strip_prefix("pg_catalog.").unwrap_or(&lower);
        let base = match lower.find('(') {
            Some(i) => {
                let (head, tail) = lower.split_at(i);
                let rest = tail.find(')').map_or("", |j| &tail[j + 1..]);
                format!("{}{}", head.trim_end(), rest)
            }
            None => lower.to_owned(),
        };
        let base = base.trim().trim_matches('"');
        Some(match base {
            "text" => Self::Text,
            "varchar" | "character varying" | "char varying" => Self::Varchar,
            "bpchar" | "char" | "character" => Self::Bpchar,
            "int2" | "smallint" => Self::Int2,
            "int4" | "int" | "integer" => Self::Int4,
            "int8" | "bigint" => Self::Int8,
            "numeric" | "decimal" => Self::Numeric,
            "bool" | "boolean" => Self::Bool,
            "date" => Self::Date,
            "timestamp" | "timestamp without time zone" => Self::Timestamp,
            "timestamptz" | "timestamp with time zone" => Self::Timestamptz,
            "uuid" => Self::Uuid,
            "json" => Self::Json,
            "jsonb" => Self::Jsonb,
            "bytea" => Self::Bytea,
            _ => return None,
        })
    }

    /// True when a value of `self` means the same as a value of `to` (integers of another
    /// width when they fit: the value is checked when it arrives), so a value cast to
    /// `self` may be stored in, or compared with, a column of `to`.
    pub(crate) fn converts_to(self, to: Self) -> bool {
        use LogicalType as T;
        self == to
            || (self.is_text_like() && to.is_text_like())
            || matches!(
                (self, to),
                (
                    T::Int2 | T::Int4 | T::Int8,
                    T::Int2 | T::Int4 | T::Int8 | T::Numeric
                ) | (T::Json, T::Jsonb)
                    | (T::Jsonb, T::Json)
            )
    }

    /// [`LogicalType::converts_to`], and in a session whose TimeZone phigate resolves
    /// (`zoned`) also between `timestamp` and `timestamptz`, which PostgreSQL converts in
    /// that zone.
    pub(crate) fn converts_to_at(self, to: Self, zoned: bool) -> bool {
        use LogicalType as T;
        self.converts_to(to)
            || (zoned
                && matches!(
                    (self, to),
                    (T::Timestamp, T::Timestamptz) | (T::Timestamptz, T::Timestamp)
                ))
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)
    }

    fn is_text_like(self) -> bool {
        matches!(self, Self::Text | Self::Varchar | Self::Bpchar)
    }

    /// A date or time type.
    pub(crate) fn is_temporal(self) -> bool {
        matches!(self, Self::Date | Self::Timestamp | Self::Timestamptz)
    }
}

/// How a column is masked for a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// all but the last four characters replaced (text-like types)
    Last4,
    /// only the year (date and timestamp types)
    Year,
    /// a fixed placeholder
    Redact,
    /// a keyed hash: equal values mask equally, nothing is revealed
    Hash,
}

/// What a role reads from a protected column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// the decrypted value
    Plaintext,
    /// a masked value
    Mask(MaskKind),
    /// NULL
    Null,
    /// the stored envelope
    Ciphertext,
    /// the statement is refused (42501)
    Deny,
}

impl ReadOutcome {
    /// The outcome as written in policies.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Mask(MaskKind::Last4) => "mask:last4",
            Self::Mask(MaskKind::Year) => "mask:year",
            Self::Mask(MaskKind::Redact) => "mask:redact",
            Self::Mask(MaskKind::Hash) => "mask:hash",
            Self::Null => "null",
            Self::Ciphertext => "ciphertext",
            Self::Deny => "deny",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "plaintext" => Self::Plaintext,
            "mask:last4" => Self::Mask(MaskKind::Last4),
            "mask:year" => Self::Mask(MaskKind::Year),
            "mask:redact" => Self::Mask(MaskKind::Redact),
            "mask:hash" => Self::Mask(MaskKind::Hash),
            "null" => Self::Null,
            "ciphertext" => Self::Ciphertext,
            "deny" => Self::Deny,
            _ => return None,
        })
    }
}

/// A protected column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedColumn {
    /// the type applications see
    pub logical_type: LogicalType,
    /// randomized or deterministic
    pub mode: Mode,
    /// the deterministic domain whose columns join on ciphertext, if any
    pub domain: Option<String>,
    /// per role; a role not listed reads `Deny`
    pub read: HashMap<String, ReadOutcome>,
}

/// A table with protected columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePolicy {
    /// the table
    pub name: TableName,
    /// its protected columns, by name
    pub columns: BTreeMap<String, ProtectedColumn>,
    /// its row policies, in file order
    pub policies: Vec<RowPolicy>,
    /// the file that declared it
    pub file: std::path::PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    table: RawTable,
    #[serde(default)]
    columns: BTreeMap<String, RawColumn>,
    #[serde(default)]
    policy: Vec<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    roles: Vec<String>,
    commands: Vec<String>,
    using: Option<String>,
    check: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    #[serde(rename = "type")]
    logical_type: String,
    encrypt: String,
    domain: Option<String>,
    #[serde(default)]
    read: BTreeMap<String, String>,
}

fn plain_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.contains(['.', '"', '\0'])
}

/// A problem with `key` of the policy file `file`.
fn invalid(file: &Path, key: String, problem: String) -> PolicyError {
    PolicyError::Invalid {
        file: file.to_owned(),
        key,
        problem,
    }
}

/// Parses one table policy file; `roles` are the declared role names.
pub(super) fn parse(
    file: &Path,
    text: &str,
    roles: &dyn Fn(&str) -> bool,
) -> Result<TablePolicy, PolicyError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    let name = table_name(&raw.table.name).ok_or_else(|| {
        invalid(
            file,
            "table.name".into(),
            format!(
                "`{}` is not schema.table (plain identifiers as stored in the catalog)",
                raw.table.name
            ),
        )
    })?;
    if raw.columns.is_empty() && raw.policy.is_empty() {
        return Err(invalid(
            file,
            "columns".into(),
            "a table policy names at least one protected column or row policy".into(),
        ));
    }
    let mut policies: Vec<RowPolicy> = Vec::new();
    for (i, p) in raw.policy.into_iter().enumerate() {
        let key = |k: &str| format!("policy[{i}].{k}");
        if policies.iter().any(|q| q.name == p.name) {
            return Err(invalid(
                file,
                key("name"),
                format!("`{}` is not a plain name used once per table", p.name),
            ));
        }
        policies.push(row_policy(file, &key, p, roles)?);
    }
    let mut columns = BTreeMap::new();
    for (name, c) in raw.columns {
        let column = protected_column(file, &name, c, roles)?;
        columns.insert(name, column);
    }
    Ok(TablePolicy {
        name,
        columns,
        policies,
        file: file.to_owned(),
    })
}

/// One `[[policy]]` entry; `key` names its fields in errors.
fn row_policy(
    file: &Path,
    key: &dyn Fn(&str) -> String,
    p: RawPolicy,
    roles: &dyn Fn(&str) -> bool,
) -> Result<RowPolicy, PolicyError> {
    let invalid = |k: &str, problem: String| invalid(file, key(k), problem);
    if !plain_identifier(&p.name) {
        return Err(invalid(
            "name",
            format!("`{}` is not a plain name used once per table", p.name),
        ));
    }
    if p.roles.is_empty() {
        return Err(invalid("roles", "names at least one role".into()));
    }
    if let Some(r) = p.roles.iter().find(|r| !roles(r)) {
        return Err(invalid(
            "roles",
            format!("role `{r}` is not declared in roles.toml"),
        ));
    }
    let mut commands = Commands::default();
    for c in &p.commands {
        commands.0 |= match c.as_str() {
            "select" => Commands::SELECT,
            "insert" => Commands::INSERT,
            "update" => Commands::UPDATE,
            "delete" => Commands::DELETE,
            "all" => Commands::ALL,
            other => {
                return Err(invalid(
                    "commands",
                    format!("`{other}` is not select, insert, update, delete or all"),
                ));
            }
        };
    }
    if commands.0 == 0 {
        return Err(invalid("commands", "names at least one command".into()));
    }
    let using = p
        .using
        .map(|u| PolicyExpr::parse(&u).map_err(|e| invalid("using", e)))
        .transpose()?;
    let check = p
        .check
        .map(|c| PolicyExpr::parse(&c).map_err(|e| invalid("check", e)))
        .transpose()?;
    if using.is_some() && commands.0 == Commands::INSERT {
        return Err(invalid(
            "using",
            "an insert-only policy filters no rows; write `check`".into(),
        ));
    }
    if check.is_some() && commands.0 & (Commands::INSERT | Commands::UPDATE) == 0 {
        return Err(invalid(
            "check",
            "`check` applies to insert and update only".into(),
        ));
    }
    Ok(RowPolicy {
        name: p.name,
        roles: p.roles,
        commands,
        using,
        check,
    })
}

/// One `[columns.NAME]` entry.
fn protected_column(
    file: &Path,
    name: &str,
    c: RawColumn,
    roles: &dyn Fn(&str) -> bool,
) -> Result<ProtectedColumn, PolicyError> {
    let key = |k: &str| format!("columns.{}.{k}", super::toml_key(name));
    if !plain_identifier(name) {
        return Err(invalid(
            file,
            format!("columns.{}", super::toml_key(name)),
            "not a plain column name".into(),
        ));
    }
    let logical_type = LogicalType::parse(&c.logical_type).ok_or_else(|| {
        let names: Vec<_> = LogicalType::ALL.iter().map(|(n, _)| *n).collect();
        invalid(
            file,
            key("type"),
            format!("`{}` is not one of {}", c.logical_type, names.join(", ")),
        )
    })?;
    let mode = match c.encrypt.as_str() {
        "randomized" => Mode::Randomized,
        "deterministic" => Mode::Deterministic,
        other => {
            return Err(invalid(
                file,
                key("encrypt"),
                format!("`{other}` is not randomized or deterministic"),
            ));
        }
    };
    if c.domain.is_some() && mode != Mode::Deterministic {
        return Err(invalid(
            file,
            key("domain"),
            "only deterministic columns share a domain".into(),
        ));
    }
    if c.domain.as_deref().is_some_and(|d| !plain_identifier(d)) {
        return Err(invalid(file, key("domain"), "not a plain name".into()));
    }
    let mut read = HashMap::new();
    for (role, outcome) in c.read {
        let at = format!("{}.{role}", key("read"));
        let o = read_outcome(logical_type, &role, &outcome, roles)
            .map_err(|problem| invalid(file, at, problem))?;
        read.insert(role, o);
    }
    Ok(ProtectedColumn {
        logical_type,
        mode,
        domain: c.domain,
        read,
    })
}

/// What `role` reads from a column of `logical_type`, as `outcome` says.
fn read_outcome(
    logical_type: LogicalType,
    role: &str,
    outcome: &str,
    roles: &dyn Fn(&str) -> bool,
) -> Result<ReadOutcome, String> {
    if !roles(role) {
        return Err(format!("role `{role}` is not declared in roles.toml"));
    }
    let o = ReadOutcome::parse(outcome).ok_or_else(|| {
        format!("`{outcome}` is not plaintext, mask:last4, mask:year, mask:redact, mask:hash, null, ciphertext or deny")
    })?;
    let fits = match o {
        ReadOutcome::Mask(MaskKind::Last4) => logical_type.is_text_like(),
        ReadOutcome::Mask(MaskKind::Year) => logical_type.is_temporal(),
        _ => true,
    };
    if !fits {
        return Err(format!(
            "`{outcome}` does not apply to a {} column",
            logical_type.name()
        ));
    }
    Ok(o)
}

/// `schema.table` or `table` (in `public`) as plain catalog names.
pub(super) fn table_name(s: &str) -> Option<TableName> {
    let (schema, table) = match s.split_once('.') {
        Some((s, t)) => (s, t),
        None => ("public", s),
    };
    (plain_identifier(schema) && plain_identifier(table)).then(|| TableName {
        schema: schema.to_owned(),
        table: table.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_type_names_and_lossless_conversions() {
        use LogicalType as T;
        for (name, ty) in [
            ("VARCHAR", T::Varchar),
            ("character varying(20)", T::Varchar),
            ("INTEGER", T::Int4),
            ("pg_catalog.int8", T::Int8),
            ("NUMERIC(10,2)", T::Numeric),
            ("timestamp(3) with time zone", T::Timestamptz),
            ("TIMESTAMP WITHOUT TIME ZONE", T::Timestamp),
            ("char(9)", T::Bpchar),
            ("BOOLEAN", T::Bool),
        ] {
            assert_eq!(T::from_sql_name(name), Some(ty), "{name}");
        }
        assert_eq!(T::from_sql_name("point"), None);
        assert!(T::Varchar.converts_to(T::Text));
        assert!(T::Int4.converts_to(T::Int8) && T::Int8.converts_to(T::Int2));
        assert!(T::Int4.converts_to(T::Numeric));
        assert!(!T::Numeric.converts_to(T::Int4));
        assert!(!T::Varchar.converts_to(T::Date));
        assert!(!T::Timestamp.converts_to(T::Timestamptz));
    }

    const PATIENTS: &str = r#"
[table]
name = "public.patients"

[columns.ssn]
type = "text"
encrypt = "deterministic"
domain = "ssn"
read = { clinician = "plaintext", billing = "mask:last4", researcher = "deny" }

[columns.birth_date]
type = "date"
encrypt = "randomized"
read = { clinician = "plaintext", researcher = "mask:year" }
"#;

    fn roles(r: &str) -> bool {
        ["clinician", "billing", "researcher"].contains(&r)
    }

    #[test]
    fn parses_the_design_example() {
        let t = parse(Path::new("patients.toml"), PATIENTS, &roles).unwrap();
        assert_eq!(t.name.to_string(), "public.patients");
        let ssn = &t.columns["ssn"];
        assert_eq!(
            (ssn.logical_type, ssn.mode, ssn.domain.as_deref()),
            (LogicalType::Text, Mode::Deterministic, Some("ssn"))
        );
        assert_eq!(ssn.read["billing"], ReadOutcome::Mask(MaskKind::Last4));
        assert_eq!(
            t.columns["birth_date"].read["researcher"],
            ReadOutcome::Mask(MaskKind::Year)
        );
        assert_eq!(LogicalType::Timestamptz.name(), "timestamptz");
    }

    #[test]
    fn every_mistake_names_its_key() {
        let f = Path::new("patients.toml");
        for (edit, key, problem) in [
            (
                (
                    "\"text\"\nencrypt = \"deterministic\"",
                    "\"txt\"\nencrypt = \"deterministic\"",
                ),
                "columns.ssn.type",
                "not one of",
            ),
            (
                ("encrypt = \"randomized\"", "encrypt = \"aes\""),
                "columns.birth_date.encrypt",
                "not randomized",
            ),
            (
                ("researcher = \"mask:year\"", "researcher = \"mask:last4\""),
                "columns.birth_date.read.researcher",
                "does not apply",
            ),
            (
                ("billing = \"mask:last4\"", "billing = \"maybe\""),
                "columns.ssn.read.billing",
                "is not plaintext",
            ),
            (
                ("researcher = \"deny\"", "intern = \"deny\""),
                "columns.ssn.read.intern",
                "not declared",
            ),
            (
                ("public.patients", "a.b.c"),
                "table.name",
                "not schema.table",
            ),
        ] {
            let text = PATIENTS.replacen(edit.0, edit.1, 1);
            let e = parse(f, &text, &roles).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(problem), "{key}: {e}");
        }
        for (policy, key) in [
            (
                "roles = [\"intern\"]\ncommands = [\"select\"]",
                "policy[0].roles",
            ),
            (
                "roles = [\"billing\"]\ncommands = [\"read\"]",
                "policy[0].commands",
            ),
            (
                "roles = [\"billing\"]\ncommands = [\"select\"]\nusing = \"a = \"",
                "policy[0].using",
            ),
            (
                "roles = [\"billing\"]\ncommands = [\"select\"]\ncheck = \"a = 1\"",
                "policy[0].check",
            ),
        ] {
            let text = format!("{PATIENTS}\n[[policy]]\nname = \"x\"\n{policy}\n");
            let e = parse(f, &text, &roles).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let t = parse(
            f,
            "[table]\nname = \"visits\"\n[[policy]]\nname = \"own\"\nroles = [\"billing\"]\n\
             commands = [\"select\", \"update\"]\nusing = \"clinic = :user.clinic\"\n",
            &roles,
        )
        .unwrap();
        assert!(t.columns.is_empty());
        assert_eq!(t.policies[0].commands.names(), ["select", "update"]);
        let e = parse(
            f,
            &PATIENTS.replace(
                "encrypt = \"randomized\"",
                "encrypt = \"randomized\"\ndomain = \"d\"",
            ),
            &roles,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("only deterministic"), "{e}");
    }
}
