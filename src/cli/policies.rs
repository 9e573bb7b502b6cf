//! `phigate policies apply`: install the native row-level security policies behind the
//! row policies, after saying what the cutover changes for everyone else.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use phigate::config::Config;

/// Manage the native row-level security policies behind row policies.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PoliciesCommand,
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

/// Runs `policies apply`.
pub fn run(args: Args) -> Result<()> {
    let PoliciesCommand::Apply { config } = args.command;
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
    let key = phigate::policy::session_key::SessionKey::load_or_create(&config.session_key_file())?;
    let done = runtime.block_on(phigate::upstream::apply(&config, &policies, &key))?;
    if done.is_empty() {
        println!("no table has row policies; phigate's functions installed");
    }
    for line in done {
        println!("installed {line}");
    }
    Ok(())
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
