//! Authentication, TLS, upstream logins, cancel, timeouts, failures and the admin endpoint.

mod common;

use std::time::Duration;

use common::raw::{self, Raw};
use common::{Options, Pg, Proxy, code, start, wait_upstream_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_28p01_and_are_counted() {
    let (_pg, proxy) = start(Options::default()).await;
    let e = proxy
        .connect("alice", "not-her-password")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "28P01");
    let e = proxy.connect("mallory", "guess").await.unwrap_err();
    assert_eq!(code(&e), "28P01");
    assert_eq!(proxy.metric("phigate_auth_failures_total").await, 2.0);
    // The right password still works afterwards.
    proxy.alice().await.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_identifies_the_user_upstream() {
    let (pg, proxy) = start(Options::default()).await;
    let conninfo = format!(
        "{} application_name=chart-viewer",
        proxy.conninfo("alice", "alice-pw")
    );
    let (c, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.simple_query("select 1").await.unwrap();
    let direct = pg.direct().await;
    let row = direct
        .query_one("select application_name, usename from pg_stat_activity where application_name like 'phigate:%'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "phigate:alice/chart-viewer");
    assert_eq!(row.get::<_, &str>(1), "svc_scram");
    // SET application_name (pgjdbc sends one at start-up) keeps the user upstream; RESET
    // goes back to the start-up name; set_config cannot drop the user either.
    let upstream_name = || async {
        direct
            .query_one(
                "select application_name from pg_stat_activity where usename = 'svc_scram' and application_name like 'phigate:%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    // SHOW application_name answers the name the client set, as PostgreSQL would
    let show = c.simple_query("SHOW application_name").await.unwrap();
    let value = show.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("chart-viewer"));
    for (sql, expected) in [
        (
            "SET application_name = 'billing-ui'",
            "phigate:alice/billing-ui",
        ),
        ("set application_name to \"Ward 3\"", "phigate:alice/Ward 3"),
        ("SET application_name = ''", "phigate:alice"),
        ("RESET application_name", "phigate:alice/chart-viewer"),
        (
            "SET SESSION application_name TO PgJDBC",
            "phigate:alice/pgjdbc",
        ),
        (
            "SET application_name TO DEFAULT",
            "phigate:alice/chart-viewer",
        ),
    ] {
        c.simple_query(sql).await.unwrap();
        assert_eq!(upstream_name().await, expected, "{sql}");
    }
    c.execute("SET application_name = 'extended'", &[])
        .await
        .unwrap();
    assert_eq!(upstream_name().await, "phigate:alice/extended");
    let row = c.query_one("SHOW application_name", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "extended");
    let e = c
        .simple_query("select set_config('application_name', 'anonymous', false)")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "0A000");
    assert_eq!(upstream_name().await, "phigate:alice/extended");
}

/// Clients see the real backend pid (applications match it against pg_backend_pid() and
/// NOTIFY senders), with phigate's own cancel secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_the_upstream_backend_pid() {
    let (_pg, proxy) = start(Options::default()).await;
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    let pid = r.backend_pid.expect("BackendKeyData");
    r.send(&raw::query("select pg_backend_pid()")).await;
    let mut got = None;
    while let Some(m) = r.recv().await {
        if m.0 == b'D' {
            got = Some(String::from_utf8_lossy(&m.1[6..]).into_owned());
        }
        if m.0 == b'Z' {
            break;
        }
    }
    assert_eq!(got, Some(pid.to_string()));
    // A session may end its own backend (drivers test broken connections this way), not
    // another's.
    let c = proxy.alice().await;
    let other = proxy.alice().await;
    let e = c
        .simple_query(&format!("select pg_terminate_backend({pid})"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    let e = c
        .simple_query("select pg_terminate_backend(pg_backend_pid())")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "57P01", "{e:?}");
    assert!(c.is_closed() || c.simple_query("select 1").await.is_err());
    other.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_auth_methods_and_tls_modes() {
    let pg = Pg::start();
    for (user, tls) in [
        ("svc_scram", "disable"),
        ("svc_md5", "disable"),
        ("svc_trust", "disable"),
        ("svc_tls", "require"),
        ("svc_tls", "verify-full"),
    ] {
        let opts = Options {
            upstream_user: user,
            upstream_tls: tls,
            ..Options::default()
        };
        let proxy = Proxy::start(&pg, &opts).await;
        let c = proxy.alice().await;
        let row = c.query_one("select current_user::text, coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false)", &[]).await.unwrap();
        assert_eq!(row.get::<_, &str>(0), user, "{user} {tls}");
        assert_eq!(row.get::<_, bool>(1), tls != "disable", "{user} {tls}");
    }
    // svc_tls may only connect over TLS: without it the server refuses phigate, and the
    // client is told phigate could not open a session (not the server's auth details).
    let opts = Options {
        upstream_user: "svc_tls",
        ..Options::default()
    };
    let proxy = Proxy::start(&pg, &opts).await;
    let e = proxy.connect("alice", "alice-pw").await.unwrap_err();
    assert_eq!(code(&e), "08006");
    assert_eq!(proxy.metric("phigate_upstream_errors_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_certificate_for_another_name() {
    let pg = Pg::start();
    let proxy = Proxy::start(
        &pg,
        &Options {
            upstream_user: "svc_tls",
            upstream_tls: "verify-full",
            ..Options::default()
        },
    )
    .await;
    // Rewrite the expected name: the certificate is for localhost/127.0.0.1 only. The
    // second instance gets an audit log of its own (one log per instance).
    let text = std::fs::read_to_string(&proxy.setup.config).unwrap();
    let audit = proxy.setup.dir.path().join("audit-2");
    std::fs::write(
        &proxy.setup.config,
        text.replace(
            "server_name = \"localhost\"",
            "server_name = \"db.example.org\"",
        )
        .replace(
            "[audit]\n",
            &format!("[audit]\ndir = {:?}\n", audit.display().to_string()),
        ),
    )
    .unwrap();
    let config = phigate::config::Config::load(&proxy.setup.config).unwrap();
    let server = phigate::server::Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let task = tokio::spawn(server.run());
    let conninfo = format!(
        "host=127.0.0.1 port={} user=alice password=alice-pw dbname=ehr",
        addr.port()
    );
    let e = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .err()
        .expect("must fail");
    assert_eq!(code(&e), "08006");
    task.abort();
}

async fn tls_connect(
    proxy: &Proxy,
    pg: &Pg,
    user: &str,
    pw: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls =
        tokio_postgres_rustls::MakeRustlsConnect::new((*common::client_tls(&pg.certs)).clone());
    let conninfo = format!("{} sslmode=require", proxy.conninfo(user, pw))
        .replace("host=127.0.0.1", "host=localhost");
    let (c, conn) = tokio_postgres::connect(&conninfo, tls).await?;
    tokio::spawn(conn);
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_required_and_plaintext_refused() {
    let pg = Pg::start();
    let proxy = Proxy::start(
        &pg,
        &Options {
            listen_tls: true,
            require_tls: true,
            ..Options::default()
        },
    )
    .await;
    let c = tls_connect(&proxy, &pg, "alice", "alice-pw").await.unwrap();
    c.simple_query("select 1").await.unwrap();
    // Wrong password over TLS.
    let e = tls_connect(&proxy, &pg, "alice", "nope").await.unwrap_err();
    assert_eq!(code(&e), "28P01");
    // Plaintext is refused with 28000.
    let e = proxy.connect("alice", "alice-pw").await.unwrap_err();
    assert_eq!(code(&e), "28000");
}

/// A TLS 1.1 ClientHello, as an old driver would send it.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x02, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_1_1_handshake_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pg = Pg::start();
    let proxy = Proxy::start(
        &pg,
        &Options {
            listen_tls: true,
            ..Options::default()
        },
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::SSL_REQUEST).await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"S");
    s.write_all(&tls11_client_hello()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    // An alert record (0x15), protocol_version (70) or handshake_failure (40), then close.
    assert_eq!(reply.first(), Some(&0x15), "{reply:?}");
    assert!(matches!(reply.get(6), Some(70 | 40)), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_right_backend_and_unknown_keys_are_dropped() {
    let (_pg, proxy) = start(Options::default()).await;
    let c = proxy.alice().await;
    let bystander = proxy.alice().await;
    let token = c.cancel_token();
    let slow = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await });
    let other = tokio::spawn(async move { bystander.simple_query("select pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&e), "57014");
    other
        .await
        .unwrap()
        .expect("the other session's query is not cancelled");
    // A made-up key is dropped silently.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&raw::cancel_request(1, [0, 0, 0, 2]))
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
}

/// A forwarded CancelRequest's connection closes only once PostgreSQL has taken the
/// request, as the postmaster's own does: libpq waits for that close before it sends its
/// next statement, so a cancel must not arrive late and stop that statement instead. Here
/// the cancel reaches an idle session (which PostgreSQL ignores) when it is taken in time,
/// and the next statement's sleep when it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_taken_before_its_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_pg, proxy) = start(Options::default()).await;
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    let cancel = raw::cancel_request(
        r.backend_pid.expect("BackendKeyData"),
        r.backend_secret.expect("BackendKeyData"),
    );
    for round in 0..10 {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(&cancel).await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        r.send(&raw::query("select pg_sleep(0.2)")).await;
        loop {
            match r.recv().await.expect("the session stays open") {
                (b'Z', _) => break,
                (b'E', body) => panic!("round {round}: {}", raw::sqlstate(&body)),
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_ends_the_session_and_rolls_back() {
    let (pg, proxy) = start(Options::default()).await;
    // The nurse_station role has a 1 s idle timeout; the global default is 15 min.
    let nurse = proxy.connect("nurse", "nurse-pw").await.unwrap();
    let alice = proxy.alice().await;
    // (the nurse station may not run DDL)
    alice
        .batch_execute("create table vitals(v int)")
        .await
        .unwrap();
    nurse
        .batch_execute("begin; insert into vitals values (1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let e = nurse.simple_query("commit").await.unwrap_err();
    assert!(e.is_closed() || code(&e) == "57P05", "{e}");
    let direct = pg.direct().await;
    assert_eq!(
        common::count(&direct, "select count(*) from vitals").await,
        0,
        "the open transaction was rolled back"
    );
    alice
        .simple_query("select 1")
        .await
        .expect("alice's role keeps the default timeout");
    assert_eq!(proxy.metric("phigate_idle_timeouts_total").await, 1.0);
    // A long statement is not idleness.
    let nurse = proxy.connect("nurse", "nurse-pw").await.unwrap();
    nurse.simple_query("select pg_sleep(2)").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_error_is_57p05_on_the_wire() {
    let (_pg, proxy) = start(Options::default()).await;
    let mut r = Raw::login(proxy.addr, "nurse", "nurse-pw").await;
    let msgs = r.until_closed().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].0, b'E');
    assert_eq!(raw::sqlstate(&msgs[0].1), "57P05");
    assert!(String::from_utf8_lossy(&msgs[0].1).contains("FATAL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_ends_the_session() {
    let (_pg, proxy) = start(Options {
        session: "max_lifetime = \"1s\"",
        ..Options::default()
    })
    .await;
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    let msgs = r.until_closed().await;
    assert_eq!(raw::sqlstate(&msgs[0].1), "57P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_drops_gives_an_error_not_a_hang() {
    let (pg, proxy) = start(Options::default()).await;
    let c = proxy.alice().await;
    let direct = pg.direct().await;
    let pid: i32 = direct
        .query_one(
            "select pid from pg_stat_activity where application_name = 'phigate:alice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Kill the backend outright: the connection drops with no goodbye.
    let running = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let e = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("no hang")
        .unwrap()
        .unwrap_err();
    assert!(e.is_closed() || code(&e) == "08006", "{e}");
    // The server recovers and phigate serves new sessions.
    for _ in 0..100 {
        if let Ok(c) = proxy.connect("alice", "alice-pw").await
            && c.simple_query("select 1").await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("phigate did not recover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_closes_its_upstream() {
    let (pg, proxy) = start(Options::default()).await;
    let mut r = Raw::login(proxy.addr, "alice", "alice-pw").await;
    r.send(&raw::query(
        "begin; create table half(x int); insert into half values (1)",
    ))
    .await;
    while let Some((tag, _)) = r.recv().await {
        if tag == b'Z' {
            break;
        }
    }
    drop(r); // no Terminate: the socket just closes mid-transaction
    let direct = pg.direct().await;
    wait_upstream_gone(&direct, "alice").await;
    let t = direct
        .query("select 1 from pg_tables where tablename = 'half'", &[])
        .await
        .unwrap();
    assert!(t.is_empty(), "the transaction was rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_metrics_health_and_readiness() {
    let (mut pg, proxy) = start(Options::default()).await;
    let c = proxy.alice().await;
    c.batch_execute("create table m(x int); insert into m values (1); select * from m")
        .await
        .unwrap();
    c.query("select * from m", &[]).await.unwrap();
    let _ = c.simple_query("select * from nope").await;
    let needles = [
        "phigate_sessions_active 1",
        "phigate_statements_total{kind=\"select\"} 2",
        "phigate_statements_total{kind=\"insert\"} 1",
        "phigate_statements_total{kind=\"ddl\"} 1",
        "phigate_statements_total{kind=\"failed\"} 1",
        "phigate_statement_duration_seconds_count",
        "phigate_client_bytes_received_total",
        "phigate_upstream_bytes_sent_total",
        "phigate_auth_failures_total 0",
        "phigate_upstream_errors_total 0",
    ];
    // a statement is counted once its answer has been sent (the relay's sends come
    // first), so the last one may be counted a moment after the client read its answer
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (status, body) = loop {
        let (status, body) = proxy.admin_get("/metrics").await;
        if needles.iter().all(|n| body.contains(n)) || std::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.contains("200"), "{status}");
    for needle in needles {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
    assert!(proxy.admin_get("/healthz").await.0.contains("200"));
    assert!(proxy.admin_get("/readyz").await.0.contains("200"));
    assert!(proxy.admin_get("/nope").await.0.contains("404"));
    drop(c);
    pg.stop();
    assert!(proxy.admin_get("/readyz").await.0.contains("503"));
    assert!(proxy.admin_get("/healthz").await.0.contains("200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_other_than_the_configured_one_is_refused() {
    let (_pg, proxy) = start(Options::default()).await;
    let conninfo = proxy
        .conninfo("alice", "alice-pw")
        .replace("dbname=ehr", "dbname=postgres");
    let e = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(code(&e), "3D000");
}

/// SCRAM-SHA-256-PLUS: over TLS phigate offers channel binding (tls-server-end-point), so
/// a client that requires it (libpq's `channel_binding=require`) logs in; without TLS
/// there is no channel to bind, and such a client refuses to go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_requires_channel_binding_logs_in_over_tls() {
    let pg = Pg::start();
    let proxy = Proxy::start(
        &pg,
        &Options {
            listen_tls: true,
            ..Options::default()
        },
    )
    .await;
    let psql = |options: &str| {
        // (no sslrootcert: libpq would verify the test CA, which OpenSSL rejects)
        let conninfo = format!(
            "host=localhost port={} user=alice dbname=ehr {options}",
            proxy.addr.port(),
        );
        let out = std::process::Command::new("psql")
            .args([&conninfo, "-X", "-At", "-c", "select 'bound'"])
            .env("PGPASSWORD", "alice-pw")
            .output()
            .expect("psql runs");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (out, err) = psql("sslmode=require channel_binding=require");
    assert_eq!(out, "bound", "{err}");
    let (out, err) = psql("sslmode=require channel_binding=disable");
    assert_eq!(out, "bound", "{err}");
    let (out, err) = psql("sslmode=disable channel_binding=require");
    assert!(
        out.is_empty() && err.contains("channel binding"),
        "{out}{err}"
    );
}

/// A client certificate signed by the test's client CA, written with its key (mode 0600,
/// as libpq wants): (cert file, key file).
fn client_cert(
    dir: &std::path::Path,
    issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>,
    (cn, serial): (&str, u64),
    expired: bool,
) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    let (crt, pem) = (
        dir.join(format!("{serial}.crt")),
        dir.join(format!("{serial}.key")),
    );
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).unwrap();
    (crt, pem)
}

/// Client certificates: a user whose `auth` is `certificate` logs in with a certificate
/// naming them (psql's sslcert/sslkey) and no password; without one, with one naming
/// someone else, a revoked one (CRL) or an expired one it is refused; password users are
/// unaffected, and `certificate+password` needs both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_users_log_in_with_their_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let pg = Pg::start();
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "phigate test client CA");
    std::fs::write(
        dir.path().join("ca.pem"),
        ca.self_signed(&ca_key).unwrap().pem(),
    )
    .unwrap();
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let good = client_cert(dir.path(), &issuer, ("lab-analyzer-7", 1), false);
    let revoked = client_cert(dir.path(), &issuer, ("lab-analyzer-7", 2), false);
    let expired = client_cert(dir.path(), &issuer, ("lab-analyzer-7", 3), true);
    let other = client_cert(dir.path(), &issuer, ("someone-else", 4), false);
    let alice = client_cert(dir.path(), &issuer, ("alice", 5), false);
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(2u64),
            revocation_time: rcgen::date_time_ymd(2025, 1, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    std::fs::write(
        dir.path().join("crl.pem"),
        crl.signed_by(&issuer).unwrap().pem().unwrap(),
    )
    .unwrap();
    let listen: &'static str = Box::leak(
        format!(
            "client_ca = \"{}\"\nclient_crl = \"{}\"",
            dir.path().join("ca.pem").display(),
            dir.path().join("crl.pem").display()
        )
        .into_boxed_str(),
    );
    let setup = common::Setup::new(
        &pg,
        &Options {
            listen_tls: true,
            listen_extra: listen,
            ..Options::default()
        },
    );
    let users = setup.dir.path().join("policies/users.toml");
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(
        "\n[users.analyzer]\nrole = \"clinician\"\nauth = \"certificate\"\ncertificate_name = \"lab-analyzer-7\"\n",
    );
    // alice now needs her certificate and her password
    text = text.replacen(
        "[users.alice]\n",
        "[users.alice]\nauth = \"certificate+password\"\n",
        1,
    );
    std::fs::write(&users, text).unwrap();
    let proxy = Proxy::with_setup(setup).await;
    let psql = |user: &str, cert: Option<&(std::path::PathBuf, std::path::PathBuf)>, pw: &str| {
        let mut conninfo = format!(
            "host=localhost port={} user={user} dbname=ehr sslmode=require",
            proxy.addr.port()
        );
        if let Some((crt, key)) = cert {
            conninfo.push_str(&format!(
                " sslcert={} sslkey={}",
                crt.display(),
                key.display()
            ));
        }
        let out = std::process::Command::new("psql")
            .args([
                &conninfo,
                "-X",
                "-w",
                "-At",
                "-c",
                "select current_user <> ''",
            ])
            .env("PGPASSWORD", pw)
            .output()
            .expect("psql runs");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (out, err) = psql("analyzer", Some(&good), "");
    assert_eq!(out, "t", "{err}");
    for (why, cert) in [("none", None), ("another name", Some(&other))] {
        let (out, err) = psql("analyzer", cert, "");
        assert!(
            out.is_empty() && err.contains("certificate authentication failed"),
            "{why}: {err}"
        );
    }
    for (why, cert) in [("revoked", &revoked), ("expired", &expired)] {
        let (out, err) = psql("analyzer", Some(cert), "");
        assert!(out.is_empty() && !err.is_empty(), "{why}: {out}");
    }
    // certificate and password: both needed
    assert_eq!(psql("alice", Some(&alice), "alice-pw").0, "t");
    assert!(psql("alice", Some(&alice), "wrong").0.is_empty());
    assert!(psql("alice", None, "alice-pw").0.is_empty());
    // a password user is unaffected
    assert_eq!(psql("nurse", None, "nurse-pw").0, "t");
    // each refusal is in the audit log: the TLS handshakes, and the certificate checks
    let details_of = |records: &[phigate::audit::Record]| -> Vec<String> {
        records
            .iter()
            .filter(|r| r.sqlstate.as_deref() == Some("28000"))
            .filter_map(|r| r.detail.clone())
            .collect()
    };
    let audit = proxy.setup.dir.path().join("audit");
    let records = common::audit_records(&audit, |all| details_of(all).len() >= 4).await;
    let details = details_of(&records);
    assert!(
        details
            .iter()
            .any(|d| d.contains("TLS handshake failed") && d.contains("Revoked")),
        "{details:?}"
    );
    assert!(details.iter().any(|d| d.contains("expired")), "{details:?}");
    assert!(
        details.iter().any(|d| d.contains("no client certificate")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("someone-else")),
        "{details:?}"
    );
}

/// TLS session resumption: a client that reconnects with the session it was given resumes
/// it (an abbreviated handshake, the cost of a connection storm over TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_tls_client_resumes_its_session() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pg = Pg::start();
    let proxy = Proxy::start(
        &pg,
        &Options {
            listen_tls: true,
            ..Options::default()
        },
    )
    .await;
    let client = common::client_tls(&pg.certs);
    let connector = tokio_rustls::TlsConnector::from(client);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(&raw::SSL_REQUEST).await.unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S");
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
        kinds.push(tls.get_ref().1.handshake_kind());
        // a startup packet, and its answer: the client takes in the session tickets the
        // server sent after the handshake
        tls.write_all(&raw::startup_packet("alice")).await.unwrap();
        let mut tag = [0u8; 1];
        tls.read_exact(&mut tag).await.unwrap();
        assert_eq!(&tag, b"R", "an authentication request");
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

/// The first value of a simple query's first row.
async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    c.simple_query(sql)
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap()
}

/// Waits until `user`'s upstream sessions that are kept (reset, idle) number `n`.
async fn wait_kept(direct: &tokio_postgres::Client, user: &str, n: i64) {
    let sql = format!(
        "select count(*) from pg_stat_activity where application_name like 'phigate:{user}%' \
         and state = 'idle' and query = 'DISCARD ALL'"
    );
    for _ in 0..100 {
        if common::count(direct, &sql).await == n {
            // the reset's ReadyForQuery is read a moment later
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{user}'s upstream session was not kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_end_leaves_a_reset_upstream_session_for_the_next_client_of_the_same_login() {
    let (pg, proxy) = start(Options::default()).await;
    let direct = pg.direct().await;
    let first = proxy.alice().await;
    let pid = value(&first, "select pg_backend_pid()").await;
    first.simple_query("SET work_mem = '77MB'").await.unwrap();
    let _kept_statement = first.prepare("select 1").await.unwrap();
    drop(first); // Terminate, outside a transaction
    wait_kept(&direct, "alice", 1).await;

    // the next client of the same login gets it, reset
    let second = proxy.alice().await;
    assert_eq!(value(&second, "select pg_backend_pid()").await, pid);
    assert_eq!(value(&second, "SHOW work_mem").await, "4MB");
    let statements = "select count(*) from pg_prepared_statements";
    assert_eq!(value(&second, statements).await, "0");
    let source = |s: &str| format!("phigate_upstream_sessions_total{{source=\"{s}\"}}");
    assert_eq!(proxy.metric(&source("login")).await, 1.0);
    assert_eq!(proxy.metric(&source("reused")).await, 1.0);
    drop(second);
    wait_kept(&direct, "alice", 1).await;

    // another login never gets it
    let nurse = proxy.connect("nurse", "nurse-pw").await.unwrap();
    assert_ne!(value(&nurse, "select pg_backend_pid()").await, pid);
    drop(nurse);

    // a session left inside a transaction is not kept: the server rolls it back
    let third = proxy.alice().await;
    assert_eq!(value(&third, "select pg_backend_pid()").await, pid);
    third.simple_query("begin").await.unwrap();
    drop(third);
    wait_upstream_gone(&direct, "alice").await;

    // a kept session the server ended meanwhile is not handed out
    let fourth = proxy.alice().await;
    let pid = value(&fourth, "select pg_backend_pid()").await;
    drop(fourth);
    wait_kept(&direct, "alice", 1).await;
    direct
        .simple_query(&format!("select pg_terminate_backend({pid})"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fifth = proxy.alice().await;
    assert_ne!(value(&fifth, "select pg_backend_pid()").await, pid);
}

/// A text another role passed (and phigate keeps as passed) is screened again for the
/// role that sends it next, on both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_another_role_passed_is_still_screened_for_this_one() {
    let (_pg, proxy) = start(Options::default()).await;
    let alice = proxy.alice().await;
    let nurse = proxy.connect("nurse", "nurse-pw").await.unwrap();
    // (the nurse station may not run DDL; alice's role may run anything)
    let ddl = "drop table if exists scratch_never_made";
    for _ in 0..2 {
        alice.batch_execute(ddl).await.unwrap();
        alice.execute(ddl, &[]).await.unwrap();
    }
    let e = nurse.batch_execute(ddl).await.unwrap_err();
    assert_eq!(code(&e), "42501", "{e:?}");
    let e = nurse.execute(ddl, &[]).await.unwrap_err();
    assert_eq!(code(&e), "42501", "{e:?}");
    nurse
        .simple_query("select 1")
        .await
        .expect("the session stays usable");
}
