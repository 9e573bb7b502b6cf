//! The `phigate` command line.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use phigate::config::Config;
use phigate::crypto::Keyring;
use phigate::server::{ColumnStatus, LiveSchema, Server, preflight};

#[derive(Parser)]
#[command(
    name = "phigate",
    version,
    about = "Encrypting, auditing PostgreSQL proxy for PHI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// the configuration file
        #[arg(long, short, default_value = "phigate.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and policies and print a summary.
    Check {
        /// the configuration file
        #[arg(long, short, default_value = "phigate.toml")]
        config: PathBuf,
    },
    /// Manage the native row-level security policies behind row policies.
    Policies {
        #[command(subcommand)]
        command: PoliciesCommand,
    },
    /// Manage the users file.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print the SQL that creates the `phigate_encrypted` domain protected columns use.
    Schema,
    /// Work with the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Encrypt the existing plaintext of a column a table policy declares, in batches
    /// (resumable: run it again after an interruption), then convert the column to
    /// `phigate_encrypted`. With --rekey, re-encrypt an encrypted column's values under
    /// the active key (after `phigate keys rotate`).
    EncryptExisting {
        /// the table (`schema.table`, or `table` in public)
        #[arg(long)]
        table: String,
        /// a column (repeat for more); default: every protected column the table's
        /// policy declares
        #[arg(long = "column")]
        columns: Vec<String>,
        /// re-encrypt values not under the active key
        #[arg(long)]
        rekey: bool,
        /// rows per transaction
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// the configuration file
        #[arg(long, short, default_value = "phigate.toml")]
        config: PathBuf,
    },
    /// Scaffold a deployment for an existing database in a new directory: configuration,
    /// development certificate, policy templates, keyring, and the SQL a DBA runs once.
    Init(cli::init::Args),
    /// Start a private PostgreSQL holding a synthetic EHR behind phigate with the example
    /// policies, TLS and the audit log, and print how to connect as each role. Ctrl-C stops it.
    Demo(cli::demo::Args),
    /// Generate a synthetic EHR data set (never real patients): the schema, or the data as
    /// SQL or CSV, or loaded through a running phigate so it lands encrypted.
    Synth(cli::synth::Args),
    /// Manage the keyring of column-encryption master keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        /// the configuration file naming the keyring (`keys.file`)
        #[arg(long, short, default_value = "phigate.toml", global = true)]
        config: PathBuf,
        /// the keyring file (overrides the configuration)
        #[arg(long, global = true)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PoliciesCommand {
    /// Install the native PostgreSQL row-level security policies of every table with row
    /// policies (over `upstream.admin_user`, the tables' owner). `serve` checks them.
    Apply {
        /// the configuration file
        #[arg(long, short, default_value = "phigate.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify an audit directory: sequence, links, checkpoint digests and signatures, and
    /// (given the signing key) every record's MAC. Exits non-zero at the first problem.
    Verify {
        /// the audit directory
        dir: PathBuf,
        /// the instance's public key (`<signing key file>.pub`): checks checkpoints
        #[arg(long, conflicts_with = "key")]
        public_key: Option<PathBuf>,
        /// the instance's signing key file: also checks every record's MAC
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Find records: by user, role, table, column, decision, kind, time range, or a value
    /// (hashed with the instance's lookup key, so the log itself never holds it).
    Search {
        /// the audit directory
        dir: PathBuf,
        /// the user
        #[arg(long)]
        user: Option<String>,
        /// the role
        #[arg(long)]
        role: Option<String>,
        /// a protected table touched
        #[arg(long)]
        table: Option<String>,
        /// a PHI column touched
        #[arg(long)]
        column: Option<String>,
        /// allowed, denied or error
        #[arg(long)]
        decision: Option<String>,
        /// statement, statement_end, session_start, session_end, auth_failure, ...
        #[arg(long)]
        kind: Option<String>,
        /// from this time on (RFC 3339, or a prefix such as 2026-11-24)
        #[arg(long)]
        since: Option<String>,
        /// before this time
        #[arg(long)]
        until: Option<String>,
        /// statements that used this value (needs --key)
        #[arg(long, requires = "key")]
        value: Option<String>,
        /// the instance's signing key file (for --value)
        #[arg(long)]
        key: Option<PathBuf>,
        /// JSON Lines instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Print the last records, and with -f the ones appended from now on.
    Tail {
        /// the audit directory
        dir: PathBuf,
        /// how many of the last records to print first
        #[arg(short, default_value_t = 10)]
        n: usize,
        /// keep following the log
        #[arg(short, long)]
        follow: bool,
        /// JSON Lines instead of a table
        #[arg(long)]
        json: bool,
    },
}

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, v: Option<String>) -> Result<Option<T>> {
    v.map(|s| {
        serde_json::from_str(&format!("\"{s}\"")).with_context(|| format!("unknown {what} `{s}`"))
    })
    .transpose()
}

fn print_record(r: &phigate::audit::Record, json: bool) {
    use std::io::Write;
    let line = if json {
        serde_json::to_string(r).unwrap_or_default()
    } else {
        phigate::audit::table_row(r)
    };
    // A reader that goes away (`| head`) ends the command quietly.
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        std::process::exit(0);
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new keyring with one fresh 256-bit master key (mode 0600). Refuses to
    /// overwrite an existing keyring.
    Generate {
        /// succeed without a change when the keyring exists (for container start-up)
        #[arg(long)]
        if_missing: bool,
    },
    /// Add a fresh master key and make it the one new values are encrypted with. Older keys
    /// stay in the ring, so existing values stay readable.
    Rotate,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input (or prompted for on a terminal)
    /// and only its SCRAM-SHA-256 verifier is stored.
    Add {
        /// the user name
        name: String,
        /// the user's role (declared in roles.toml)
        #[arg(long)]
        role: String,
        /// an attribute for row policies (`:user.KEY`), as KEY=VALUE; repeat for more
        /// (numbers and true/false are typed, anything else is a string)
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// the policy directory holding users.toml (default: policies.dir from the config)
        #[arg(long)]
        policies: Option<PathBuf>,
        /// the configuration file naming the policy directory
        #[arg(long, short, default_value = "phigate.toml")]
        config: PathBuf,
    },
}

/// glibc's malloc serves an allocation above its mmap threshold with its own mapping, given
/// back when freed, but by default it raises that threshold to the largest block freed so
/// far: after a few large statements (a 4 MiB Parse) every later one lands in an arena that
/// keeps the memory. A fixed threshold keeps RSS flat (tests/cli.rs measures it).
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it is called once, before any thread
    // is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phigate: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: a cause whose text its context already
/// holds (`reading the schema: X` caused by `X`) is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !text.contains(&c) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&c);
        }
    }
    text
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Synth(args) => cli::synth::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Init(args) => cli::init::run(args),
        Command::Check { config } => check(config),
        Command::Policies {
            command: PoliciesCommand::Apply { config },
        } => {
            let config = Config::load(&config)?;
            let policies = phigate::policy::PolicySet::load(&config.policies_dir())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let tables: Vec<String> = policies
                .tables()
                .filter(|t| !t.policies.is_empty())
                .map(|t| t.name.to_string())
                .collect();
            if !tables.is_empty() {
                println!("{}", cutover_warning(&config, &tables));
            }
            let done =
                runtime.block_on(phigate::server::apply_native_policies(&config, &policies))?;
            if done.is_empty() {
                println!("no table has row policies; nothing to install");
            }
            for line in done {
                println!("installed {line}");
            }
            Ok(())
        }
        Command::Schema => {
            print!("{}", phigate::crypto::BACKSTOP_SQL);
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    dir,
                    public_key,
                    key,
                },
        } => {
            let keys = key
                .as_deref()
                .map(phigate::audit::AuditKeys::load)
                .transpose()?;
            let public = match (&keys, public_key) {
                (Some(k), _) => k.public(),
                (None, Some(p)) => phigate::audit::PublicKey::load(&p)?,
                (None, None) => anyhow::bail!("give --public-key FILE or --key FILE"),
            };
            match phigate::audit::verify(&dir, &public, keys.as_ref()) {
                Ok(r) => {
                    println!(
                        "ok: {} records, {} checkpoints, {} segments, last seq {}",
                        r.records, r.checkpoints, r.segments, r.last_seq
                    );
                    if r.unsigned_tail > 0 {
                        let how = if keys.is_some() {
                            "checked by their MACs"
                        } else {
                            "not covered by a checkpoint yet: give --key to check their MACs"
                        };
                        println!(
                            "  {} record(s) after the last checkpoint: {how}",
                            r.unsigned_tail
                        );
                    }
                    Ok(())
                }
                Err(p) => {
                    println!("FAILED: {p}");
                    std::process::exit(1);
                }
            }
        }
        Command::Audit {
            command:
                AuditCommand::Search {
                    dir,
                    user,
                    role,
                    table,
                    column,
                    decision,
                    kind,
                    since,
                    until,
                    value,
                    key,
                    json,
                },
        } => {
            let value_hash = match (value, key) {
                (Some(v), Some(k)) => {
                    Some(phigate::audit::AuditKeys::load(&k)?.value_hash(v.as_bytes()))
                }
                _ => None,
            };
            let filter = phigate::audit::Filter {
                user,
                role,
                table,
                column,
                decision: parse_enum("decision", decision)?,
                kind: parse_enum("kind", kind)?,
                since,
                until,
                value_hash,
            };
            for r in phigate::audit::read_all(&dir)?
                .iter()
                .filter(|r| filter.matches(r))
            {
                print_record(r, json);
            }
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::Tail {
                    dir,
                    n,
                    follow,
                    json,
                },
        } => {
            if follow {
                phigate::audit::follow(&dir, n, |r| {
                    print_record(r, json);
                    true
                })?;
            } else {
                let all = phigate::audit::read_all(&dir)?;
                for r in &all[all.len().saturating_sub(n)..] {
                    print_record(r, json);
                }
            }
            Ok(())
        }
        Command::EncryptExisting {
            table,
            columns,
            rekey,
            batch,
            config,
        } => {
            let config = Config::load(&config)?;
            let columns = match columns {
                c if c.is_empty() => phigate::migrate::declared_columns(&config, &table)?,
                c => c,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            for column in &columns {
                let summary = runtime.block_on(phigate::migrate::encrypt_existing(
                    &config,
                    &table,
                    column,
                    rekey,
                    batch,
                    |rows| eprintln!("{table}.{column}: {rows} row(s) done"),
                ))?;
                let verb = if rekey { "re-encrypted" } else { "encrypted" };
                println!("{table}.{column}: {} row(s) {verb}", summary.rows);
                if summary.swapped {
                    println!("{table}.{column} is now phigate_encrypted");
                }
            }
            Ok(())
        }
        Command::Keys {
            command,
            config,
            file,
        } => {
            let file = match file {
                Some(f) => f,
                None => Config::load(&config)?.keyring_file(),
            };
            let ring = match command {
                KeysCommand::Generate { if_missing: true } if file.exists() => {
                    Keyring::load(&file)?
                }
                KeysCommand::Generate { .. } => Keyring::generate(&file)?,
                KeysCommand::Rotate => Keyring::rotate(&file)?,
            };
            println!(
                "{}: {} key(s), active key {}",
                file.display(),
                ring.keys().count(),
                ring.active()
            );
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    role,
                    attrs,
                    policies,
                    config,
                },
        } => {
            let dir = match policies {
                Some(d) => d,
                None => Config::load(&config)?.policies_dir(),
            };
            let set = phigate::policy::PolicySet::load(&dir)?;
            if set.role(&role).is_none() {
                bail!(
                    "{}: role {role:?} is not declared; add [roles.{role}] there first",
                    dir.join("roles.toml").display()
                );
            }
            let attributes = attrs
                .iter()
                .map(|a| parse_attribute(a))
                .collect::<Result<Vec<_>>>()?;
            let password = read_password()?;
            let file = dir.join("users.toml");
            let before = std::fs::read(&file).ok();
            phigate::policy::add_user_with(&file, &name, &role, &password, &attributes)?;
            if let Err(e) = phigate::policy::PolicySet::load(&dir) {
                // leave users.toml as it was
                let _ = match before {
                    Some(b) => std::fs::write(&file, b),
                    None => std::fs::remove_file(&file),
                };
                bail!("user {name} was not added: {e}");
            }
            println!("added user {name} (role {role}) to {}", file.display());
            println!("a running phigate lets the user in after it reloads: send it SIGHUP");
            Ok(())
        }
    }
}

/// What changes for everyone else when row-level security is forced on `tables`.
fn cutover_warning(config: &Config, tables: &[String]) -> String {
    let owner = config.upstream.admin_user.as_deref().unwrap_or("the owner");
    format!(
        "enabling and forcing row-level security on {}.\n\
         From now on PostgreSQL shows their rows only to phigate's sessions (by role) and to logins with BYPASSRLS:\n\
         - {owner} and every other login without BYPASSRLS read no rows of them directly, and change none;\n\
         - pg_dump of them fails (\"query would be affected by row-level security policy\") unless it runs as a\n  \
           login with BYPASSRLS (`CREATE ROLE ehr_backup LOGIN BYPASSRLS`; phigate init's dba.sql makes one);\n\
         - encrypt-existing refuses them unless upstream.admin_user has BYPASSRLS: encrypt first, then apply.",
        tables.join(", ")
    )
}

/// `KEY=VALUE` as a user attribute: an integer, a float, true/false, or a string.
fn parse_attribute(a: &str) -> Result<(String, toml::Value)> {
    let Some((key, value)) = a.split_once('=') else {
        bail!("--attr {a:?}: write KEY=VALUE");
    };
    let typed = if let Ok(i) = value.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(b) = value.parse::<bool>() {
        toml::Value::Boolean(b)
    } else if let Some(f) = value.parse::<f64>().ok().filter(|f| f.is_finite()) {
        toml::Value::Float(f)
    } else {
        toml::Value::String(value.to_owned())
    };
    Ok((key.to_owned(), typed))
}

fn read_password() -> Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn check(path: PathBuf) -> Result<()> {
    let config = Config::load(&path)?;
    let policies = preflight(&config)?;
    let (users, roles) = policies.counts();
    let l = &config.listen;
    println!("configuration {} is valid", path.display());
    println!(
        "  listen    {} (TLS {}, require_tls {}, max message {} bytes)",
        l.address,
        if l.tls_cert.is_some() { "on" } else { "off" },
        l.require_tls,
        l.max_message_size
    );
    println!(
        "  upstream  {} database {} as {} (tls {:?})",
        config.upstream.address,
        config.upstream.database,
        config.upstream.user,
        config.upstream.tls
    );
    println!(
        "  policies  {}: {users} users, {roles} roles",
        config.policies_dir().display()
    );
    println!(
        "  session   idle_timeout {}, max_lifetime {}",
        humantime::format_duration(config.session.idle_timeout),
        humantime::format_duration(config.session.max_lifetime)
    );
    let mut problems = 0;
    if policies.tables().next().is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let schema = runtime.block_on(LiveSchema::read(&config))?;
        for t in policies.tables() {
            println!("  table     {} ({})", t.name, t.file.display());
            for (name, c) in &t.columns {
                let verdict = match schema.column(&t.name, name) {
                    ColumnStatus::Backstopped => "ok (phigate_encrypted)".to_owned(),
                    ColumnStatus::LacksDomain if config.policies.allow_plain_bytea => {
                        "WARNING: plain bytea, lacks the phigate_encrypted domain (allowed by policies.allow_plain_bytea)".to_owned()
                    }
                    ColumnStatus::LacksDomain => {
                        problems += 1;
                        "ERROR: plain bytea, lacks the phigate_encrypted domain (see `phigate schema`; or set policies.allow_plain_bytea)".to_owned()
                    }
                    ColumnStatus::WrongType(ty) => {
                        problems += 1;
                        format!("ERROR: stored as {ty}; a protected column must be bytea (phigate_encrypted)")
                    }
                    ColumnStatus::Missing => {
                        problems += 1;
                        "ERROR: no such column in the database".to_owned()
                    }
                };
                println!(
                    "    {name}: {} {}{}: {verdict}",
                    c.logical_type.name(),
                    c.mode,
                    c.domain
                        .as_ref()
                        .map(|d| format!(" (domain {d})"))
                        .unwrap_or_default()
                );
            }
        }
    }
    for line in policies.access_report() {
        println!("  {line}");
    }
    let keyring = config.keyring_file();
    match Keyring::load(&keyring) {
        Ok(ring) => println!(
            "  keys      {}: {} key(s), active key {}",
            keyring.display(),
            ring.keys().count(),
            ring.active()
        ),
        Err(phigate::crypto::KeyringError::Io { cause, .. })
            if cause.kind() == std::io::ErrorKind::NotFound =>
        {
            println!(
                "  keys      {}: none yet (`phigate keys generate`)",
                keyring.display()
            )
        }
        Err(e) => return Err(e.into()),
    }
    match config.admin.address {
        Some(a) => println!("  admin     http://{a}/metrics"),
        None => println!("  admin     off"),
    }
    if problems > 0 {
        bail!("{problems} protected column(s) do not match the database schema");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(phigate::server::check(&config))
        .context("serve would refuse to start")?;
    println!("every check serve runs before it listens passed");
    Ok(())
}

fn serve(path: PathBuf) -> Result<()> {
    let config = Config::load(&path)?;
    // This thread accepts connections and serves the admin endpoint; sessions run on
    // `listen.threads` threads of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let threads = config.threads();
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        tracing::info!(address = %server.local_addr()?, admin = ?server.admin_addr(), threads, "phigate listening");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloader = server.reloader();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if let Err(e) = reloader.reload().await {
                    tracing::error!(error = %e, "policy reload refused; the policies in force stay");
                }
            }
        });
        let auditor = server.auditor();
        tokio::select! {
            r = server.run_threaded(threads) => r.context("starting session threads")?,
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
            _ = term.recv() => tracing::info!("terminated; shutting down"),
        }
        if let Some(a) = auditor {
            // Sign what the log holds, so verifiers need no secret for any of it.
            a.close().context("closing the audit log")?;
        }
        Ok(())
    })
}
