//! The `phigate` binary: check, user add, serve, environment overrides, and a memory soak.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Options, Pg, Setup, free_port};

fn phigate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phigate"))
}

#[test]
fn check_prints_a_summary_and_names_bad_keys() {
    let pg = Pg::start();
    let setup = Setup::new(&pg, &Options::default());
    let out = phigate()
        .args(["check", "--config"])
        .arg(&setup.config)
        .output()
        .unwrap();
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
    let out = phigate()
        .args(["check", "--config"])
        .arg(&setup.config)
        .output()
        .unwrap();
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

/// Runs `phigate serve` on a free port; returns the process and the port.
fn serve(setup: &Setup) -> (Serve, u16) {
    let port = free_port();
    let serve = Serve(
        phigate()
            .args(["serve", "--config"])
            .arg(&setup.config)
            .env("PHIGATE_LISTEN__ADDRESS", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
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

    let (_serve, port) = serve(&setup);
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
    let run = |args: &[&str]| {
        phigate()
            .args(args)
            .arg("--config")
            .arg(&setup.config)
            .output()
            .unwrap()
    };
    let out = run(&["check"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("none yet"));
    std::fs::create_dir(setup.dir.path().join("secrets")).unwrap();
    let out = run(&["keys", "generate"]);
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
    let out = run(&["keys", "generate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the keyring is untouched"
    );
    let out = run(&["keys", "rotate"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 key(s), active key 2"));
    let out = run(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 key(s), active key 2"), "{text}");
    // The keys themselves are never printed.
    let key_line = String::from_utf8_lossy(&before)
        .lines()
        .find(|l| l.starts_with("key = "))
        .unwrap()
        .to_owned();
    let key = key_line.trim_start_matches("key = ").trim_matches('"');
    for out in [run(&["check"]), run(&["keys", "rotate"])] {
        assert!(!String::from_utf8_lossy(&out.stdout).contains(key));
        assert!(!String::from_utf8_lossy(&out.stderr).contains(key));
    }
}
