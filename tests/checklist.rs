//! The README's checklist for an existing database, step by step with the real binary,
//! against a throwaway PostgreSQL holding plaintext rows: init, dba.sql, declare,
//! encrypt-existing, policies apply, user add, check, serve. Ends with each role seeing what
//! the policies say and the rows encrypted at rest.

mod common;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn phigate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phigate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = phigate(args);
    assert!(o.status.success(), "phigate {args:?}:\n{}", text(&o));
    text(&o)
}

fn user_add(config: &str, name: &str, role: &str, attrs: &[&str]) -> String {
    let mut args = vec!["user", "add", name, "--role", role, "--config", config];
    for a in attrs {
        args.extend(["--attr", a]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_phigate"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{name}-pw").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "user add {name}: {}", text(&o));
    text(&o)
}

fn psql(conninfo: &str, sql: &str) -> (String, String) {
    let o = Command::new("psql")
        .args([conninfo, "-X", "-At", "-F", "|", "-c", sql])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const ROLES: &str = "[roles.clinician]\nbreak_glass = [\"clinician\"]\n\n[roles.billing]\nstatements = [\"read\"]\n";

const PATIENTS: &str = r#"[table]
name = "public.patients"

[columns.full_name]
type = "text"
encrypt = "randomized"
read = { clinician = "plaintext", billing = "plaintext" }

[columns.ssn]
type = "text"
encrypt = "deterministic"
read = { clinician = "mask:last4", billing = "plaintext" }

[columns.birth_date]
type = "date"
encrypt = "randomized"
read = { clinician = "plaintext", billing = "mask:year" }

[[policy]]
name = "own_clinic"
roles = ["clinician"]
commands = ["all"]
using = "clinic_id = :user.clinic_id"
check = "clinic_id = :user.clinic_id"

[[policy]]
name = "billing_reads_all"
roles = ["billing"]
commands = ["select"]
using = "true"
"#;

#[test]
fn the_checklist_protects_an_existing_database() {
    let pg = common::Pg::start();
    let superuser = format!("host=127.0.0.1 port={} user=postgres dbname=ehr", pg.port);
    // An application's database: its owner and plaintext PHI.
    let (_, err) = psql(
        &superuser,
        "CREATE ROLE app_owner LOGIN PASSWORD 'owner-pw'; ALTER DATABASE ehr OWNER TO app_owner; \
         SET ROLE app_owner; \
         CREATE TABLE patients (id int PRIMARY KEY, clinic_id int NOT NULL, full_name text, ssn text, birth_date date); \
         INSERT INTO patients SELECT i, 1 + i % 2, 'Patient ' || i, '900-00-' || lpad(i::text, 4, '0'), \
           date '1950-01-01' + i * 100 FROM generate_series(1, 40) i",
    );
    assert!(err.is_empty(), "{err}");

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("phigate");
    let d = dir.to_str().unwrap();
    let config = format!("{d}/phigate.toml");
    let port = common::free_port();

    // 1. init
    let out = ok(&[
        "init",
        "--upstream",
        &format!(
            "postgres://app_owner:owner-pw@127.0.0.1:{}/ehr?sslmode=disable",
            pg.port
        ),
        "--dir",
        d,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        &format!("127.0.0.1:{}", common::free_port()),
    ]);
    for f in [
        "phigate.toml",
        "certs/server.pem",
        "certs/server.key",
        "policies/roles.toml",
        "policies/table.toml.example",
        "secrets/phigate.keys",
        "secrets/upstream.pw",
        "secrets/admin.pw",
        "dba.sql",
    ] {
        assert!(dir.join(f).exists(), "init wrote no {f}");
    }
    // the printed step runs as printed
    let step = out
        .lines()
        .find(|l| l.contains("dba.sql") && l.contains("psql"))
        .unwrap();
    let step = step.trim().trim_start_matches("1. ");
    // 2. the DBA's SQL
    let o = Command::new("sh").args(["-c", step]).output().unwrap();
    assert!(o.status.success(), "{step}: {}", text(&o));

    // before any policy: check already checks what serve checks
    ok(&["check", "--config", &config]);

    // 3. declare roles and the table policy (the two edits)
    std::fs::write(dir.join("policies/roles.toml"), ROLES).unwrap();
    std::fs::write(dir.join("policies/patients.toml"), PATIENTS).unwrap();

    // check and serve refuse the same thing: the columns are still plaintext
    let o = phigate(&["check", "--config", &config]);
    assert!(!o.status.success());
    assert!(text(&o).contains("full_name"), "{}", text(&o));

    // 4. encrypt the existing rows, every declared column in one run, over the owner
    let out = ok(&[
        "encrypt-existing",
        "--table",
        "public.patients",
        "--config",
        &config,
    ]);
    for c in ["full_name", "ssn", "birth_date"] {
        assert!(
            out.contains(&format!("public.patients.{c}: 40 row(s) encrypted")),
            "{out}"
        );
    }

    // check says what serve would say: the native policies are missing
    let o = phigate(&["check", "--config", &config]);
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(msg.contains("phigate policies apply"), "{msg}");
    no_sentence_twice(&msg);
    let o = phigate(&["serve", "--config", &config]);
    assert!(!o.status.success(), "serve started where check failed");

    // native policies need the attributes' types, which come from the users
    let o = phigate(&["policies", "apply", "--config", &config]);
    assert!(!o.status.success());
    assert!(text(&o).contains("add the users first"), "{}", text(&o));

    // 5. users
    let out = user_add(&config, "dr.one", "clinician", &["clinic_id=1"]);
    assert!(out.contains("SIGHUP"), "{out}");
    user_add(&config, "bill", "billing", &[]);

    // 6. native row-level security, with the cutover warning first
    let out = ok(&["policies", "apply", "--config", &config]);
    assert!(
        out.contains("pg_dump") && out.contains("BYPASSRLS"),
        "{out}"
    );

    // 7. check passes, so 8. serve starts
    ok(&["check", "--config", &config]);
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_phigate"))
            .args(["serve", "--config", &config])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    wait_port(port);

    let through = |user: &str| {
        format!(
            "host=127.0.0.1 port={port} user={user} password={user}-pw dbname=ehr sslmode=require"
        )
    };
    let (out, err) = psql(
        &through("dr.one"),
        "SELECT clinic_id, full_name, ssn, birth_date FROM patients ORDER BY id",
    );
    assert!(err.is_empty(), "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 20, "{out}");
    assert_eq!(rows[0], "1|Patient 2|***-**-0002|1950-07-20");
    let (out, _) = psql(
        &through("bill"),
        "SELECT ssn, birth_date FROM patients WHERE id = 7",
    );
    assert_eq!(out.trim(), "900-00-0007|1951");
    let (out, _) = psql(&through("bill"), "SELECT count(*) FROM patients");
    assert_eq!(out.trim(), "40");

    // At rest: envelopes. The owner reads no rows now; the backup login dumps ciphertext.
    let (out, _) = psql(
        &superuser,
        "SELECT substr(ssn::text, 1, 6), substr(full_name::text, 1, 6) FROM patients LIMIT 1",
    );
    assert_eq!(out.trim(), "\\x0102|\\x0101");
    let (out, _) = psql(
        &format!(
            "host=127.0.0.1 port={} user=app_owner password=owner-pw dbname=ehr",
            pg.port
        ),
        "SELECT count(*) FROM patients",
    );
    assert_eq!(out.trim(), "0");
    let backup_pw = std::fs::read_to_string(dir.join("secrets/backup.pw")).unwrap();
    let dump = Command::new("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "ehr_backup",
            "-t",
            "patients",
            "ehr",
        ])
        .env("PGPASSWORD", backup_pw.trim())
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", text(&dump));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("\\\\x0102") && !dump.contains("900-00-0007") && !dump.contains("Patient 7")
    );
}

/// The error line (`phigate: ...`) says nothing twice.
fn no_sentence_twice(msg: &str) {
    let line = msg
        .lines()
        .find(|l| l.starts_with("phigate:"))
        .unwrap_or(msg);
    let parts: Vec<&str> = line
        .split([';', ':'])
        .map(str::trim)
        .filter(|p| p.len() > 20)
        .collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p), "repeated `{p}` in:\n{line}");
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}
