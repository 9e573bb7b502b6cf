//! `phigate demo`: a private PostgreSQL holding a synthetic EHR, protected by phigate with
//! the example policies, TLS and the audit log, in one command.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use phigate::config::Config;
use phigate::server::Server;
use phigate::synth::{EXAMPLE_POLICIES, Synth};
use phigate::upstream::ServiceSession;

use super::postgres::Cluster;
use super::scaffold::{self, Settings};

/// The options of `phigate demo`.
#[derive(clap::Args)]
pub struct Args {
    /// the port phigate listens on (127.0.0.1)
    #[arg(long, default_value_t = 6432)]
    port: u16,
    /// synthetic patients to load
    #[arg(long, default_value_t = 1000)]
    patients: u64,
    /// the seed of the synthetic data
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// the workspace directory (default: a new one under the temporary directory)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// keep the workspace (cluster, keys, audit log) at exit
    #[arg(long)]
    keep: bool,
}

/// The password of every example user.
const DEMO_PASSWORD: &str = "demo";

/// The workspace; removed when dropped unless kept.
struct Workspace {
    dir: PathBuf,
    keep: bool,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port(preferred: u16) -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", preferred))
        .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
        .context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// Runs the demo until Ctrl-C (or SIGTERM).
pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("phigate-demo-{}", std::process::id())),
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} is not empty; give --dir a new directory", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let workspace = Workspace {
        dir: dir.clone(),
        keep: args.keep,
    };
    let port = free_port(args.port)?;
    if port != args.port {
        eprintln!("port {} is in use; phigate listens on {port}", args.port);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Ctrl-C and SIGTERM are caught from here on, so every way out cleans up.
    let (mut interrupt, mut terminate) = {
        let _context = runtime.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    eprintln!("starting PostgreSQL in {} ...", dir.display());
    let superuser = scaffold::random_password();
    let mut cluster = Cluster::start(&dir, free_port(0)?, &superuser)?;
    let deploy = dir.join("phigate");
    let backup_password = scaffold::random_password();
    let result = runtime.block_on(async {
        let stop = async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        };
        let demo = async {
            prepare_database(&cluster, &superuser, &deploy, &backup_password).await?;
            let config = write_deployment(&deploy, &cluster, port)?;
            serve(&args, config, &cluster, &deploy, &backup_password, started).await
        };
        tokio::select! {
            r = demo => r,
            () = stop => Ok(()),
        }
    });
    cluster.stop();
    if args.keep {
        eprintln!(
            "kept {}: restart with `{} -D {}` and `phigate serve --config {}`",
            dir.display(),
            super::postgres::bindir()
                .map(|b| b.join("postgres").display().to_string())
                .unwrap_or_else(|_| "postgres".into()),
            cluster.data.display(),
            deploy.join("phigate.toml").display()
        );
    } else {
        eprintln!("stopped; removed {}", dir.display());
    }
    drop(workspace);
    result
}

/// Creates the logins, the database and the synthetic schema, as the superuser.
async fn prepare_database(
    cluster: &Cluster,
    superuser: &str,
    deploy: &Path,
    backup_password: &str,
) -> Result<()> {
    let url = |user: &str, password: &str, db: &str| {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            cluster.port
        )
    };
    let owner_pw = scaffold::random_password();
    let service_pw = scaffold::random_password();
    let mut db =
        ServiceSession::open_url(&url("postgres", superuser, "postgres"), "phigate-demo").await?;
    db.query(&format!(
        "CREATE ROLE ehr_owner LOGIN PASSWORD '{owner_pw}'; \
         CREATE ROLE phigate_svc LOGIN PASSWORD '{service_pw}'; \
         CREATE ROLE ehr_backup LOGIN BYPASSRLS PASSWORD '{backup_password}'"
    ))
    .await?;
    db.query("CREATE DATABASE ehr OWNER ehr_owner").await?;
    let mut owner =
        ServiceSession::open_url(&url("ehr_owner", &owner_pw, "ehr"), "phigate-demo").await?;
    owner
        .query(&phigate::synth::schema_sql())
        .await
        .context("creating the synthetic schema")?;
    owner
        .query(&init_grants("phigate_svc", "ehr_backup"))
        .await
        .context("granting the service login its privileges")?;
    scaffold::write_secret(&deploy.join("secrets/upstream.pw"), &service_pw)?;
    scaffold::write_secret(&deploy.join("secrets/admin.pw"), &owner_pw)?;
    Ok(())
}

/// The privileges a service login and a backup login need on the tables of schema public.
pub fn init_grants(service: &str, backup: &str) -> String {
    format!(
        "GRANT USAGE ON SCHEMA public TO {service}, {backup};\n\
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {service};\n\
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {service};\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {backup};\n"
    )
}

/// Writes phigate's configuration, certificate, keys and the example policies.
fn write_deployment(deploy: &Path, cluster: &Cluster, port: u16) -> Result<Config> {
    let listen = format!("127.0.0.1:{port}");
    let upstream = format!("127.0.0.1:{}", cluster.port);
    let admin = format!("127.0.0.1:{}", free_port(0)?);
    let toml = scaffold::config_toml(&Settings {
        listen: &listen,
        upstream: &upstream,
        database: "ehr",
        service_user: "phigate_svc",
        admin_user: "ehr_owner",
        upstream_tls: "disable",
        native: "apply",
        admin: &admin,
        ca_file: None,
        instance: Some("demo"),
    });
    let file = deploy.join("phigate.toml");
    std::fs::write(&file, toml)?;
    scaffold::dev_certificate(
        &deploy.join("certs"),
        &["localhost".into(), "127.0.0.1".into()],
    )?;
    let policies = deploy.join("policies");
    std::fs::create_dir_all(&policies)?;
    for (name, text) in EXAMPLE_POLICIES {
        std::fs::write(policies.join(name), text)?;
    }
    let config = Config::load(&file)?;
    phigate::crypto::Keyring::generate(&config.keyring_file())?;
    Ok(config)
}

async fn serve(
    args: &Args,
    config: Config,
    cluster: &Cluster,
    deploy: &Path,
    backup_password: &str,
    started: Instant,
) -> Result<()> {
    let threads = config.threads().min(2);
    let server = Server::bind(config).await.context("starting phigate")?;
    let port = server.local_addr()?.port();
    let metrics = server
        .admin_addr()
        .map(|a| format!("http://{a}/metrics"))
        .unwrap_or_default();
    let auditor = server.auditor();
    let synth = Synth::new(args.seed, args.patients);
    let through =
        format!("postgres://ada.admin:{DEMO_PASSWORD}@127.0.0.1:{port}/ehr?sslmode=require");
    let session = async {
        eprintln!(
            "loading {} synthetic patients through phigate (encrypted on the way) ...",
            args.patients
        );
        super::synth::load(&synth, &through, |line| eprintln!("{line}")).await?;
        print!(
            "{}",
            guide(
                port,
                &metrics,
                cluster,
                deploy,
                backup_password,
                synth.clinics()
            )
        );
        println!(
            "ready in {:.1}s. Ctrl-C stops phigate and PostgreSQL{}.",
            started.elapsed().as_secs_f64(),
            if args.keep {
                ""
            } else {
                " and removes the workspace"
            }
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        std::future::pending::<()>().await;
        anyhow::Ok(())
    };
    // Closes the audit log (signing what it holds) however the demo ends.
    let _close = CloseAudit(auditor);
    tokio::select! {
        r = server.run_threaded(threads) => r.context("running phigate"),
        r = session => r,
    }
}

struct CloseAudit(Option<std::sync::Arc<phigate::audit::Auditor>>);

impl Drop for CloseAudit {
    fn drop(&mut self) {
        if let Some(a) = &self.0
            && let Err(e) = a.close()
        {
            eprintln!("closing the audit log: {e}");
        }
    }
}

fn guide(
    port: u16,
    metrics: &str,
    cluster: &Cluster,
    deploy: &Path,
    backup_password: &str,
    clinics: u64,
) -> String {
    let me = std::env::args().next().unwrap_or_else(|| "phigate".into());
    let psql = |user: &str| {
        format!(
            "psql \"host=127.0.0.1 port={port} user={user} password={DEMO_PASSWORD} dbname=ehr sslmode=require\""
        )
    };
    let audit = deploy.join("audit");
    let key = deploy.join("secrets/audit.ed25519");
    format!(
        r#"
phigate is protecting a synthetic EHR ({clinics} clinics): every PHI column is encrypted at rest,
each role sees what policies/ says, and every statement is in a signed audit log.

Try the same query as each role (password `{pw}`):
  SELECT id, clinic_id, mrn, full_name, birth_date, phone FROM patients ORDER BY id LIMIT 5;

  clinician     {clinician}
                clinic 1 only (row policy); names, dates, phones in plaintext; SSN as ***-**-1234.
                SET phigate.break_glass = 'unconscious patient'; opens every clinic for 30 minutes, audited.
  nurse_station {nurse}
                clinic 1 only; no SSN or address (null); notes redacted; logged off after 2 minutes idle.
  billing       {billing}
                every clinic, read only; SSN in full, phone masked; encounters.notes and the
                observations table refused (42501).
  researcher    {researcher}
                every clinic; MRN as a keyed pseudonym, birth year only, no names;
                SELECT * is refused (ssn is denied): name the columns. Try:
                SELECT icd10, count(*) FROM diagnoses GROUP BY icd10 ORDER BY 2 DESC;
                At most 500 rows per statement (the bulk-read guard):
                SELECT mrn FROM patients; is stopped with 54000, and recorded.
  auditor       {auditor}
                sees that rows exist: PHI columns are null or ciphertext.
  admin         {admin}
                everything, every clinic; DDL and COPY; audited like everyone.

What PostgreSQL stores (a BYPASSRLS backup login, directly, not through phigate):
  psql "host=127.0.0.1 port={pg} user=ehr_backup password={backup_password} dbname=ehr" -c 'SELECT mrn, full_name, ssn FROM patients LIMIT 3'

The audit log:
  {me} audit tail {audit}
  {me} audit search {audit} --user dr.house --table patients
  {me} audit verify {audit} --key {key}
Metrics: {metrics}
"#,
        pw = DEMO_PASSWORD,
        clinician = psql("dr.house"),
        nurse = psql("nurse.joy"),
        billing = psql("bill.pay"),
        researcher = psql("rita.research"),
        auditor = psql("audrey.audit"),
        admin = psql("ada.admin"),
        pg = cluster.port,
        audit = audit.display(),
        key = key.display(),
    )
}
