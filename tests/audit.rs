//! The audit log against a real PostgreSQL: every statement recorded before it runs, no
//! value in the log, a chain that verifies and survives restarts, and statements refused
//! when the log cannot be written.

mod common;

use std::path::{Path, PathBuf};

use common::{Options, Pg, Proxy, code, count};
use phigate::audit::{AuditKeys, Kind, Record, verify};

fn records(dir: &Path) -> Vec<Record> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && p.is_file())
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|s| {
            std::fs::read_to_string(s)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Record>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits (up to 10 s) until the log holds a record `pred` accepts: records that gate
/// nothing reach the file within a few milliseconds, later under load.
async fn wait_for(dir: &Path, pred: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    for _ in 0..200 {
        let all = records(dir);
        if pred(&all) {
            return all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the awaited records never reached the log");
}

fn ended(all: &[Record]) -> usize {
    all.iter()
        .filter(|r| r.kind == Some(Kind::SessionEnd))
        .count()
}

fn keys(proxy_dir: &Path) -> AuditKeys {
    AuditKeys::load(&proxy_dir.join("secrets/audit.ed25519")).unwrap()
}

fn check_chain(proxy_dir: &Path) -> phigate::audit::Report {
    let k = keys(proxy_dir);
    let audit = proxy_dir.join("audit");
    verify(&audit, &k.public(), None).expect("verifies with the public key");
    verify(&audit, &k.public(), Some(&k)).expect("verifies with the keys")
}

fn grep_dir(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            hits.extend(grep_dir(&p, needle));
        } else if String::from_utf8_lossy(&std::fs::read(&p).unwrap()).contains(needle) {
            hits.push(p);
        }
    }
    hits
}

/// A literal SSN and a bound-parameter SSN: both statements are recorded with user, role,
/// address and outcome; neither value appears anywhere in the audit directory, and each is
/// findable by its keyed hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_recorded_without_their_values() {
    let (_pg, proxy) = common::start(Options::default()).await;
    let app = proxy.alice().await;
    app.simple_query("select count(*) from pg_class where relname = '999-12-3456'")
        .await
        .unwrap();
    let row = app
        .query_one("select $1::text || 'x'", &[&"888-77-6666"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "888-77-6666x");
    let e = app.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(code(&e), "22012");
    drop(app);
    let dir = proxy.setup.dir.path();
    let audit = dir.join("audit");
    let all = wait_for(&audit, |all| ended(all) == 1).await;
    for value in ["999-12-3456", "888-77-6666", "12-3456", "77-6666"] {
        assert!(
            grep_dir(&audit, value).is_empty(),
            "{value} found in the audit log"
        );
    }
    let k = keys(dir);
    let statement = |text: &str| {
        all.iter()
            .find(|r| r.kind == Some(Kind::Statement) && r.statement.as_deref() == Some(text))
            .unwrap_or_else(|| panic!("no record of {text}: {all:#?}"))
            .clone()
    };
    let literal = statement("select count(*) from pg_class where relname = ?");
    assert_eq!(literal.user.as_deref(), Some("alice"));
    assert_eq!(literal.role.as_deref(), Some("clinician"));
    assert_eq!(literal.client_addr.as_deref(), Some("127.0.0.1"));
    assert!(literal.values.contains(&k.value_hash(b"999-12-3456")));
    let bound = statement("select $1::text || ?");
    assert!(bound.values.contains(&k.value_hash(b"888-77-6666")));
    let end = |begin: u64| {
        all.iter()
            .find(|r| r.kind == Some(Kind::StatementEnd) && r.begin == Some(begin))
            .unwrap_or_else(|| panic!("no outcome for seq {begin}"))
            .clone()
    };
    assert_eq!(end(literal.seq).rows, Some(1));
    assert_eq!(end(bound.seq).rows, Some(1));
    let failed = statement("select ?/?");
    assert_eq!(end(failed.seq).sqlstate.as_deref(), Some("22012"));
    assert!(all.iter().any(|r| r.kind == Some(Kind::SessionStart)));
    assert!(all.iter().any(|r| r.kind == Some(Kind::SessionEnd)));

    // A failed login is recorded, without the password tried.
    assert!(proxy.connect("alice", "wrong-password-123").await.is_err());
    let all = wait_for(&audit, |all| {
        all.iter().any(|r| r.kind == Some(Kind::AuthFailure))
    })
    .await;
    assert!(
        all.iter()
            .any(|r| r.kind == Some(Kind::AuthFailure) && r.user.as_deref() == Some("alice"))
    );
    assert!(grep_dir(&audit, "wrong-password").is_empty());
    check_chain(dir);

    // Security teams: who queried this SSN? (the value is hashed with the lookup key)
    let key = dir.join("secrets/audit.ed25519");
    let search = |args: &[&str]| common::audit_cli("search", &audit, args);
    let found = search(&[
        "--value",
        "888-77-6666",
        "--key",
        key.to_str().unwrap(),
        "--json",
    ]);
    let hits: Vec<Record> = found
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 1, "{found}");
    assert_eq!(hits[0].user.as_deref(), Some("alice"));
    assert_eq!(hits[0].statement.as_deref(), Some("select $1::text || ?"));
    // the outcome record (which repeats nothing of the begin record) is folded into it
    assert_eq!(hits[0].rows, Some(1), "{found}");
    assert!(hits[0].duration_us.is_some(), "{found}");
    let errors = search(&["--user", "alice", "--decision", "error"]);
    assert_eq!(errors.lines().count(), 1, "{errors}");
    assert!(
        errors.contains("22012") && errors.contains("select ?/?"),
        "{errors}"
    );
    let outcome = end(failed.seq);
    assert!(
        outcome.user.is_none() && outcome.role.is_none(),
        "{outcome:?}"
    );

    // Export for a SIEM: OCSF events with the outcome in them, CEF, the stored lines.
    let export = |format: &str| {
        let args = ["--format", format, "--since", "2000-01-01"];
        let text = common::audit_cli("export", &audit, &args);
        assert!(!text.contains("888-77-6666") && !text.contains("999-12-3456"));
        text
    };
    let ocsf: Vec<serde_json::Value> = export("ocsf")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let division = ocsf
        .iter()
        .find(|e| e["query_info"]["query_string"] == "select ?/?")
        .expect("the failed statement");
    assert_eq!(division["class_uid"], 6005);
    assert_eq!(division["status_code"], "22012");
    assert_eq!(division["actor"]["user"]["name"], "alice");
    assert_eq!(division["unmapped"]["decision"], "error");
    assert!(ocsf.iter().any(|e| e["class_uid"] == 3002), "logins");
    let cef = export("cef");
    assert!(
        cef.lines().all(|l| l.starts_with("CEF:0|phigate|phigate|")),
        "{cef}"
    );
    assert!(
        cef.contains("cs1=select ?/?") && cef.contains("reason=22012"),
        "{cef}"
    );
    let jsonl = export("jsonl");
    assert_eq!(
        jsonl.lines().count(),
        phigate::audit::read_lines(&audit).unwrap().len()
    );
    assert!(jsonl.lines().all(|l| l.contains("\"mac\":\"")));
    let failures = search(&["--kind", "auth_failure", "--since", "2000-01-01"]);
    assert_eq!(failures.lines().count(), 1, "{failures}");
    assert!(search(&["--until", "2000-01-01"]).is_empty());

    // tail -f shows what happens next.
    let mut tail = std::process::Command::new(env!("CARGO_BIN_EXE_phigate"))
        .args(["audit", "tail", "-n", "0", "-f", "--json"])
        .arg(&audit)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let app = proxy.alice().await;
    app.simple_query("select 'tail me'").await.unwrap();
    let stdout = tail.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map(Result::unwrap)
            .find(|l| l.contains("\"statement\":\"select ?\""))
    })
    .await
    .unwrap();
    tail.kill().unwrap();
    let _ = tail.wait();
    assert!(line.is_some());
}

/// A statement's outcome reaches the log while its session stays open: the relay writes
/// it once the reply is on its way to the client, not when the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_is_recorded_while_its_session_stays_open() {
    let (_pg, proxy) = common::start(Options::default()).await;
    let app = proxy.alice().await;
    app.simple_query("select 42").await.unwrap();
    let audit = proxy.setup.dir.path().join("audit");
    let outcome = |all: &[Record]| {
        let begin = all
            .iter()
            .find(|r| {
                r.kind == Some(Kind::Statement) && r.statement.as_deref() == Some("select ?")
            })?
            .seq;
        all.iter()
            .find(|r| r.kind == Some(Kind::StatementEnd) && r.begin == Some(begin))
            .cloned()
    };
    let all = wait_for(&audit, |all| outcome(all).is_some()).await;
    assert_eq!(outcome(&all).and_then(|r| r.rows), Some(1));
    assert_eq!(ended(&all), 0, "the session is still open");
    app.simple_query("select 1").await.unwrap();
}

/// 16 concurrent sessions x 1000 statements: exactly 16,000 statement records, and the
/// chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_give_one_record_per_statement() {
    let (_pg, proxy) = common::start(Options {
        audit: "checkpoint_every = 500\nsegment_size = \"256KiB\"\n",
        ..Options::default()
    })
    .await;
    let mut tasks = Vec::new();
    for s in 0..16 {
        let client = proxy.alice().await;
        tasks.push(tokio::spawn(async move {
            let stmt = client.prepare("select $1::int4 + 1").await.unwrap();
            for i in 0..1000i32 {
                if i % 2 == 0 {
                    client.query_one(&stmt, &[&(s * 1000 + i)]).await.unwrap();
                } else {
                    client.simple_query(&format!("select {i}")).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let dir = proxy.setup.dir.path();
    let all = wait_for(&dir.join("audit"), |all| ended(all) == 16).await;
    let statements = all
        .iter()
        .filter(|r| {
            r.kind == Some(Kind::Statement)
                && matches!(
                    r.statement.as_deref(),
                    Some("select $1::int4 + ?" | "select ?")
                )
        })
        .count();
    assert_eq!(statements, 16_000);
    let ends = all
        .iter()
        .filter(|r| r.kind == Some(Kind::StatementEnd))
        .count();
    assert!(ends >= 16_000, "{ends}");
    let report = check_chain(dir);
    assert!(report.segments > 1, "{report:?}");
}

/// After a crash and a restart the chain continues from the last record: no fork, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_continues_across_restarts() {
    let pg = Pg::start();
    let proxy = Proxy::start(&pg, &Options::default()).await;
    let app = proxy.alice().await;
    app.simple_query("select 1").await.unwrap();
    drop(app);
    // The session is over (its records written) before the crash.
    wait_for(&proxy.setup.dir.path().join("audit"), |all| ended(all) == 1).await;
    let setup = proxy.crash().await;
    let before = records(&setup.dir.path().join("audit"));
    let proxy = Proxy::with_setup(setup).await;
    let app = proxy.alice().await;
    app.simple_query("select 2").await.unwrap();
    drop(app);
    let dir = proxy.setup.dir.path();
    let after = wait_for(&dir.join("audit"), |all| ended(all) == 2).await;
    assert!(after.len() > before.len());
    assert_eq!(&after[..before.len()], &before[..]);
    for (i, r) in after.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
    }
    check_chain(dir);
}

/// A statement's record reaches the OS before the statement runs, without a write of its
/// own: with every sync held (nothing written to the segments), a crash right after the
/// statement still leaves its record, which the next start takes into the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_record_staged_before_a_crash_is_kept() {
    let pg = Pg::start();
    let proxy = Proxy::start(&pg, &Options::default()).await;
    let app = proxy.alice().await;
    app.simple_query("select 1").await.unwrap();
    let audit = proxy.setup.dir.path().join("audit");
    wait_for(&audit, |all| {
        all.iter().any(|r| r.kind == Some(Kind::StatementEnd))
    })
    .await;
    proxy.auditor.as_ref().expect("audit on").hold_syncs(true);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    app.simple_query("select 41 as staged").await.unwrap();
    drop(app);
    let setup = proxy.crash().await;
    let is_staged = |r: &Record| r.statement.as_deref() == Some("select ? as staged");
    assert!(
        !records(&audit).iter().any(is_staged),
        "written before the crash"
    );
    let proxy = Proxy::with_setup(setup).await;
    let after = records(&audit);
    assert!(after.iter().any(is_staged), "the staged record was lost");
    for (i, r) in after.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
    }
    check_chain(proxy.setup.dir.path());
}

/// When the log cannot be written, statements are refused with 58030 and do not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_log_refuses_statements() {
    let pg = Pg::start();
    let db = pg.direct().await;
    db.batch_execute("create table t (i int); grant all on t to svc_scram")
        .await
        .unwrap();
    let setup = common::Setup::new(
        &pg,
        &Options {
            audit: "segment_size = \"4KiB\"\n",
            ..Options::default()
        },
    );
    // Every segment the log could rotate to is taken (by a directory): the next rotation
    // fails, as a full or read-only disk would make it fail.
    let audit = setup.dir.path().join("audit");
    for seq in 2..3000u64 {
        std::fs::create_dir_all(audit.join(format!("{seq:020}.jsonl"))).unwrap();
    }
    let proxy = Proxy::with_setup(setup).await;
    let app = proxy.alice().await;
    let mut refused_at = None;
    for i in 0..200 {
        match app.execute("insert into t values ($1)", &[&i]).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(code(&e), "58030", "{e:?}");
                refused_at = Some(i);
                break;
            }
        }
    }
    let refused_at = refused_at.expect("the log filled up");
    assert_eq!(
        count(
            &db,
            &format!("select count(*) from t where i = {refused_at}")
        )
        .await,
        0
    );
    assert_eq!(
        count(&db, "select count(*) from t").await,
        i64::from(refused_at)
    );
    let e = app
        .simple_query("insert into t values (-1)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "58030");
    assert_eq!(count(&db, "select count(*) from t where i = -1").await, 0);
}

/// `durability = "fsync"`: a session waiting for its sync holds only itself. With every
/// sync held (a stalled disk) and one thread for the proxy and both clients, a second
/// session still answers while the first waits; the first completes once syncs resume.
#[tokio::test]
async fn a_slow_sync_holds_only_the_session_waiting_for_it() {
    use std::time::Duration;
    use tokio::time::timeout;
    let (_pg, proxy) = common::start(Options {
        audit: "durability = \"fsync\"\n",
        ..Options::default()
    })
    .await;
    let auditor = proxy.auditor.clone().expect("audit on");
    let waiting = proxy.alice().await;
    let other = proxy.alice().await;
    auditor.hold_syncs(true);
    let mut slow = Box::pin(waiting.simple_query("select 42"));
    assert!(
        timeout(Duration::from_millis(300), &mut slow)
            .await
            .is_err(),
        "a statement completed before its audit record was synced"
    );
    // Parse, Describe and Sync write no record: the other session answers on this thread.
    let stmt = timeout(Duration::from_secs(10), other.prepare("select $1::int4"))
        .await
        .expect("the other session answered while the first waited for its sync")
        .unwrap();
    assert_eq!(stmt.params().len(), 1);
    assert!(
        timeout(Duration::from_millis(100), &mut slow)
            .await
            .is_err()
    );
    auditor.hold_syncs(false);
    let rows = timeout(Duration::from_secs(10), slow)
        .await
        .expect("the statement completed once syncs resumed")
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}"); // RowDescription, the row, CommandComplete
    // Both sessions' statements are on disk in order, and the chain verifies.
    let n = other.query_one(&stmt, &[&7i32]).await.unwrap();
    assert_eq!(n.get::<_, i32>(0), 7);
    let report = check_chain(proxy.setup.dir.path());
    assert!(report.records >= 4, "{report:?}");
}

/// Connections refused before a session starts are recorded with the reason, the client's
/// address and the user claimed: plaintext to a TLS-only proxy (28000), another database
/// (3D000), too many connections (53300); a failed login says how long its answer was
/// held back (the throttle doubles it per failure from one address; the tests' base
/// pause is 100 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_recorded() {
    let pg = Pg::start();
    let tls_only = Proxy::start(
        &pg,
        &Options {
            listen_tls: true,
            require_tls: true,
            ..Options::default()
        },
    )
    .await;
    let e = tls_only.connect("alice", "alice-pw").await.unwrap_err();
    assert_eq!(code(&e), "28000");
    let proxy = Proxy::start(
        &pg,
        &Options {
            listen_extra: "max_connections = 1",
            ..Options::default()
        },
    )
    .await;
    let other_db = format!(
        "host=127.0.0.1 port={} user=mallory password=x dbname=payroll",
        proxy.addr.port()
    );
    // the only slot is free again once the previous connection's task has ended: retry
    // while it has not (53300)
    let refusal = |conninfo: String| async move {
        for _ in 0..100 {
            let e = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                .await
                .err()
                .expect("refused");
            if code(&e) != "53300" {
                return code(&e);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the slot never came free");
    };
    assert_eq!(refusal(other_db).await, "3D000");
    for _ in 0..2 {
        assert_eq!(
            refusal(proxy.conninfo("alice", "wrong-password")).await,
            "28P01"
        );
    }
    // a connection that has not finished its startup holds the only slot
    let held = loop {
        use tokio::io::AsyncReadExt;
        let mut held = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let mut byte = [0u8; 1];
        let answer =
            tokio::time::timeout(std::time::Duration::from_millis(300), held.read(&mut byte));
        // no answer: it holds the slot (a 53300 means the previous one still did)
        if answer.await.is_err() {
            break held;
        }
    };
    let e = proxy
        .connect("alice", "alice-pw")
        .await
        .expect_err("no slot");
    assert_eq!(code(&e), "53300");
    drop(held);

    let plain: Vec<Record> = wait_for(&tls_only.setup.dir.path().join("audit"), |all| {
        all.iter().any(|r| r.kind == Some(Kind::ConnectionRefused))
    })
    .await
    .into_iter()
    .filter(|r| matches!(r.kind, Some(Kind::ConnectionRefused | Kind::AuthFailure)))
    .collect();
    assert_eq!(plain.len(), 1, "{plain:#?}");
    assert_eq!(plain[0].sqlstate.as_deref(), Some("28000"));
    assert_eq!(plain[0].user.as_deref(), Some("alice"));
    assert_eq!(plain[0].client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(plain[0].tls, Some(false));
    let dir = proxy.setup.dir.path();
    let all = wait_for(&dir.join("audit"), |all| {
        all.iter().any(|r| r.sqlstate.as_deref() == Some("53300"))
    })
    .await;
    let of = |code: &str| -> Vec<&Record> {
        all.iter()
            .filter(|r| r.sqlstate.as_deref() == Some(code))
            .collect()
    };
    let db = of("3D000");
    assert_eq!(db.len(), 1);
    assert_eq!(db[0].kind, Some(Kind::ConnectionRefused));
    assert_eq!(db[0].user.as_deref(), Some("mallory"));
    assert!(
        db[0].detail.as_deref().unwrap().contains("payroll"),
        "{db:?}"
    );
    // (a retry above may have met the slot still taken: one record or more)
    let full = of("53300");
    assert!(!full.is_empty());
    assert_eq!(full[0].client_addr.as_deref(), Some("127.0.0.1"));
    let failed = of("28P01");
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|r| r.kind == Some(Kind::AuthFailure)));
    let pauses: Vec<&str> = failed
        .iter()
        .map(|r| r.detail.as_deref().unwrap())
        .collect();
    assert!(pauses[0].ends_with("answered after 100 ms"), "{pauses:?}");
    assert!(pauses[1].ends_with("answered after 200 ms"), "{pauses:?}");
}

/// rsyslogd from the distribution, receiving syslog over TCP on `port` (over TLS with
/// `tls`: the server certificate, its key and CA, with rsyslog's GnuTLS driver) and writing
/// each message (without its framing) as one line of `out.log` in `dir`.
fn rsyslogd(dir: &Path, port: u16, tls: Option<&common::Certs>) -> std::process::Child {
    let conf = dir.join(format!("rsyslog-{port}.conf"));
    let (global, driver) = match tls {
        None => (String::new(), String::new()),
        Some(c) => (
            format!(
                " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" \
                 defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                c.ca.display(),
                c.cert.display(),
                c.key.display()
            ),
            " streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\""
                .to_owned(),
        ),
    };
    std::fs::write(
        &conf,
        format!(
            "global(maxMessageSize=\"64k\" workDirectory=\"{dir}\"{global})\n\
             module(load=\"imtcp\"{driver})\n\
             input(type=\"imtcp\" port=\"{port}\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             *.* action(type=\"omfile\" file=\"{dir}/out.log\" template=\"raw\")\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("rsyslogd (apt-get install rsyslog; .ci/run installs it)");
    let mut child = std::process::Command::new(bin)
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.join(format!("rsyslog-{port}.pid")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rsyslogd starts");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("rsyslogd does not listen on {port}");
}

/// The seqs of the records a collector's file holds.
fn collected(out: &Path) -> std::collections::BTreeSet<u64> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let at = l.find("seq=\"")? + 5;
            l[at..].split('"').next()?.parse().ok()
        })
        .collect()
}

/// Waits (up to 10 s) until every record of the log in `dir` is at the collector.
async fn wait_sent(dir: &Path, out: &Path) {
    for _ in 0..200 {
        let written: std::collections::BTreeSet<u64> = phigate::audit::read_all(dir)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        if written.is_subset(&collected(out)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("records missing at the collector: {:?}", collected(out));
}

/// Every record reaches a real syslog collector (rsyslogd), as RFC 5424 with the record
/// in it; while the collector is down the log goes on, and once it is back every record
/// of the outage arrives (checked by seq); the chained files still verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_a_syslog_collector_and_survive_its_outage() {
    let syslog_dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut collector = rsyslogd(syslog_dir.path(), port, None);
    let audit: &'static str = Box::leak(
        format!("checkpoint_every = 25\n[audit.syslog]\naddress = \"127.0.0.1:{port}\"\ntls = \"disable\"\n")
            .into_boxed_str(),
    );
    let (_pg, proxy) = common::start(Options {
        audit,
        ..Options::default()
    })
    .await;
    let dir = proxy.setup.dir.path().join("audit");
    let out = syslog_dir.path().join("out.log");
    let app = proxy.alice().await;
    for i in 0..20 {
        app.simple_query(&format!("select {i}")).await.unwrap();
    }
    wait_sent(&dir, &out).await;
    let line = std::fs::read_to_string(&out).unwrap();
    assert!(line.contains("phigate@32473") && line.contains("\"statement\":\"select ?\""));

    // the collector goes away; statements go on
    collector.kill().unwrap();
    collector.wait().unwrap();
    for _ in 0..30 {
        app.simple_query("select 'during the outage'")
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut collector = rsyslogd(syslog_dir.path(), port, None);
    app.simple_query("select 'after'").await.unwrap();
    drop(app);
    wait_sent(&dir, &out).await;
    let mut behind = f64::MAX;
    for _ in 0..100 {
        behind = proxy.metric("phigate_audit_syslog_behind").await;
        if behind == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(behind, 0.0, "the backlog metric");
    collector.kill().unwrap();
    let _ = collector.wait();
    check_chain(proxy.setup.dir.path());
}

/// The same over TLS, the collector's certificate verified (rsyslog's GnuTLS driver), with
/// OCSF bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_a_syslog_collector_over_tls() {
    let pg = Pg::start();
    let syslog_dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut collector = rsyslogd(syslog_dir.path(), port, Some(&pg.certs));
    let audit: &'static str = Box::leak(
        format!(
            "[audit.syslog]\naddress = \"localhost:{port}\"\ntls = \"verify-full\"\n\
             ca_file = \"{}\"\nformat = \"ocsf\"\n",
            pg.certs.ca.display()
        )
        .into_boxed_str(),
    );
    let proxy = Proxy::start(
        &pg,
        &Options {
            audit,
            ..Options::default()
        },
    )
    .await;
    let app = proxy.alice().await;
    app.simple_query("select 'over tls'").await.unwrap();
    drop(app);
    let out = syslog_dir.path().join("out.log");
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("\"query_string\":\"select ?\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    collector.kill().unwrap();
    let _ = collector.wait();
    assert!(text.contains("\"class_uid\":6005"), "{text}");
    assert!(text.contains("\"query_string\":\"select ?\""), "{text}");
}
