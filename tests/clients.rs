//! Real clients through phigate: psql running a script, and pgbench.

mod common;

use std::process::Command;

use common::{Options, UPSTREAM_PASSWORD, start};

fn psql(port: u16, user: &str, password: &str, script: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            "ehr",
            "-f",
            script,
        ])
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "disable")
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // psql prefixes script errors with the file name and line; keep both streams in order
    // of appearance per stream.
    format!(
        "{}\n---stderr---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_output_is_identical_direct_and_through_phigate() {
    let (pg, proxy) = start(Options::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/psql_script.sql");
    let direct = psql(pg.port, "svc_scram", UPSTREAM_PASSWORD, script);
    let proxied = psql(proxy.addr.port(), "alice", "alice-pw", script);
    assert!(
        direct.contains("division by zero") && direct.contains("done"),
        "{direct}"
    );
    assert_eq!(direct, proxied);
}

fn pgbench(port: u16, args: &[&str]) -> String {
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "alice"])
        .args(args)
        .arg("ehr")
        .env("PGPASSWORD", "alice-pw")
        .env("PGSSLMODE", "disable")
        .output()
        .expect("pgbench runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initialises_and_runs_through_phigate() {
    let (_pg, proxy) = start(Options::default()).await;
    let port = proxy.addr.port();
    pgbench(port, &["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(port, &["-c", "4", "-j", "2", "-t", "200", "-S", "-M", mode]);
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "{out}"
        );
        assert!(out.contains("number of failed transactions: 0"), "{out}");
    }
    // The read-write TPC-B-like script, with transactions.
    let out = pgbench(port, &["-c", "4", "-j", "2", "-t", "50", "-M", "prepared"]);
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    assert!(
        proxy
            .metric("phigate_statements_total{kind=\"update\"}")
            .await
            >= 600.0
    );
}

/// libpq's large-object functions use the fast-path FunctionCall message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_through_function_calls() {
    let (pg, proxy) = start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("scan.bin");
    let back = dir.path().join("back.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let run = |cmd: &str| {
        let out = Command::new("psql")
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &proxy.addr.port().to_string(),
            ])
            .args(["-U", "alice", "-d", "ehr", "-c", cmd])
            .env("PGPASSWORD", "alice-pw")
            .env("PGSSLMODE", "disable")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let imported = run(&format!("\\lo_import '{}'", src.display()));
    let oid = imported
        .trim()
        .strip_prefix("lo_import ")
        .expect("psql reports the new OID")
        .to_owned();
    run(&format!("\\lo_export {oid} '{}'", back.display()));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    run(&format!("\\lo_unlink {oid}"));
    let direct = pg.direct().await;
    assert_eq!(
        common::count(&direct, "select count(*) from pg_largeobject_metadata").await,
        0
    );
}
