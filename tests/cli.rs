//! The `phigate` binary: check, user add, serve, environment overrides, and a memory soak.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Options, Pg, Setup, free_port};

fn phigate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phigate"))
}

/// Runs `phigate ARGS --config <the setup's config>` to completion.
fn run(setup: &Setup, args: &[&str]) -> std::process::Output {
    phigate()
        .args(args)
        .arg("--config")
        .arg(&setup.config)
        .output()
        .unwrap()
}

#[test]
fn check_prints_a_summary_and_names_bad_keys() {
    let pg = Pg::start();
    let setup = Setup::new(&pg, &Options::default());
    let out = run(&setup, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("is valid") && text.contains("2 users, 2 roles"),
        "{text}"
    );
    assert!(text.contains("idle_timeout 15m"), "{text}");

    // PHIGATE_SECTION__KEY overrides the file.
    let out = phigate()
        .args(["check", "--config"])
        .arg(&setup.config)
        .env("PHIGATE_SESSION__IDLE_TIMEOUT", "7m")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("idle_timeout 7m"));

    // Each error names the file, the key and the problem.
    for (env, key, problem) in [
        (
            "PHIGATE_SESSION__IDLE_TIMEOUT",
            "idle_timeout",
            "not a duration",
        ),
        (
            "PHIGATE_LISTEN__ADDRESS",
            "address",
            "invalid socket address",
        ),
        ("PHIGATE_UPSTREAM__TLS", "tls", "unknown variant"),
    ] {
        let out = phigate()
            .args(["check", "--config"])
            .arg(&setup.config)
            .env(env, "bogus")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!out.status.success());
        assert!(
            err.contains("phigate.toml") && err.contains(key) && err.contains(problem),
            "{env}: {err}"
        );
        assert_eq!(err.matches(problem).count(), 1, "reported once: {err}");
    }
    // A policy error names the policy file and key.
    let roles = setup.dir.path().join("policies/roles.toml");
    std::fs::write(&roles, "[roles.clinician]\nidle_timeout = \"whenever\"\n").unwrap();
    let out = run(&setup, &["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("roles.toml") && err.contains("roles.clinician.idle_timeout"),
        "{err}"
    );
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `phigate serve` on a free port, logging to `log`; returns the process and the port.
fn serve_logging(setup: &Setup, log: Stdio) -> (Serve, u16) {
    serve_with(setup, &[], log)
}

/// Runs `phigate serve` on a free port with `env` (settings as `PHIGATE_...` variables),
/// logging to `log`; returns the process and the port once it accepts connections.
fn serve_with(setup: &Setup, env: &[(&str, &str)], log: Stdio) -> (Serve, u16) {
    let port = free_port();
    let serve = Serve(
        phigate()
            .args(["serve", "--config"])
            .arg(&setup.config)
            .env("PHIGATE_LISTEN__ADDRESS", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (serve, port);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("phigate serve did not start");
}

/// Runs `phigate serve` on a free port; returns the process and the port.
fn serve(setup: &Setup) -> (Serve, u16) {
    serve_logging(setup, Stdio::null())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_then_serve_lets_the_new_user_in() {
    let pg = Pg::start();
    let setup = Setup::new(&pg, &Options::default());
    let mut child = phigate()
        .args(["user", "add", "carol", "--role", "clinician", "--config"])
        .arg(&setup.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"carol's passphrase\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let users = std::fs::read_to_string(setup.dir.path().join("policies/users.toml")).unwrap();
    assert!(users.contains("[users.carol]") && users.contains("SCRAM-SHA-256$4096:"));
    assert!(!users.contains("passphrase"), "only the verifier is stored");
    // Adding her again is refused.
    let mut again = phigate()
        .args(["user", "add", "carol", "--role", "clinician", "--config"])
        .arg(&setup.config)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    again.stdin.take().unwrap().write_all(b"x\n").unwrap();
    let out = again.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    // A role roles.toml does not declare is refused before anything is written;
    // attributes are typed.
    let add = |args: &[&str]| {
        let mut child = phigate()
            .args(["user", "add"])
            .args(args)
            .arg("--config")
            .arg(&setup.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = add(&["dave", "--role", "surgeon"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("role \"surgeon\" is not declared"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = add(&[
        "erin",
        "--role",
        "clinician",
        "--attr",
        "clinic_id=3",
        "--attr",
        "ward=B 2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SIGHUP"));
    let users = std::fs::read_to_string(setup.dir.path().join("policies/users.toml")).unwrap();
    assert!(
        users.contains("attributes = { clinic_id = 3, ward = \"B 2\" }"),
        "{users}"
    );
    assert!(!users.contains("dave"));

    let log_path = setup.dir.path().join("phigate.log");
    let (serve, port) = serve_logging(
        &setup,
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    let wrong = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("carol")
        .password("wrong-secret-4711")
        .dbname("ehr")
        .connect(tokio_postgres::NoTls)
        .await;
    assert!(wrong.is_err());
    let (c, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("carol")
        .password("carol's passphrase")
        .dbname("ehr")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = c.query_one("select 40 + 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    drop(serve);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("login failed") && log.contains("carol"),
        "{log}"
    );
    assert!(log.contains("session started"), "{log}");
    assert!(
        !log.contains("wrong-secret-4711") && !log.contains("passphrase"),
        "no password in logs: {log}"
    );
}

/// The CPUs in the `Cpus_allowed_list` line of a /proc status file (`0-2,5`).
fn cpus_allowed(status: &std::path::Path) -> Option<Vec<usize>> {
    let status = std::fs::read_to_string(status).ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    Some(
        list.trim()
            .split(',')
            .flat_map(|part| match part.split_once('-') {
                Some((a, b)) => a.parse().unwrap()..=b.parse().unwrap(),
                None => part.parse().unwrap()..=part.parse().unwrap(),
            })
            .collect(),
    )
}

/// The allowed CPUs of each thread of `pid` named `phigate-<n>`, by n.
fn session_thread_cpus(pid: u32) -> std::collections::BTreeMap<usize, Vec<usize>> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Some(n) = comm
            .trim()
            .strip_prefix("phigate-")
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        if let Some(cpus) = cpus_allowed(&dir.join("status")) {
            out.insert(n, cpus);
        }
    }
    out
}

/// `listen.pin_threads`: session thread i runs only on the i-th CPU phigate may use, in
/// turn when there are more threads than CPUs; without it, on all of them.
#[test]
fn pinned_session_threads_run_on_one_cpu_each() {
    let pg = Pg::start();
    let setup = Setup::new(&pg, &Options::default());
    let allowed = cpus_allowed("/proc/self/status".as_ref()).unwrap();
    for pin in ["true", "false"] {
        let env = [
            ("PHIGATE_LISTEN__THREADS", "3"),
            ("PHIGATE_LISTEN__PIN_THREADS", pin),
        ];
        let (serve, _) = serve_with(&setup, &env, Stdio::null());
        let want: std::collections::BTreeMap<usize, Vec<usize>> = (0..3)
            .map(|i| {
                let cpus = if pin == "true" {
                    vec![allowed[i % allowed.len()]]
                } else {
                    allowed.clone()
                };
                (i, cpus)
            })
            .collect();
        let mut seen = Default::default();
        for _ in 0..200 {
            seen = session_thread_cpus(serve.0.id());
            if seen == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert_eq!(seen, want, "pin_threads = {pin}");
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A long-lived pooled connection running many statements (each prepared under a fresh
/// name and closed, as tokio-postgres does) must not grow phigate's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_many_statements() {
    let pg = Pg::start();
    let setup = Setup::new(&pg, &Options::default());
    let (serve, port) = serve(&setup);
    let conninfo = format!("host=127.0.0.1 port={port} user=alice password=alice-pw dbname=ehr");
    let (c, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let batch = |n: i32| {
        let c = &c;
        async move {
            let futs = (0..n).map(|i| async move {
                // A fresh named statement each time, closed afterwards, plus an unnamed
                // simple query.
                c.query_one("select $1::int4 + 1", &[&i]).await.unwrap();
                c.simple_query("select 1").await.unwrap();
            });
            futures_util::future::join_all(futs).await;
        }
    };
    for _ in 0..10 {
        batch(1000).await; // warm up: allocator pools, buffers
    }
    let before = rss_kib(serve.0.id());
    for _ in 0..60 {
        batch(1000).await; // 60,000 iterations, 240,000 protocol-level statements
    }
    let after = rss_kib(serve.0.id());
    eprintln!("phigate RSS: {before} KiB after warm-up, {after} KiB after 60k more iterations");
    assert!(
        after < before + 2048,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Large distinct statements naming a protected table are analysed but not kept by the
/// analysis cache: 60 prepared statements of 4 MiB each leave phigate's memory where it
/// was (issue 10: they once grew it by 177 MB, held after the session closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_distinct_statements_do_not_grow_memory() {
    let pg = Pg::start();
    let db = pg.direct().await;
    db.batch_execute(phigate::crypto::BACKSTOP_SQL)
        .await
        .unwrap();
    db.batch_execute(
        "create table patients (id int, diagnosis text, ssn phigate_encrypted);
         grant select on patients to svc_scram",
    )
    .await
    .unwrap();
    let setup = Setup::new(
        &pg,
        &Options {
            tables: &[(
                "patients.toml",
                "[table]\nname = \"patients\"\n[columns.ssn]\ntype = \"text\"\n\
                 encrypt = \"deterministic\"\nread = { clinician = \"plaintext\" }\n",
            )],
            ..Options::default()
        },
    );
    let (serve, port) = serve(&setup);
    let conninfo = format!("host=127.0.0.1 port={port} user=alice password=alice-pw dbname=ehr");
    let big = |i: usize| {
        format!(
            "select id, ssn from patients where diagnosis = '{}{i}'",
            "x".repeat(4 << 20)
        )
    };
    let session = |range: std::ops::Range<usize>| {
        let conninfo = conninfo.clone();
        async move {
            let (c, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(conn);
            for i in range {
                let statement = c.prepare(&big(i)).await.unwrap();
                assert!(c.query(&statement, &[]).await.unwrap().is_empty());
            }
            drop(c);
            let _ = driver.await;
        }
    };
    session(0..5).await; // warm up: buffers, allocator arenas
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = rss_kib(serve.0.id());
    session(5..65).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = rss_kib(serve.0.id());
    eprintln!("phigate RSS: {before} KiB before, {after} KiB after 60 statements of 4 MiB");
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn shipped_examples_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for config in ["phigate.example.toml", "docker/phigate.toml"] {
        phigate::config::Config::load(&root.join(config))
            .unwrap_or_else(|e| panic!("{config}: {e}"));
    }
    let set = phigate::policy::PolicySet::load(&root.join("policies")).unwrap();
    assert_eq!(set.counts().1, 6);
}

#[test]
fn keys_generate_refuses_to_overwrite_and_rotate_adds_a_key() {
    use std::os::unix::fs::PermissionsExt;
    let pg = Pg::start();
    let setup = Setup::new(&pg, &Options::default());
    let out = run(&setup, &["check"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("none yet"));
    std::fs::create_dir(setup.dir.path().join("secrets")).unwrap();
    let out = run(&setup, &["keys", "generate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 key(s), active key 1"));
    let file = setup.dir.path().join("secrets/phigate.keys");
    let before = std::fs::read(&file).unwrap();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = run(&setup, &["keys", "generate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the keyring is untouched"
    );
    let out = run(&setup, &["keys", "rotate"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 key(s), active key 2"));
    let out = run(&setup, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 key(s), active key 2"), "{text}");
    // The keys themselves are never printed.
    let key_line = String::from_utf8_lossy(&before)
        .lines()
        .find(|l| l.starts_with("key = "))
        .unwrap()
        .to_owned();
    let key = key_line.trim_start_matches("key = ").trim_matches('"');
    for out in [run(&setup, &["check"]), run(&setup, &["keys", "rotate"])] {
        assert!(!String::from_utf8_lossy(&out.stdout).contains(key));
        assert!(!String::from_utf8_lossy(&out.stderr).contains(key));
    }
}

/// The backstop domain: a protected column accepts phigate envelopes and refuses plaintext
/// written around the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backstop_domain_refuses_plaintext() {
    use phigate::crypto::{ColumnCipher, Keyring, Mode, column_aad};
    let pg = Pg::start();
    let sql = phigate().arg("schema").output().unwrap();
    assert!(sql.status.success());
    let sql = String::from_utf8(sql.stdout).unwrap();
    let db = pg.direct().await;
    db.batch_execute(&sql).await.unwrap();
    db.batch_execute(&sql).await.expect("idempotent");
    db.batch_execute("create table patients(id int, ssn phigate_encrypted)")
        .await
        .unwrap();
    let ring = Keyring::from_keys(1, vec![(1, [3u8; 32])]);
    for mode in [Mode::Randomized, Mode::Deterministic] {
        let cipher = ColumnCipher::new(
            &ring,
            mode,
            &column_aad("public", "patients", "ssn", "text"),
        );
        let sealed = cipher.encrypt(b"999-12-3456");
        db.execute("insert into patients values (1, $1::bytea)", &[&sealed])
            .await
            .unwrap();
    }
    db.execute("insert into patients values (2, null)", &[])
        .await
        .unwrap();
    for plaintext in [
        &b"999-12-3456"[..],
        b"a much longer plaintext value that is over 34 bytes",
        &[1u8, 3, 0, 0, 0, 1],
    ] {
        let e = db
            .execute("insert into patients values (3, $1::bytea)", &[&plaintext])
            .await
            .unwrap_err();
        assert_eq!(common::code(&e), "23514", "{plaintext:?}");
    }
    let e = db
        .batch_execute("update patients set ssn = convert_to('999-12-3456', 'UTF8')")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "23514");
    assert_eq!(common::count(&db, "select count(*) from patients").await, 3);
}

/// Table policies: validated, checked against the live schema by `phigate check` and by
/// `serve` at startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_policies_are_checked_against_the_schema() {
    let pg = Pg::start();
    let setup = Setup::new(&pg, &Options::default());
    let db = pg.direct().await;
    db.batch_execute(phigate::crypto::BACKSTOP_SQL)
        .await
        .unwrap();
    db.batch_execute("create table patients(id int, ssn phigate_encrypted, notes bytea, dob text)")
        .await
        .unwrap();
    let policy = setup.dir.path().join("policies/patients.toml");
    let columns = |extra: &str| {
        format!(
            "[table]\nname = \"public.patients\"\n\
             [columns.ssn]\ntype = \"text\"\nencrypt = \"deterministic\"\ndomain = \"ssn\"\nread = {{ clinician = \"plaintext\" }}\n\
             [columns.notes]\ntype = \"text\"\nencrypt = \"randomized\"\n{extra}"
        )
    };
    std::fs::write(
        &policy,
        columns("[columns.dob]\ntype = \"date\"\nencrypt = \"randomized\"\n[columns.mrn]\ntype = \"text\"\nencrypt = \"randomized\"\n"),
    )
    .unwrap();
    let check = || run(&setup, &["check"]);
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("ssn: text deterministic (domain ssn): ok (phigate_encrypted)"),
        "{text}"
    );
    assert!(
        text.contains("notes: text randomized: ERROR: plain bytea"),
        "{text}"
    );
    assert!(
        text.contains("dob: date randomized: ERROR: stored as text"),
        "{text}"
    );
    assert!(
        text.contains("mrn: text randomized: ERROR: no such column"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 protected column(s) do not match"));

    // A protected column without the phigate_encrypted backstop is a start-up error, unless
    // the operator opts out (then `check` warns).
    std::fs::write(&policy, columns("")).unwrap();
    assert!(run(&setup, &["keys", "generate"]).status.success());
    let out = run(&setup, &["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("column notes of table public.patients is plain bytea")
            && err.contains("allow_plain_bytea"),
        "{err}"
    );
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str("[policies]\nallow_plain_bytea = true\n");
    std::fs::write(&setup.config, config).unwrap();
    let out = check();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("notes: text randomized: WARNING: plain bytea"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `serve` checks the live schema at startup: a protected column that is not bytea is a
    // startup error naming table and column.
    std::fs::write(
        &policy,
        columns("[columns.dob]\ntype = \"date\"\nencrypt = \"randomized\"\n"),
    )
    .unwrap();
    let out = run(&setup, &["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("column dob of table public.patients is text"),
        "{err}"
    );

    // A row policy whose users lack the attribute it uses is refused at load, naming the
    // file and the user.
    std::fs::write(
        &policy,
        format!(
            "{}[[policy]]\nname = \"own-clinic\"\nroles = [\"clinician\"]\ncommands = [\"select\"]\n\
             using = \"clinic_id = :user.clinic_id\"\n",
            columns("")
        ),
    )
    .unwrap();
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("users.toml") && err.contains("lacks `clinic_id`"),
        "{err}"
    );
}

const LEGACY: &str = r#"
[table]
name = "public.legacy"
[columns.ssn]
type = "text"
encrypt = "deterministic"
read = { clinician = "plaintext" }
[columns.dob]
type = "date"
encrypt = "randomized"
read = { clinician = "plaintext" }
"#;

/// `encrypt-existing` converts live plaintext columns in batches; killed half-way it
/// resumes without losing or duplicating a row, re-encrypts rows changed meanwhile, and
/// `--rekey` moves every value to the active key after `keys rotate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_existing_survives_being_killed() {
    const ROWS: i64 = 5000;
    let pg = Pg::start();
    let db = pg.direct().await;
    db.batch_execute(phigate::crypto::BACKSTOP_SQL)
        .await
        .unwrap();
    db.batch_execute(&format!(
        "create table legacy (id int primary key, ssn text, dob date, note text);
         insert into legacy select g, 'S-' || lpad(g::text, 6, '0'), date '1950-01-01' + g, 'n'
           from generate_series(1, {ROWS}) g;
         update legacy set ssn = null where id = 3;
         alter table legacy owner to svc_scram;"
    ))
    .await
    .unwrap();
    let setup = Setup::new(
        &pg,
        &Options {
            tables: &[("legacy.toml", LEGACY)],
            ..Options::default()
        },
    );
    let migrated = || async {
        common::count(
            &db,
            "select count(*) from legacy where ssn__phigate is not null",
        )
        .await
    };

    // Start, let some batches commit, kill it.
    let mut child = phigate()
        .args([
            "encrypt-existing",
            "--table",
            "legacy",
            "--column",
            "ssn",
            "--batch",
            "20",
        ])
        .arg("--config")
        .arg(&setup.config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let has_shadow = common::count(
            &db,
            "select count(*) from pg_attribute where attrelid = 'legacy'::regclass and attname = 'ssn__phigate'",
        )
        .await;
        if has_shadow == 1 && migrated().await >= 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = migrated().await;
    assert!(
        done < ROWS - 1,
        "killed too late to test resumption ({done})"
    );
    assert_eq!(
        common::count(&db, "select count(*) from legacy").await,
        ROWS
    );

    // A row changed meanwhile loses its ciphertext and is encrypted again.
    assert_eq!(
        common::count(
            &db,
            "select count(*) from legacy where id = 1 and ssn__phigate is not null"
        )
        .await,
        1
    );
    db.batch_execute("update legacy set ssn = 'CHANGED' where id = 1")
        .await
        .unwrap();
    assert_eq!(
        common::count(
            &db,
            "select count(*) from legacy where id = 1 and ssn__phigate is null"
        )
        .await,
        1
    );

    // Run again to the end.
    let out = run(
        &setup,
        &["encrypt-existing", "--table", "legacy", "--column", "ssn"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("legacy.ssn is now phigate_encrypted"),
        "{stdout}"
    );
    let out = run(
        &setup,
        &["encrypt-existing", "--table", "legacy", "--column", "dob"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        common::count(&db, "select count(*) from legacy").await,
        ROWS
    );
    // (listed, so that a failure says which column is left)
    let left: Vec<String> = db
        .query(
            "select column_name || ' ' || coalesce(domain_name, data_type) from information_schema.columns \
             where table_name = 'legacy' and (column_name like '%phigate' \
             or (column_name in ('ssn', 'dob') and domain_name is distinct from 'phigate_encrypted'))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        common::count(
            &db,
            "select count(*) from legacy where position('S-0' in encode(ssn, 'escape')) > 0"
        )
        .await,
        0
    );
    // Idempotent once done.
    let out = run(
        &setup,
        &["encrypt-existing", "--table", "legacy", "--column", "ssn"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 row(s) encrypted"));

    // Rotate and re-key.
    assert!(run(&setup, &["keys", "rotate"]).status.success());
    let out = run(
        &setup,
        &[
            "encrypt-existing",
            "--table",
            "legacy",
            "--column",
            "ssn",
            "--rekey",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{} row(s) re-encrypted", ROWS - 1)),
        "{stdout}"
    );
    assert_eq!(
        common::count(
            &db,
            "select count(*) from legacy where ssn is not null and substring(ssn::bytea from 3 for 4) <> '\\x00000002'::bytea"
        )
        .await,
        0
    );

    // Every value reads back through phigate.
    let proxy = common::Proxy::with_setup(setup).await;
    let app = proxy.alice().await;
    let rows = app
        .query("select id, ssn, dob from legacy order by id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len() as i64, ROWS);
    for r in &rows {
        let id: i32 = r.get(0);
        let ssn: Option<String> = r.get(1);
        let expected = match id {
            1 => Some("CHANGED".to_owned()),
            3 => None,
            _ => Some(format!("S-{id:06}")),
        };
        assert_eq!(ssn, expected, "row {id}");
        let dob: chrono::NaiveDate = r.get(2);
        assert_eq!(
            dob,
            chrono::NaiveDate::from_ymd_opt(1950, 1, 1).unwrap() + chrono::Days::new(id as u64)
        );
    }
    let found = app
        .query("select id from legacy where ssn = $1", &[&"S-004321"])
        .await
        .unwrap();
    assert_eq!(found[0].get::<_, i32>(0), 4321);
}

/// `phigate audit verify`: ok on an intact log (with the public key, or the signing key),
/// non-zero with the first bad seq after a byte is changed.
#[test]
fn audit_verify_reports_the_first_bad_record() {
    use phigate::audit::{AuditKeys, AuditLog, Durability, Kind, LogOptions, Record};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secrets/audit.ed25519");
    let keys = std::sync::Arc::new(AuditKeys::load_or_create(&key).unwrap());
    let log_dir = dir.path().join("audit");
    let mut log = AuditLog::open(
        &log_dir,
        keys,
        LogOptions {
            instance: "a".into(),
            segment_bytes: 1 << 20,
            checkpoint_every: 10,
            durability: Durability::Fsync,
        },
    )
    .unwrap();
    for i in 0..25 {
        log.append(
            Record {
                kind: Some(Kind::Statement),
                user: Some(format!("u{i}").into()),
                ..Record::default()
            },
            true,
        )
        .unwrap();
    }
    drop(log);
    let verify = |extra: &[&str]| {
        let out = phigate()
            .args(["audit", "verify"])
            .arg(&log_dir)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let public = format!("{}.pub", key.display());
    let (ok, text) = verify(&["--public-key", &public]);
    assert!(ok, "{text}");
    assert!(text.contains("ok: 25 records, 2 checkpoints"), "{text}");
    assert!(
        text.contains("5 record(s) after the last checkpoint"),
        "{text}"
    );
    let (ok, text) = verify(&["--key", key.to_str().unwrap()]);
    assert!(ok, "{text}");

    let segment = log_dir.join(format!("{:020}.jsonl", 1));
    let altered = std::fs::read_to_string(&segment)
        .unwrap()
        .replacen("\"u3\"", "\"u4\"", 1);
    std::fs::write(&segment, altered).unwrap();
    let (ok, text) = verify(&["--public-key", &public]);
    assert!(!ok);
    assert!(
        text.contains("FAILED: seq 11:") && text.contains("digest"),
        "{text}"
    );
    let (ok, text) = verify(&["--key", key.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        text.contains("FAILED: seq 4:") && text.contains("mac"),
        "{text}"
    );
}

/// Row policies need their native layer: `serve` refuses to start without it, `policies
/// apply` installs it, `check` reports what each role reads, and SIGHUP reloads the
/// policies, keeping the old set when the new one is broken or not backed natively.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_policies_apply_check_and_reload_on_sighup() {
    let pg = Pg::start();
    let db = pg.direct().await;
    db.batch_execute(
        "create table visits (id int primary key, clinic_id int not null);
         insert into visits values (1, 3), (2, 4);
         grant select, insert, update, delete on visits to svc_scram",
    )
    .await
    .unwrap();
    let policy = |using: &str| {
        format!(
            "[table]\nname = \"visits\"\n[[policy]]\nname = \"own-clinic\"\nroles = [\"clinician\"]\n\
             commands = [\"select\"]\nusing = \"{using}\"\n"
        )
    };
    let tables: &'static [(&'static str, &'static str)] = Box::leak(Box::new([(
        "visits.toml",
        &*Box::leak(policy("clinic_id = :user.clinic_id").into_boxed_str()),
    )]));
    let setup = Setup::new(
        &pg,
        &Options {
            roles: "[roles.clinician]\n[roles.nurse_station]\n",
            tables,
            ..Options::default()
        },
    );
    setup.upstream_line("admin_user = \"postgres\"");
    setup.attributes("alice", "{ clinic_id = 3 }");

    let out = run(&setup, &["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("phigate policies apply"),
        "{err}"
    );

    let out = run(&setup, &["policies", "apply"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("public.visits"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&setup, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "role clinician: statements read, write, copy, transaction, session, prepare"
        ) && text.contains("public.visits: rows where (clinic_id = :user.clinic_id)")
            && text.contains("role nurse_station")
            && text.contains("no rows (no policy names the role)"),
        "{text}"
    );

    let log = setup.dir.path().join("serve.log");
    let (serve, port) = serve_logging(&setup, std::fs::File::create(&log).unwrap().into());
    let ids = || async {
        let (c, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=alice password=alice-pw dbname=ehr"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        c.query("select id from visits order by id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i32>(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids().await, [1]);
    let pid = serve.0.id() as i32;
    let hup = |expect: &'static str| {
        let log = log.clone();
        async move {
            let before = std::fs::read_to_string(&log)
                .unwrap()
                .matches(expect)
                .count();
            unsafe { libc::kill(pid, libc::SIGHUP) };
            for _ in 0..200 {
                if std::fs::read_to_string(&log)
                    .unwrap()
                    .matches(expect)
                    .count()
                    > before
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!(
                "no `{expect}` in {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
    };
    let policies = setup.dir.path().join("policies");
    // broken: the old policies stay
    std::fs::write(
        policies.join("roles.toml"),
        "[roles.clinician]\nbogus = 1\n",
    )
    .unwrap();
    hup("policy reload refused").await;
    assert_eq!(ids().await, [1]);
    std::fs::write(
        policies.join("roles.toml"),
        "[roles.clinician]\n[roles.nurse_station]\n",
    )
    .unwrap();
    // valid, but the native policies are not installed yet: refused as well
    std::fs::write(policies.join("visits.toml"), policy("true")).unwrap();
    hup("policy reload refused").await;
    assert_eq!(ids().await, [1]);
    assert!(run(&setup, &["policies", "apply"]).status.success());
    hup("policies reloaded").await;
    assert_eq!(ids().await, [1, 2]);
    drop(serve);
}
