//! What the fuzz targets share: a policy set with protected columns (deterministic and
//! randomized) and a row policy, and the analyzer built on it, once per process.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use phigate::crypto::Keyring;
use phigate::encryption::Ciphers;
use phigate::policy::{PolicySet, TableName};
use phigate::session::Enforcement;
use phigate::sql::catalog::{LiveColumn, LiveTable};
use phigate::sql::{Analyzer, Catalog, Subject};

const PATIENTS: &str = r#"
[table]
name = "public.patients"
[columns.ssn]
type = "text"
encrypt = "deterministic"
read = { clinician = "plaintext" }
[columns.full_name]
type = "text"
encrypt = "randomized"
read = { clinician = "plaintext" }
[columns.birth_date]
type = "date"
encrypt = "deterministic"
read = { clinician = "mask:year" }
[[policy]]
name = "own-clinic"
roles = ["clinician"]
commands = ["select", "insert", "update", "delete"]
using = "clinic_id = :user.clinic_id"
check = "clinic_id = :user.clinic_id"
"#;

/// The row filter the clinician's statements must carry.
pub const FILTER: &str = "clinic_id = 3";

/// The protected table.
pub const TABLE: &str = "patients";

/// A verifier (of the password "pw"); the analysis never checks it.
const SCRAM: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$7i2t9s3m0V2bQ3u9Qyq3b9JmU9yqkqKpLq0h1h0n2p8=:1r9wq9ZQ0xY3+3W6b0vC8rXz0t4k9ZyQm2m1b1m0n4o=";

fn live(oid: u32, cols: &[&str]) -> LiveTable {
    let protected = |c: &str| ["ssn", "full_name", "birth_date"].contains(&c);
    LiveTable {
        oid,
        columns: cols
            .iter()
            .enumerate()
            .map(|(i, c)| LiveColumn {
                name: (*c).to_owned(),
                attnum: i16::try_from(i + 1).unwrap_or(i16::MAX),
                has_default: false,
                type_name: if protected(c) {
                    "phigate_encrypted"
                } else {
                    "int4"
                }
                .into(),
                base_type: "bytea".into(),
                sql_type: if protected(c) {
                    "phigate_encrypted"
                } else {
                    "integer"
                }
                .into(),
            })
            .collect(),
    }
}

fn build() -> Arc<Enforcement> {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect(name);
    write("patients.toml", PATIENTS.to_owned());
    write(
        "roles.toml",
        "[roles.clinician]\nstatements = [\"read\", \"write\"]\n".into(),
    );
    write(
        "users.toml",
        format!(
            "[users.carol]\nrole = \"clinician\"\nattributes = {{ clinic_id = 3 }}\nscram = \"{SCRAM}\"\n\
             [users.joy]\nrole = \"clinician\"\nauth = \"delegated\"\nattributes = {{ clinic_id = 4 }}\n"
        ),
    );
    let policies = PolicySet::load(dir.path()).expect("policies");
    let keyring = Keyring::from_keys(1, vec![(1, [7u8; 32])]);
    let mut schema = HashMap::new();
    let name = |t: &str| TableName {
        schema: "public".into(),
        table: t.into(),
    };
    schema.insert(
        name("patients"),
        live(100, &["id", "ssn", "full_name", "birth_date", "clinic_id"]),
    );
    schema.insert(name("visits"), live(200, &["id", "patient_id", "note"]));
    let catalog = Arc::new(Catalog::new(&policies, &schema).expect("catalog"));
    let ciphers = Ciphers::new(keyring, &catalog);
    Arc::new(Enforcement::new(
        Analyzer::new(catalog, Arc::new(policies)),
        ciphers,
    ))
}

/// The policies in force, built once.
pub fn enforcement() -> Arc<Enforcement> {
    static E: OnceLock<Arc<Enforcement>> = OnceLock::new();
    E.get_or_init(build).clone()
}

/// The clinician of clinic 3.
pub fn subject() -> Subject {
    Subject {
        user: Arc::from("carol"),
        role: Arc::from("clinician"),
        emergency: false,
    }
}
