//! Test harness: a throwaway PostgreSQL 15 per test, and phigate in front of it.
//!
//! Each [`Pg`] runs `initdb` and `postgres` in its own temporary directory on a free port,
//! as the `postgres` user when the tests run as root, with a parent-death signal so that a
//! crashed test leaves no server behind. Dropping it stops the server and removes the
//! directory.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod raw;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The password of every upstream login in the test cluster.
pub const UPSTREAM_PASSWORD: &str = "svc-password";

/// PostgreSQL's server binaries.
fn bindir() -> PathBuf {
    if let Ok(d) = std::env::var("PG_BINDIR") {
        return d.into();
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if d.join("initdb").exists() {
            return d;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL server binaries (initdb) not found; set PG_BINDIR")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A command run as the postgres user when we are root, dying with its parent.
fn pg_command(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    if is_root() {
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
    }
    c.arg("--pdeathsig=KILL").arg(program);
    c
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TLS material made for one test: a CA and a certificate for localhost/127.0.0.1.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let certs = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&certs.ca, ca.pem()).unwrap();
    std::fs::write(&certs.cert, cert.pem()).unwrap();
    std::fs::write(&certs.key, key.serialize_pem()).unwrap();
    certs
}

/// A running PostgreSQL server.
pub struct Pg {
    pub port: u16,
    pub dir: TempDir,
    pub certs: Certs,
    child: Option<Child>,
}

impl Pg {
    /// initdb + start, with logins for each upstream auth method:
    /// `svc_scram` (SCRAM), `svc_md5` (md5), `svc_trust` (trust), `svc_tls` (SCRAM, TLS only),
    /// and a database `ehr` whose public schema they may all use.
    pub fn start() -> Pg {
        let dir = tempfile::Builder::new()
            .prefix("phigate-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let certs = make_certs(dir.path());
        if is_root() {
            chown_postgres(dir.path());
        }
        let bin = bindir();
        let st = pg_command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-N",
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "initdb failed");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all svc_trust 127.0.0.1/32 trust\n\
             host all svc_md5 127.0.0.1/32 md5\n\
             hostnossl all svc_tls 127.0.0.1/32 reject\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        let key = dir.path().join("pg.key");
        std::fs::copy(&certs.key, &key).unwrap();
        std::fs::copy(&certs.cert, dir.path().join("pg.crt")).unwrap();
        set_mode(&key, 0o600);
        if is_root() {
            chown_postgres(dir.path());
        }
        for attempt in 0..5 {
            let port = free_port();
            let mut child = pg_command(&bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.path().display()))
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "ssl=on",
                ])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    dir.path().join("pg.crt").display()
                ))
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("postgres.log")).unwrap())
                .spawn()
                .unwrap();
            if wait_ready(port, &mut child) {
                let pg = Pg {
                    port,
                    dir,
                    certs,
                    child: Some(child),
                };
                pg.setup();
                return pg;
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("postgres did not start on port {port} (attempt {attempt}); retrying");
        }
        panic!(
            "postgres did not start: {}",
            std::fs::read_to_string(dir.path().join("postgres.log")).unwrap_or_default()
        );
    }

    fn psql(&self, db: &str, sql: &str) {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn setup(&self) {
        let pw = UPSTREAM_PASSWORD;
        self.psql(
            "postgres",
            &format!(
                "CREATE ROLE svc_scram LOGIN PASSWORD '{pw}'; CREATE ROLE svc_tls LOGIN PASSWORD '{pw}'; \
                 CREATE ROLE svc_trust LOGIN; SET password_encryption = 'md5'; \
                 CREATE ROLE svc_md5 LOGIN PASSWORD '{pw}';"
            ),
        );
        self.psql("postgres", "CREATE DATABASE ehr");
        self.psql("ehr", "GRANT ALL ON SCHEMA public TO PUBLIC");
    }

    /// host:port
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A superuser connection straight to the server (not through phigate).
    pub async fn direct(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=postgres dbname=ehr", self.port),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        client
    }

    /// Stops the server now (fast shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_ready(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let ok = Command::new("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn chown_postgres(path: &Path) {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// How to set up phigate for a test.
#[derive(Clone)]
pub struct Options {
    pub upstream_user: &'static str,
    pub upstream_tls: &'static str,
    pub listen_tls: bool,
    pub require_tls: bool,
    /// extra lines for phigate.toml, appended after the generated sections
    pub session: &'static str,
    pub listen_extra: &'static str,
    pub roles: &'static str,
    /// table policy files (name, contents); a keyring is generated when there are any
    pub tables: &'static [(&'static str, &'static str)],
    /// lines for the [audit] section
    pub audit: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            upstream_user: "svc_scram",
            upstream_tls: "disable",
            listen_tls: false,
            require_tls: false,
            session: "",
            listen_extra: "",
            // alice may run anything (DDL, DO blocks): the protocol tests need it
            roles: "[roles.clinician]\nstatements = [\"all\"]\nbypass_row_policies = true\n\
                    [roles.nurse_station]\nidle_timeout = \"1s\"\n",
            tables: &[],
            audit: "",
        }
    }
}

/// Test users and their passwords.
pub const USERS: &[(&str, &str, &str)] = &[
    ("alice", "clinician", "alice-pw"),
    ("nurse", "nurse_station", "nurse-pw"),
];

/// A phigate configuration directory: phigate.toml, policies/, TLS material.
pub struct Setup {
    pub dir: TempDir,
    pub config: PathBuf,
}

impl Setup {
    pub fn new(pg: &Pg, opts: &Options) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("phigate-cfg-")
            .tempdir()
            .unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("roles.toml"), opts.roles).unwrap();
        for (user, role, pw) in USERS {
            phigate::policy::add_user(&policies.join("users.toml"), user, role, pw).unwrap();
        }
        for (file, contents) in opts.tables {
            std::fs::write(policies.join(file), contents).unwrap();
        }
        if !opts.tables.is_empty() {
            phigate::crypto::Keyring::generate(&dir.path().join("secrets/phigate.keys")).unwrap();
        }
        std::fs::write(
            dir.path().join("upstream.pw"),
            format!("{UPSTREAM_PASSWORD}\n"),
        )
        .unwrap();
        let tls = if opts.listen_tls {
            format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                pg.certs.cert.display(),
                pg.certs.key.display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "[listen]\naddress = \"127.0.0.1:0\"\nauth_failure_delay = \"100ms\"\n{tls}require_tls = {}\n{}\n\
             [upstream]\naddress = \"{}\"\ndatabase = \"ehr\"\nuser = \"{}\"\npassword_file = \"upstream.pw\"\n\
             tls = \"{}\"\nca_file = \"{}\"\nserver_name = \"localhost\"\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\
             [session]\n{}\n[audit]\n{}\n",
            opts.require_tls,
            opts.listen_extra,
            pg.address(),
            opts.upstream_user,
            opts.upstream_tls,
            pg.certs.ca.display(),
            opts.session,
            opts.audit,
        );
        let path = dir.path().join("phigate.toml");
        std::fs::write(&path, config).unwrap();
        Setup { dir, config: path }
    }
}

impl Setup {
    /// Adds `line` to the `[upstream]` section of phigate.toml.
    pub fn upstream_line(&self, line: &str) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(
            &self.config,
            config.replacen("[upstream]\n", &format!("[upstream]\n{line}\n"), 1),
        )
        .unwrap();
    }

    /// Gives `user` (already in users.toml) the attributes in `inline` (`{ clinic_id = 3 }`).
    pub fn attributes(&self, user: &str, inline: &str) {
        let users = self.dir.path().join("policies/users.toml");
        let text = std::fs::read_to_string(&users).unwrap();
        let header = format!("[users.{user}]\n");
        assert!(text.contains(&header), "{user} is not in users.toml");
        std::fs::write(
            &users,
            text.replace(&header, &format!("{header}attributes = {inline}\n")),
        )
        .unwrap();
    }
}

/// phigate running in this process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub setup: Setup,
    /// reloads the policies, as SIGHUP does
    pub reloader: phigate::server::Reloader,
    /// the server's audit log
    pub auditor: Option<std::sync::Arc<phigate::audit::Auditor>>,
    task: AbortOnDrop,
}

/// Stops the server task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Proxy {
    pub async fn start(pg: &Pg, opts: &Options) -> Proxy {
        Self::with_setup(Setup::new(pg, opts)).await
    }

    /// phigate on an existing configuration directory.
    pub async fn with_setup(setup: Setup) -> Proxy {
        let config = phigate::config::Config::load(&setup.config).unwrap();
        let server = phigate::server::Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let admin = server.admin_addr().unwrap();
        let reloader = server.reloader();
        let auditor = server.auditor();
        let task = AbortOnDrop(tokio::spawn(server.run()));
        Proxy {
            addr,
            admin,
            setup,
            reloader,
            auditor,
            task,
        }
    }

    /// Stops the server (as a crash would: no clean shutdown) and returns its directory,
    /// once its audit log is closed (a process that crashed holds nothing open; here
    /// the log goes once the last session task has let go of it).
    pub async fn crash(self) -> Setup {
        let Proxy {
            setup,
            auditor,
            task,
            reloader,
            ..
        } = self;
        let log = auditor.as_ref().map(std::sync::Arc::downgrade);
        drop((task, auditor, reloader));
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..200 {
            if log.as_ref().is_none_or(|l| l.strong_count() == 0) {
                return setup;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the crashed server's audit log is still open after 10 s");
    }

    /// A libpq-style connection string for `user` through phigate.
    pub fn conninfo(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=ehr",
            self.addr.port()
        )
    }

    /// A tokio-postgres client through phigate without TLS.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conninfo(user, password), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// alice, the default test user.
    pub async fn alice(&self) -> tokio_postgres::Client {
        self.connect("alice", "alice-pw").await.unwrap()
    }

    /// GET a path on the admin endpoint: (status line, body).
    pub async fn admin_get(&self, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    /// The value of a metric line (without labels or with the exact label set given).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }
}

/// A TLS client configuration trusting the test CA, limited to `versions`.
pub fn client_tls(certs: &Certs) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&certs.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// Both a server and phigate in front of it.
pub async fn start(opts: Options) -> (Pg, Proxy) {
    let pg = Pg::start();
    let proxy = Proxy::start(&pg, &opts).await;
    (pg, proxy)
}

/// The single bigint a query such as `select count(*) ...` returns.
pub async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits up to 5 s for every upstream session of `user` to end (phigate's sessions carry
/// `application_name = phigate:<user>...` upstream); panics if one outlives that.
pub async fn wait_upstream_gone(direct: &tokio_postgres::Client, user: &str) {
    let sql = format!(
        "select count(*) from pg_stat_activity where application_name like 'phigate:{user}%'"
    );
    for _ in 0..100 {
        if count(direct, &sql).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("an upstream session of {user} outlived its client");
}

/// The SQLSTATE of a tokio-postgres error.
pub fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_else(|| format!("not a db error: {e}"))
}

/// The audit log in `dir` once `done` holds for its records (waiting up to 10 s): a
/// record reaches the segments a few milliseconds after its statement (staged until the
/// syncer's next tick).
pub async fn audit_records(
    dir: &Path,
    done: impl Fn(&[phigate::audit::Record]) -> bool,
) -> Vec<phigate::audit::Record> {
    for _ in 0..200 {
        let all = phigate::audit::read_all(dir).unwrap();
        if done(&all) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the awaited audit records never reached the log");
}

/// Runs `phigate audit <command> <dir> <args...>`, which must succeed, and returns what it
/// printed.
pub fn audit_cli(command: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_phigate"))
        .args(["audit", command])
        .arg(dir)
        .args(args)
        .output()
        .expect("phigate runs");
    assert!(
        out.status.success(),
        "phigate audit {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}
