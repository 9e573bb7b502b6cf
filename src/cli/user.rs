//! `phigate user add`: a user in users.toml, with only the SCRAM verifier of the password
//! (or the name its client certificate carries).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use phigate::config::Config;
use phigate::policy::{Login, PolicySet};

/// Manage the users file.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: UserCommand,
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
        /// how the user logs in: password, certificate (a client certificate naming them,
        /// no password), certificate+password, or delegated (never: an end user a
        /// delegating service names)
        #[arg(long, default_value = "password")]
        auth: String,
        /// the name the user's client certificate carries (subject CN, or a DNS or email
        /// SAN); default: the user name
        #[arg(long)]
        certificate_name: Option<String>,
        /// the policy directory holding users.toml (default: policies.dir from the config)
        #[arg(long)]
        policies: Option<PathBuf>,
        /// the configuration file naming the policy directory
        #[arg(long, short, default_value = "phigate.toml")]
        config: PathBuf,
    },
}

/// Adds the user; users.toml is left as it was when the result does not load.
pub fn run(args: Args) -> Result<()> {
    let UserCommand::Add {
        name,
        role,
        attrs,
        auth,
        certificate_name,
        policies,
        config,
    } = args.command;
    let dir = match policies {
        Some(d) => d,
        None => Config::load(&config)?.policies_dir(),
    };
    let set = PolicySet::load(&dir)?;
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
    let password = match auth.as_str() {
        "certificate" | "delegated" => None,
        "password" | "certificate+password" => Some(read_password()?),
        other => {
            bail!(
                "unknown --auth {other:?}: use password, certificate, certificate+password or delegated"
            )
        }
    };
    let certificate_name = certificate_name.unwrap_or_else(|| name.clone());
    let login = match (auth.as_str(), password.as_deref()) {
        ("delegated", _) => Login::Delegated,
        ("password", Some(p)) => Login::Password(p),
        (_, password) => Login::Certificate {
            certificate_name: &certificate_name,
            password,
        },
    };
    let file = dir.join("users.toml");
    let before = std::fs::read(&file).ok();
    phigate::policy::add_user_with(&file, &name, &role, login, &attributes)?;
    if let Err(e) = PolicySet::load(&dir) {
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
