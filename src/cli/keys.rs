//! `phigate keys generate | rotate`: the keyring of column-encryption master keys.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use phigate::config::Config;
use phigate::crypto::Keyring;

/// Manage the keyring of column-encryption master keys.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
    /// the configuration file naming the keyring (`keys.file`)
    #[arg(long, short, default_value = "phigate.toml", global = true)]
    config: PathBuf,
    /// the keyring file (overrides the configuration)
    #[arg(long, global = true)]
    file: Option<PathBuf>,
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

/// Runs one keys subcommand and prints the keyring's state.
pub fn run(args: Args) -> Result<()> {
    let file = match args.file {
        Some(f) => f,
        None => Config::load(&args.config)?.keyring_file(),
    };
    let ring = match args.command {
        KeysCommand::Generate { if_missing: true } if file.exists() => Keyring::load(&file)?,
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
