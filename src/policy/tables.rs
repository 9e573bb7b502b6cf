//! Table policies (`policies/*.toml` other than users.toml and roles.toml): which columns
//! hold PHI, their logical type, how they are encrypted, and what each role reads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::PolicyError;
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

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)
    }

    fn is_text_like(self) -> bool {
        matches!(self, Self::Text | Self::Varchar | Self::Bpchar)
    }

    fn is_temporal(self) -> bool {
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
    policy: Vec<toml::Value>,
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
    let invalid = |key: String, problem: String| PolicyError::Invalid {
        file: file.to_owned(),
        key,
        problem,
    };
    if !raw.policy.is_empty() {
        return Err(invalid(
            "policy".into(),
            "row policies are not enforced by this version of phigate; remove the [[policy]] entries (refusing to load a policy that would not be applied)".into(),
        ));
    }
    let (schema, table) = match raw.table.name.split_once('.') {
        Some((s, t)) => (s.to_owned(), t.to_owned()),
        None => ("public".to_owned(), raw.table.name.clone()),
    };
    if !plain_identifier(&schema) || !plain_identifier(&table) {
        return Err(invalid(
            "table.name".into(),
            format!(
                "`{}` is not schema.table (plain identifiers as stored in the catalog)",
                raw.table.name
            ),
        ));
    }
    if raw.columns.is_empty() {
        return Err(invalid(
            "columns".into(),
            "a table policy names at least one protected column".into(),
        ));
    }
    let mut columns = BTreeMap::new();
    for (name, c) in raw.columns {
        let key = |k: &str| format!("columns.{}.{k}", super::toml_key(&name));
        if !plain_identifier(&name) {
            return Err(invalid(
                format!("columns.{}", super::toml_key(&name)),
                "not a plain column name".into(),
            ));
        }
        let logical_type = LogicalType::parse(&c.logical_type).ok_or_else(|| {
            let names: Vec<_> = LogicalType::ALL.iter().map(|(n, _)| *n).collect();
            invalid(
                key("type"),
                format!("`{}` is not one of {}", c.logical_type, names.join(", ")),
            )
        })?;
        let mode = match c.encrypt.as_str() {
            "randomized" => Mode::Randomized,
            "deterministic" => Mode::Deterministic,
            other => {
                return Err(invalid(
                    key("encrypt"),
                    format!("`{other}` is not randomized or deterministic"),
                ));
            }
        };
        if c.domain.is_some() && mode != Mode::Deterministic {
            return Err(invalid(
                key("domain"),
                "only deterministic columns share a domain".into(),
            ));
        }
        if c.domain.as_deref().is_some_and(|d| !plain_identifier(d)) {
            return Err(invalid(key("domain"), "not a plain name".into()));
        }
        let mut read = HashMap::new();
        for (role, outcome) in c.read {
            if !roles(&role) {
                return Err(invalid(
                    format!("{}.{role}", key("read")),
                    format!("role `{role}` is not declared in roles.toml"),
                ));
            }
            let o = ReadOutcome::parse(&outcome).ok_or_else(|| {
                invalid(
                    format!("{}.{role}", key("read")),
                    format!("`{outcome}` is not plaintext, mask:last4, mask:year, mask:redact, mask:hash, null, ciphertext or deny"),
                )
            })?;
            let fits = match o {
                ReadOutcome::Mask(MaskKind::Last4) => logical_type.is_text_like(),
                ReadOutcome::Mask(MaskKind::Year) => logical_type.is_temporal(),
                _ => true,
            };
            if !fits {
                return Err(invalid(
                    format!("{}.{role}", key("read")),
                    format!(
                        "`{outcome}` does not apply to a {} column",
                        logical_type.name()
                    ),
                ));
            }
            read.insert(role, o);
        }
        columns.insert(
            name,
            ProtectedColumn {
                logical_type,
                mode,
                domain: c.domain,
                read,
            },
        );
    }
    Ok(TablePolicy {
        name: TableName { schema, table },
        columns,
        file: file.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = parse(
            f,
            &format!("{PATIENTS}\n[[policy]]\nname = \"x\"\n"),
            &roles,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not enforced"), "{e}");
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
