//! The `phigate` command line: parses the arguments and hands them to the subcommand's
//! module under `cli/`.

use std::process::ExitCode;

mod cli;

use clap::{Parser, Subcommand};

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
    Serve(cli::serve::Args),
    /// Validate the configuration and policies and print a summary.
    Check(cli::check::Args),
    /// Manage the native row-level security policies behind row policies.
    Policies(cli::policies::Args),
    /// Manage the users file.
    User(cli::user::Args),
    /// Print the SQL that creates the `phigate_encrypted` domain protected columns use.
    Schema,
    /// Work with the tamper-evident audit log.
    Audit(cli::audit::Args),
    /// Encrypt the existing plaintext of a column a table policy declares, in batches
    /// (resumable: run it again after an interruption), then convert the column to
    /// `phigate_encrypted`. With --rekey, re-encrypt an encrypted column's values under
    /// the active key (after `phigate keys rotate`).
    EncryptExisting(cli::encrypt_existing::Args),
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
    Keys(cli::keys::Args),
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => cli::serve::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Policies(args) => cli::policies::run(args),
        Command::User(args) => cli::user::run(args),
        Command::Schema => {
            print!("{}", phigate::crypto::BACKSTOP_SQL);
            Ok(())
        }
        Command::Audit(args) => cli::audit::run(args),
        Command::EncryptExisting(args) => cli::encrypt_existing::run(args),
        Command::Init(args) => cli::init::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Synth(args) => cli::synth::run(args),
        Command::Keys(args) => cli::keys::run(args),
    }
}
