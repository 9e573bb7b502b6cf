//! `phigate demo` end to end: start, query as two roles through psql, check what each
//! sees, verify the audit log, stop with Ctrl-C, nothing left behind.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn phigate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phigate"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs psql with `conninfo`; returns (stdout, stderr).
fn psql(conninfo: &str, sql: &str) -> (String, String) {
    let out = Command::new("psql")
        .args([conninfo, "-X", "-At", "-F", "|", "-c", sql])
        .output()
        .expect("psql runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The connection string the guide prints after `marker`.
fn conninfo(guide: &str, marker: &str) -> String {
    let line = guide
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no line with {marker} in:\n{guide}"));
    let start = line.find("psql \"").unwrap() + 6;
    let end = start + line[start..].find('"').unwrap();
    line[start..end].to_owned()
}

#[test]
fn demo_starts_protects_audits_and_cleans_up() {
    let dir = std::env::temp_dir().join(format!("phigate-demo-test-{}", std::process::id()));
    let port = free_port();
    let started = Instant::now();
    let mut demo = phigate()
        .args([
            "demo",
            "--patients",
            "300",
            "--port",
            &port.to_string(),
            "--dir",
        ])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut guide = String::new();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        guide.push_str(&line);
        guide.push('\n');
        if line.starts_with("ready in") {
            break;
        }
    }
    assert!(
        guide.contains("ready in"),
        "the demo did not get ready:\n{guide}"
    );
    eprintln!("demo ready after {:?}", started.elapsed());

    // A clinician of clinic 1: only clinic 1's patients, names in plaintext, SSN masked.
    let house = conninfo(&guide, "user=dr.house");
    let (out, err) = psql(
        &house,
        "SELECT clinic_id, full_name, ssn FROM patients ORDER BY id",
    );
    assert!(err.is_empty(), "{err}");
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(
        rows.len(),
        100,
        "clinic 1 holds every third of 300 patients"
    );
    assert!(rows.iter().all(|r| r[0] == "1"));
    assert!(
        rows.iter()
            .all(|r| r[1].contains(' ') && !r[1].starts_with("\\x"))
    );
    assert!(rows.iter().any(|r| r[2].starts_with("***-**-")));
    assert!(
        rows.iter()
            .all(|r| r[2].is_empty() || r[2].starts_with("***-**-"))
    );

    // Billing: every clinic, SSNs in full, clinical notes refused.
    let billing = conninfo(&guide, "user=bill.pay");
    let (out, err) = psql(
        &billing,
        "SELECT DISTINCT clinic_id FROM patients ORDER BY 1",
    );
    assert_eq!((out.as_str(), err.as_str()), ("1\n2\n3\n", ""));
    let (out, _) = psql(
        &billing,
        "SELECT ssn FROM patients WHERE ssn IS NOT NULL LIMIT 1",
    );
    assert!(
        out.trim().starts_with('9') && out.trim().len() == 11,
        "{out}"
    );
    // One patient looked up by SSN: by billing (allowed), and by the clinician, whose
    // role sees SSNs masked and so may not search on them (refused).
    let ssn = out.trim().to_owned();
    let lookup = format!("SELECT full_name FROM patients WHERE ssn = '{ssn}'");
    let (out, err) = psql(&billing, &lookup);
    assert!(err.is_empty() && out.lines().count() == 1, "{out}{err}");
    let (_, err) = psql(&house, &lookup);
    assert!(err.contains("42501") || err.contains("may not"), "{err}");
    let (_, err) = psql(&billing, "SELECT notes FROM encounters LIMIT 1");
    assert!(err.contains("permission denied for column notes"), "{err}");

    // The researcher: aggregates answer, the registry does not (the bulk-read guard).
    let rita = conninfo(&guide, "user=rita.research");
    let (out, err) = psql(&rita, "SELECT count(*) FROM patients");
    assert_eq!((out.trim(), err.as_str()), ("300", ""));
    // (300 patients here, twice over: past the example set's 500)
    let (_, err) = psql(&rita, "SELECT mrn FROM patients, generate_series(1, 2)");
    assert!(err.contains("phigate row cap"), "{err}");

    // At rest: the database holds envelopes, never the values.
    let backup = conninfo(&guide, "user=ehr_backup");
    let (out, err) = psql(&backup, "SELECT full_name, mrn FROM patients LIMIT 5");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.lines()
            .all(|l| l.starts_with("\\x0101") && l.contains("|\\x0102")),
        "{out}"
    );

    // The audit log: the clinician's statement is found and the chain verifies.
    let audit = dir.join("phigate/audit");
    let key = dir.join("phigate/secrets/audit.ed25519");
    let found = phigate()
        .args(["audit", "search"])
        .arg(&audit)
        .args(["--user", "dr.house", "--table", "public.patients", "--json"])
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&found.stdout);
    assert!(
        found.contains("SELECT clinic_id, full_name, ssn FROM patients"),
        "{found}"
    );
    let verify = phigate()
        .args(["audit", "verify"])
        .arg(&audit)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The compliance officer's report on that patient, opened in a real browser.
    let page = std::env::temp_dir().join(format!("phigate-report-{}.html", std::process::id()));
    let report = phigate()
        .args(["audit", "report"])
        .arg(&audit)
        .args(["--patient", &ssn, "--key"])
        .arg(&key)
        .arg("--html")
        .arg(&page)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    // the seeding INSERT that created the patient used the value too
    assert!(
        text.contains("accesses: 2 allowed, 1 refused or failed"),
        "{text}"
    );
    assert!(text.contains("ada.admin") && text.contains("INSERT INTO public.patients"));
    assert!(
        !text.contains(&ssn),
        "the report never shows the value: {text}"
    );
    let dom = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium (installed by .ci/run) opens the report");
    let dom = String::from_utf8_lossy(&dom.stdout);
    let _ = std::fs::remove_file(&page);
    for expected in [
        "bill.pay",
        "dr.house",
        "denied by phigate (42501)",
        "id=\"timeline\"",
        "<rect",
    ] {
        assert!(
            dom.contains(expected),
            "{expected} not in the rendered report:\n{dom}"
        );
    }

    // Ctrl-C: everything stops and the workspace is gone.
    let pg_port: u16 = backup
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: sends SIGINT to our own child.
    unsafe {
        libc::kill(demo.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = demo.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(
        !PathBuf::from(&dir).exists(),
        "{} was left behind",
        dir.display()
    );
    for p in [port, pg_port] {
        assert!(
            TcpStream::connect(("127.0.0.1", p)).is_err(),
            "port {p} still answers"
        );
    }
}
