//! The conformance suite: real drivers and ORMs, installed by `.ci/run` from the package
//! registries, through phigate against a protected schema (encrypted columns, a row
//! policy backed by native row-level security) and a pass-through table.
//!
//! Each language's checks live under `tests/conformance/`. When a driver is missing, the
//! suite fails if `CONFORMANCE_SUITE=required` (as `.ci/run` sets it) and is skipped
//! with a notice otherwise (`pip install -r tests/conformance/requirements.txt`).

mod common;

use std::process::Command;

use common::{Options, Pg, Proxy, Setup};

const PATIENTS: &str = r#"
[table]
name = "public.patients"

[columns.ssn]
type = "text"
encrypt = "deterministic"
read = { clinician = "plaintext", billing = "mask:last4" }

[columns.full_name]
type = "text"
encrypt = "randomized"
read = { clinician = "plaintext", billing = "mask:redact" }

[columns.birth_date]
type = "date"
encrypt = "deterministic"
read = { clinician = "plaintext", billing = "mask:year" }

[[policy]]
name = "own-clinic"
roles = ["clinician"]
commands = ["all"]
using = "clinic_id = :user.clinic_id"
check = "clinic_id = :user.clinic_id"

[[policy]]
name = "billing-reads"
roles = ["billing"]
commands = ["select"]
using = "clinic_id = :user.clinic_id"
"#;

/// One encrypted column of each remaining type, for every driver setter.
const VITALS: &str = r#"
[table]
name = "public.vitals"

[columns.mrn]
type = "int8"
encrypt = "deterministic"
read = { clinician = "plaintext" }

[columns.weight]
type = "numeric"
encrypt = "randomized"
read = { clinician = "plaintext" }

[columns.smoker]
type = "bool"
encrypt = "randomized"
read = { clinician = "plaintext" }

[columns.seen]
type = "timestamp"
encrypt = "randomized"
read = { clinician = "plaintext" }

[columns.seen_at]
type = "timestamptz"
encrypt = "randomized"
read = { clinician = "plaintext", billing = "mask:year" }

[columns.ref]
type = "uuid"
encrypt = "deterministic"
read = { clinician = "plaintext" }

[columns.visits]
type = "int4"
encrypt = "randomized"
read = { clinician = "plaintext" }

[columns.beds]
type = "int2"
encrypt = "randomized"
read = { clinician = "plaintext" }
"#;

/// Encrypted columns without row policies: PostgreSQL refuses COPY FROM into a table whose
/// row-level security applies to the caller, so COPY goes here.
const INTAKE: &str = r#"
[table]
name = "public.intake"

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
encrypt = "randomized"
read = { clinician = "plaintext" }
"#;

/// Clinicians run the default statement kinds and DDL (Django creates the tables of
/// unprotected models).
const ROLES: &str = "[roles.clinician]\nstatements = [\"read\", \"write\", \"copy\", \"transaction\", \"session\", \"prepare\", \"ddl\"]\n[roles.nurse_station]\n[roles.billing]\n";

/// A proxy in front of the conformance schema; alice is a clinician of clinic 3, bill works
/// in billing there (masked reads).
async fn world() -> (Pg, Proxy) {
    let pg = Pg::start();
    let db = pg.direct().await;
    db.batch_execute(phigate::crypto::BACKSTOP_SQL)
        .await
        .unwrap();
    db.batch_execute(
        "create table patients (id serial primary key, clinic_id int not null,
                                ssn phigate_encrypted, full_name phigate_encrypted,
                                birth_date phigate_encrypted, note text);
         create table intake (id serial primary key, clinic_id int,
                              ssn phigate_encrypted, full_name phigate_encrypted, birth_date phigate_encrypted);
         create table vitals (id serial primary key, mrn phigate_encrypted, weight phigate_encrypted,
                              smoker phigate_encrypted, seen phigate_encrypted, seen_at phigate_encrypted,
                              ref phigate_encrypted, visits phigate_encrypted, beds phigate_encrypted);
         create table notes (id serial primary key, body text, created date);
         grant select, insert, update, delete on all tables in schema public to svc_scram;
         grant usage on all sequences in schema public to svc_scram;
         alter database ehr set timezone = 'UTC';",
    )
    .await
    .unwrap();
    let setup = Setup::new(
        &pg,
        &Options {
            roles: ROLES,
            tables: &[
                ("patients.toml", PATIENTS),
                ("intake.toml", INTAKE),
                ("vitals.toml", VITALS),
            ],
            session: "[policies]\nnative = \"apply\"",
            ..Options::default()
        },
    );
    setup.upstream_line("admin_user = \"postgres\"");
    phigate::policy::add_user(
        &setup.dir.path().join("policies/users.toml"),
        "bill",
        "billing",
        "bill-pw",
    )
    .unwrap();
    setup.attributes("alice", "{ clinic_id = 3 }");
    setup.attributes("bill", "{ clinic_id = 3 }");
    let proxy = Proxy::with_setup(setup).await;
    (pg, proxy)
}

/// True when the suite must run (CI); false to skip it when a driver is missing.
fn required() -> bool {
    std::env::var("CONFORMANCE_SUITE").is_ok_and(|v| v == "required")
}

/// Runs one language's checks (the command `run`, in `dir`) against a fresh proxy, unless
/// the command `probe` (run the same way) fails: the drivers are missing, and `install`
/// says how to get them.
async fn suite(run: &[&str], probe: &[&str], dir: &str, install: &str) {
    let dir = format!("{}/tests/conformance/{dir}", env!("CARGO_MANIFEST_DIR"));
    let present = Command::new(probe[0])
        .args(&probe[1..])
        .current_dir(&dir)
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(!required(), "the drivers are missing: {install}");
        eprintln!("skipped: {install} to run it");
        return;
    }
    let (_pg, proxy) = world().await;
    let port = proxy.addr.port().to_string();
    let mut command = Command::new(run[0]);
    command
        .args(&run[1..])
        .current_dir(&dir)
        .env("PROXY_HOST", "127.0.0.1")
        .env("PROXY_PORT", port)
        .env("PROXY_USER", "alice")
        .env("PROXY_PASSWORD", "alice-pw")
        .env("PROXY_DB", "ehr")
        .env("PROXY_BILLING_USER", "bill")
        .env("PROXY_BILLING_PASSWORD", "bill-pw");
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the suite runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "a driver check failed:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_and_orms() {
    suite(
        &["python3", "python_drivers.py"],
        &[
            "python3",
            "-c",
            "import psycopg, psycopg2, asyncpg, sqlalchemy, greenlet",
        ],
        "",
        "pip install -r tests/conformance/requirements.txt",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_orm() {
    suite(
        &["python3", "django_orm.py"],
        &["python3", "-c", "import django, psycopg"],
        "",
        "pip install -r tests/conformance/requirements.txt",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    suite(
        &["node", "checks.js"],
        &["node", "-e", "require('pg'); require('pg-cursor')"],
        "node",
        "npm install --prefix tests/conformance/node",
    )
    .await;
}

/// pgjdbc from the distribution (`libpostgresql-jdbc-java`).
const PGJDBC: &str = "/usr/share/java/postgresql.jar";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    suite(
        &["java", "-cp", PGJDBC, "Checks.java"],
        &["test", "-f", PGJDBC],
        "java",
        "apt-get install libpostgresql-jdbc-java",
    )
    .await;
}

/// Hibernate ORM 3.6 from the distribution (`libhibernate3-java`, `libjavassist-java`),
/// with pgjdbc: the jars on its class path.
const HIBERNATE: &[&str] = &[
    "hibernate-core.jar",
    "hibernate-commons-annotations.jar",
    "geronimo-jpa_2.0_spec.jar",
    "geronimo-jta-1.2-spec.jar",
    "dom4j.jar",
    "antlr.jar",
    "commons-collections3.jar",
    "javassist.jar",
    "slf4j-api.jar",
    "slf4j-nop.jar",
    "postgresql.jar",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernate() {
    let path = HIBERNATE
        .iter()
        .map(|jar| format!("/usr/share/java/{jar}"))
        .collect::<Vec<_>>()
        .join(":");
    suite(
        &["java", "-cp", &path, "HibernateChecks.java"],
        &["test", "-f", "/usr/share/java/hibernate-core.jar"],
        "java",
        "apt-get install libhibernate3-java libjavassist-java",
    )
    .await;
}

/// psql in LATIN1 (`PGCLIENTENCODING=LATIN1`, as legacy clients run): a script with
/// LATIN1 bytes writes an encrypted value and reads it back in LATIN1, and a UTF-8 client
/// reads the same value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_in_latin1() {
    let (_pg, proxy) = world().await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("latin1.sql");
    std::fs::write(
        &script,
        b"\\set ON_ERROR_STOP 1\n\
          INSERT INTO intake (clinic_id, ssn, full_name) VALUES (3, '111-11-1111', 'Jos\xe9 M\xfcller');\n\
          SELECT full_name FROM intake WHERE ssn = '111-11-1111';\n\
          SELECT 'caf\xe9' AS plain;\n",
    )
    .unwrap();
    let port = proxy.addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args([
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "alice",
                "-d",
                "ehr",
                "-f",
            ])
            .arg(&script)
            .env("PGPASSWORD", "alice-pw")
            .env("PGCLIENTENCODING", "LATIN1")
            .output()
            .expect("psql runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"INSERT 0 1\nJos\xe9 M\xfcller\ncaf\xe9\n");
    let utf8 = proxy.alice().await;
    let row = utf8
        .query_one(
            "SELECT full_name FROM intake WHERE ssn = '111-11-1111'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "José Müller");
}

/// A role with DDL rights and row policies may create tables but not routines: a
/// function's body runs later, unseen by phigate, and could read another clinic's rows
/// past the rewrite, or the raw envelopes of values the role chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_row_policies_creates_no_routine() {
    let (_pg, proxy) = world().await;
    let alice = proxy.alice().await;
    for sql in [
        "CREATE FUNCTION leak(t text) RETURNS text LANGUAGE plpgsql AS $$ DECLARE r text; \
         BEGIN EXECUTE 'SELECT encode(ssn::bytea, ''hex'') FROM ' || t INTO r; RETURN r; END $$",
        "create or replace procedure p() language sql as $$ select 1 $$",
    ] {
        let refused = alice.batch_execute(sql).await.unwrap_err();
        assert_eq!(common::code(&refused), "42501", "{sql}");
    }
    alice
        .batch_execute("CREATE TABLE scratch (a int); DROP TABLE scratch")
        .await
        .unwrap();
}

/// A DBA's psql through phigate: `\d+` of a protected table (psql's catalog queries name
/// the table in a regular expression), `\dt`, `\dp`, and `\copy` both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_work_on_protected_tables() {
    let (_pg, proxy) = world().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "3,222-22-2222,Bob\n").unwrap();
    let port = proxy.addr.port().to_string();
    let copy_in = format!(
        "\\copy intake (clinic_id, ssn, full_name) from '{}' csv",
        csv.display()
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut psql = Command::new("psql");
        psql.args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ])
        .args(["-U", "alice", "-d", "ehr"])
        .env("PGPASSWORD", "alice-pw");
        for command in [
            "\\d+ patients",
            "\\dt",
            "\\dp patients",
            copy_in.as_str(),
            "\\copy intake (ssn, full_name) to stdout csv",
        ] {
            psql.args(["-c", command]);
        }
        psql.output().expect("psql runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ssn|phigate_encrypted"), "{stdout}");
    assert!(stdout.ends_with("222-22-2222,Bob\n"), "{stdout}");
}
