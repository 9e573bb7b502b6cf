//! `phigate check`: validate the configuration, policies, schema and keyring, print a
//! summary, then run every check `serve` runs before it listens.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use phigate::config::Config;
use phigate::policy::PolicySet;
use phigate::server::preflight;
use phigate::upstream::{ColumnStatus, LiveSchema};

/// Validate the configuration and policies and print a summary.
#[derive(clap::Args)]
pub struct Args {
    /// the configuration file
    #[arg(long, short, default_value = "phigate.toml")]
    config: PathBuf,
}

/// Prints the summary; fails on the first problem `serve` would refuse to start with.
pub fn run(args: Args) -> Result<()> {
    check(args.config)
}

fn check(path: PathBuf) -> Result<()> {
    let config = Config::load(&path)?;
    let policies = preflight(&config)?;
    print_summary(&path, &config, &policies);
    let problems = if policies.tables().next().is_some() {
        check_tables(&config, &policies)?
    } else {
        0
    };
    for line in policies.access_report() {
        println!("  {line}");
    }
    print_keyring(&config)?;
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

fn print_summary(path: &std::path::Path, config: &Config, policies: &PolicySet) {
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
}

/// Prints each protected column against the live schema; returns how many do not match.
fn check_tables(config: &Config, policies: &PolicySet) -> Result<usize> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let schema = runtime.block_on(LiveSchema::read(config))?;
    let mut problems = 0;
    for t in policies.tables() {
        println!("  table     {} ({})", t.name, t.file.display());
        for (name, c) in &t.columns {
            let (verdict, ok) = verdict(config, schema.column(&t.name, name));
            problems += usize::from(!ok);
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
    Ok(problems)
}

/// What `check` says of a protected column, and whether it is acceptable.
fn verdict(config: &Config, status: ColumnStatus) -> (String, bool) {
    match status {
        ColumnStatus::Backstopped => ("ok (phigate_encrypted)".to_owned(), true),
        ColumnStatus::LacksDomain if config.policies.allow_plain_bytea => (
            "WARNING: plain bytea, lacks the phigate_encrypted domain (allowed by policies.allow_plain_bytea)".to_owned(),
            true,
        ),
        ColumnStatus::LacksDomain => (
            "ERROR: plain bytea, lacks the phigate_encrypted domain (see `phigate schema`; or set policies.allow_plain_bytea)".to_owned(),
            false,
        ),
        ColumnStatus::WrongType(ty) => (
            format!("ERROR: stored as {ty}; a protected column must be bytea (phigate_encrypted)"),
            false,
        ),
        ColumnStatus::Missing => ("ERROR: no such column in the database".to_owned(), false),
    }
}

fn print_keyring(config: &Config) -> Result<()> {
    let keyring = config.keyring_file();
    match config.keyring() {
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
    Ok(())
}
