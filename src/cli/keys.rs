//! `phigate keys generate | rotate | wrap`: the keyring of column-encryption master keys,
//! held in the file or wrapped by a key in a PKCS#11 token (`[keys.pkcs11]`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use phigate::config::Config;
use phigate::crypto::{KeyProvider, Keyring, Token};

/// Manage the keyring of column-encryption master keys.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeysCommand,
    /// the configuration file naming the keyring (`keys.file`) and the token that wraps it
    /// (`[keys.pkcs11]`)
    #[arg(long, short, default_value = "phigate.toml", global = true)]
    config: PathBuf,
    /// the keyring file (overrides the configuration)
    #[arg(long, global = true)]
    file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new keyring with one fresh 256-bit master key (mode 0600). Refuses to
    /// overwrite an existing keyring. With `[keys.pkcs11]`, the key is wrapped by the
    /// token's key-encryption key, which is generated in the token if it is missing.
    Generate {
        /// succeed without a change when the keyring exists (for container start-up)
        #[arg(long)]
        if_missing: bool,
    },
    /// Add a fresh master key and make it the one new values are encrypted with. Older keys
    /// stay in the ring, so existing values stay readable.
    Rotate,
    /// Wrap every key of a keyring that holds its keys with the token of `[keys.pkcs11]`
    /// (generating its key-encryption key if missing): afterwards the file alone decrypts
    /// nothing.
    Wrap,
}

/// Runs one keys subcommand and prints the keyring's state.
pub fn run(args: Args) -> Result<()> {
    let (file, token) = match (args.file, Config::load(&args.config)) {
        (Some(f), Ok(config)) => (f, config.key_token()),
        (Some(f), Err(_)) => (f, None),
        (None, config) => {
            let config = config?;
            (config.keyring_file(), config.key_token())
        }
    };
    let create = matches!(
        args.command,
        KeysCommand::Generate { .. } | KeysCommand::Wrap
    );
    let token = match &token {
        Some(config) => {
            let (token, created) = Token::open(config, create)?;
            if created {
                println!(
                    "{}: key-encryption key generated in the token",
                    token.name()
                );
            }
            Some(token)
        }
        None => None,
    };
    let provider = token.as_ref().map(|t| t as &dyn KeyProvider);
    let ring = match (args.command, provider) {
        (KeysCommand::Generate { if_missing: true }, p) if file.exists() => {
            Keyring::load_with(&file, p)?
        }
        (KeysCommand::Generate { .. }, p) => Keyring::generate_with(&file, p)?,
        (KeysCommand::Rotate, p) => Keyring::rotate_with(&file, p)?,
        (KeysCommand::Wrap, Some(p)) => Keyring::wrap(&file, p)?,
        (KeysCommand::Wrap, None) => {
            anyhow::bail!("`keys wrap` needs a token: configure [keys.pkcs11] in phigate.toml")
        }
    };
    let wrapped = match provider {
        Some(p) => format!(", wrapped by {}", p.name()),
        None => String::new(),
    };
    println!(
        "{}: {} key(s), active key {}{wrapped}",
        file.display(),
        ring.keys().count(),
        ring.active()
    );
    Ok(())
}
