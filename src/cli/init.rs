//! `phigate init`: scaffolds a deployment directory for an existing database, outside the
//! source tree: configuration, development certificate, empty policies with a template,
//! keyring, and the SQL a DBA runs once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use phigate::policy::quote_ident as ident;
use phigate::upstream::url;

use super::scaffold::{self, Settings};

/// The options of `phigate init`.
#[derive(clap::Args)]
pub struct Args {
    /// the database: postgres://[OWNER[:PASSWORD]@]HOST:PORT/DB[?sslmode=verify-full|require|disable&sslrootcert=CA.pem]
    #[arg(long)]
    upstream: String,
    /// the directory to create (keep it outside any source tree)
    #[arg(long)]
    dir: PathBuf,
    /// the login that owns the protected tables (default: the user in --upstream)
    #[arg(long)]
    owner: Option<String>,
    /// phigate's service login, created by dba.sql
    #[arg(long, default_value = "phigate_svc")]
    service_user: String,
    /// the login with BYPASSRLS for backups, created by dba.sql (default: DB_backup)
    #[arg(long)]
    backup_user: Option<String>,
    /// the address phigate listens on
    #[arg(long, default_value = "0.0.0.0:6432")]
    listen: String,
    /// the address of the metrics and health endpoint
    #[arg(long, default_value = "127.0.0.1:9187")]
    admin_listen: String,
}

const ROLES_TEMPLATE: &str = r#"# Every role a user names must be declared here; see the README, "Role policies", and the
# example set in the phigate repository (policies/). For example:
#
# [roles.clinician]
# idle_timeout = "15m"               # automatic logoff
# break_glass = ["clinician"]        # who may declare an emergency
#
# [roles.billing]
# statements = ["read", "transaction"]          # the statement firewall
# tables = ["public.patients"]                  # the protected tables it may name
# max_rows = 500                                # the bulk-read guard: rows per statement
# max_rows_per_hour = 5000                      # ... and per user per hour
#
# [roles.admin]
# bypass_row_policies = true
"#;

const USERS_TEMPLATE: &str = r#"# One entry per person or service, never a shared login. Add users with
#   phigate user add NAME --role ROLE [--attr KEY=VALUE] --config ../phigate.toml
# which stores a SCRAM-SHA-256 verifier, never the password.
"#;

const TABLE_TEMPLATE: &str = r#"# A table policy: copy this file to <table>.toml (any name ending in .toml other than
# users.toml and roles.toml) and edit it. Format: the README, "Policy files".

[table]
name = "public.patients"              # schema.table

# One section per protected column. In the database it becomes phigate_encrypted
# (`phigate encrypt-existing` converts existing plaintext).
[columns.ssn]
type = "text"                         # text varchar bpchar int2 int4 int8 numeric bool date
                                      # timestamp timestamptz uuid json jsonb bytea
encrypt = "deterministic"             # equality lookups work; or "randomized"
domain = "ssn"                        # deterministic columns sharing a domain join on ciphertext
read = { clinician = "mask:last4", billing = "plaintext" }
# outcomes: plaintext, mask:last4, mask:year, mask:redact, mask:hash, null, ciphertext, deny
# (a role not listed reads deny)

# Row policies (optional): which rows each role reads and writes. Enforced by phigate's
# rewrite and by PostgreSQL's row-level security (`phigate policies apply`).
[[policy]]
name = "own_clinic"
roles = ["clinician"]
commands = ["all"]                    # select, insert, update, delete, all
using = "clinic_id = :user.clinic_id" # :user.NAME is the session user's attribute
check = "clinic_id = :user.clinic_id"
"#;

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL the DBA runs once: the service and backup logins with their privileges, and the
/// `phigate_encrypted` domain owned by the tables' owner.
fn dba_sql(
    db: &str,
    owner: &str,
    service: (&str, &str),
    backup: (&str, &str),
    psql: &str,
) -> String {
    let (db, owner_i) = (ident(db), ident(owner));
    let (svc, bak) = (ident(service.0), ident(backup.0));
    format!(
        "-- Written by `phigate init`. Run it once as a superuser (it holds passwords: keep it private):\n\
         --   {psql}\n\
         \\set ON_ERROR_STOP on\n\n\
         -- phigate's service login: neither the tables' owner, nor superuser, nor BYPASSRLS\n\
         CREATE ROLE {svc} LOGIN PASSWORD {svc_pw};\n\
         GRANT CONNECT ON DATABASE {db} TO {svc};\n\
         GRANT USAGE ON SCHEMA public TO {svc};\n\
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {svc};\n\
         GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {svc};\n\
         ALTER DEFAULT PRIVILEGES FOR ROLE {owner_i} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {svc};\n\
         ALTER DEFAULT PRIVILEGES FOR ROLE {owner_i} IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {svc};\n\n\
         -- Backups: once `phigate policies apply` forces row-level security, only a login with\n\
         -- BYPASSRLS can pg_dump the protected tables (it reads ciphertext, never plaintext).\n\
         CREATE ROLE {bak} LOGIN BYPASSRLS PASSWORD {bak_pw};\n\
         GRANT CONNECT ON DATABASE {db} TO {bak};\n\
         GRANT USAGE ON SCHEMA public TO {bak};\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {bak};\n\
         GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {bak};\n\
         ALTER DEFAULT PRIVILEGES FOR ROLE {owner_i} IN SCHEMA public GRANT SELECT ON TABLES TO {bak};\n\n\
         -- The domain protected columns are declared with, owned by the tables' owner.\n\
         SET ROLE {owner_i};\n{backstop}RESET ROLE;\n",
        svc_pw = literal(service.1),
        bak_pw = literal(backup.1),
        backstop = phigate::crypto::BACKSTOP_SQL,
    )
}

/// Runs `phigate init`.
pub fn run(args: Args) -> Result<()> {
    let u = url::parse(&args.upstream)?;
    let Some(owner) = args
        .owner
        .clone()
        .or_else(|| Some(u.user.clone()).filter(|o| !o.is_empty()))
    else {
        bail!(
            "give --owner NAME (the login that owns the tables), or put it in the URL: postgres://OWNER@HOST:PORT/DB"
        );
    };
    let dir = &args.dir;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; give --dir a new directory",
            dir.display()
        );
    }
    let backup_user = args
        .backup_user
        .clone()
        .unwrap_or_else(|| format!("{}_backup", u.database));
    let host = if u.host.contains(':') {
        format!("[{}]", u.host)
    } else {
        u.host.clone()
    };
    let upstream = format!("{host}:{}", u.port);
    let ca = u
        .sslrootcert
        .as_deref()
        .map(|c| std::path::absolute(c).map_or_else(|_| c.to_owned(), |p| p.display().to_string()));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let settings = Settings {
        listen: &args.listen,
        upstream: &upstream,
        database: &u.database,
        service_user: &args.service_user,
        admin_user: &owner,
        upstream_tls: u.sslmode.name(),
        native: "verify",
        admin: &args.admin_listen,
        ca_file: ca.as_deref(),
        instance: None,
    };
    write_configuration(dir, &settings)?;
    let (service_pw, backup_pw) = write_secrets(dir, u.password.as_deref())?;
    let owner_pw_known = u.password.is_some();
    let psql = format!(
        "psql \"host={} port={} dbname={} user=postgres\" -f {}",
        u.host,
        u.port,
        u.database,
        dir.join("dba.sql").display()
    );
    scaffold::write_secret(
        &dir.join("dba.sql"),
        &dba_sql(
            &u.database,
            &owner,
            (&args.service_user, &service_pw),
            (&backup_user, &backup_pw),
            &psql,
        ),
    )?;
    print!(
        "{}",
        summary(
            dir,
            &u.database,
            &upstream,
            &owner,
            &args.service_user,
            &backup_user,
            &psql,
            owner_pw_known
        )
    );
    Ok(())
}

/// secrets/: the keyring, new passwords for the service and backup logins (returned),
/// and the owner's password when the URL holds it.
fn write_secrets(dir: &Path, owner_pw: Option<&str>) -> Result<(String, String)> {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    phigate::crypto::Keyring::generate(&secrets.join("phigate.keys"))?;
    let service_pw = scaffold::random_password();
    let backup_pw = scaffold::random_password();
    scaffold::write_secret(&secrets.join("upstream.pw"), &service_pw)?;
    scaffold::write_secret(&secrets.join("backup.pw"), &backup_pw)?;
    if let Some(p) = owner_pw {
        scaffold::write_secret(&secrets.join("admin.pw"), p)?;
    }
    Ok((service_pw, backup_pw))
}

/// phigate.toml, the development certificate and the policy templates.
fn write_configuration(dir: &Path, settings: &Settings<'_>) -> Result<()> {
    std::fs::write(dir.join("phigate.toml"), scaffold::config_toml(settings))?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(h.trim().to_owned());
    }
    scaffold::dev_certificate(&dir.join("certs"), &names)?;
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("roles.toml"), ROLES_TEMPLATE)?;
    std::fs::write(policies.join("users.toml"), USERS_TEMPLATE)?;
    std::fs::write(policies.join("table.toml.example"), TABLE_TEMPLATE)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn summary(
    dir: &Path,
    db: &str,
    upstream: &str,
    owner: &str,
    service: &str,
    backup: &str,
    psql: &str,
    owner_pw_known: bool,
) -> String {
    let d = dir.display();
    let config = format!("--config {d}/phigate.toml");
    let owner_step = if owner_pw_known {
        String::new()
    } else {
        format!("   and write {owner}'s password to {d}/secrets/admin.pw (mode 0600)\n")
    };
    format!(
        "created {d}:\n\
         \x20 phigate.toml        the configuration: {upstream}/{db} as {service}; {owner} (the tables' owner) only for\n\
         \x20                     policies apply and encrypt-existing\n\
         \x20 certs/              a self-signed development certificate; give clients one they trust in production\n\
         \x20 policies/           roles.toml, users.toml and table.toml.example (copy it once per protected table)\n\
         \x20 secrets/            phigate.keys (the master key: back it up apart from the database, or the data is\n\
         \x20                     lost with it), upstream.pw, backup.pw{admin}\n\
         \x20 dba.sql             the logins {service} and {backup} (BYPASSRLS, for pg_dump) and the phigate_encrypted domain\n\n\
         next (the README's checklist):\n\
         \x20 1. {psql}\n{owner_step}\
         \x20 2. declare roles in {d}/policies/roles.toml and each protected table in {d}/policies/<table>.toml\n\
         \x20 3. phigate encrypt-existing --table public.<table> {config}\n\
         \x20 4. phigate policies apply {config}        (tables with row policies)\n\
         \x20 5. phigate user add NAME --role ROLE {config}\n\
         \x20 6. phigate check {config}\n\
         \x20 7. phigate serve {config}\n",
        admin = if owner_pw_known { ", admin.pw" } else { "" },
    )
}
