//! Files a deployment needs, shared by `phigate init` and `phigate demo`: a development
//! certificate, secrets with mode 0600, a commented configuration.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use rand::Rng;
use rand::distr::Alphanumeric;

/// A random password of 24 letters and digits.
pub fn random_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Writes `text` to `path` (creating its directory) readable by its owner only.
pub fn write_secret(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Writes a self-signed development certificate for `names` (host names or addresses) to
/// `dir/server.pem` and its key to `dir/server.key`.
pub fn dev_certificate(dir: &Path, names: &[String]) -> Result<()> {
    let key = rcgen::KeyPair::generate().context("generating the certificate key")?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).context("certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "phigate development certificate");
    let cert = params
        .self_signed(&key)
        .context("signing the development certificate")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pem = dir.join("server.pem");
    std::fs::write(&pem, cert.pem()).with_context(|| format!("writing {}", pem.display()))?;
    write_secret(&dir.join("server.key"), &key.serialize_pem())
}

/// What differs between deployments in the configuration file.
pub struct Settings<'a> {
    /// `listen.address`
    pub listen: &'a str,
    /// `upstream.address`
    pub upstream: &'a str,
    /// `upstream.database`
    pub database: &'a str,
    /// `upstream.user`
    pub service_user: &'a str,
    /// `upstream.admin_user`
    pub admin_user: &'a str,
    /// `upstream.tls`
    pub upstream_tls: &'a str,
    /// `policies.native`
    pub native: &'a str,
    /// `admin.address`
    pub admin: &'a str,
    /// `upstream.ca_file`, when given
    pub ca_file: Option<&'a str>,
    /// `audit.instance`, when given
    pub instance: Option<&'a str>,
}

/// A commented phigate.toml (paths relative to its directory).
pub fn config_toml(s: &Settings) -> String {
    let instance = match s.instance {
        Some(i) => format!("instance = \"{i}\""),
        None => "# instance = \"phigate-1\"       # written into every record; the host name when absent".into(),
    };
    let ca_file = match s.ca_file {
        Some(f) => format!("ca_file = \"{f}\"         # the CA of the server's certificate"),
        None => "# ca_file = \"certs/db-ca.pem\"      # the CA of the server's certificate (verify-full); the Mozilla roots when absent".into(),
    };
    format!(
        r#"# phigate configuration. Every key can be overridden with PHIGATE_<SECTION>__<KEY>
# (e.g. PHIGATE_UPSTREAM__ADDRESS=db.internal:5432). Relative paths are resolved against
# this file's directory. The README's configuration table lists every key.

[listen]
address = "{listen}"
# A development certificate made by phigate; use one your clients trust in production
# (issued by your CA for the name clients connect to).
tls_cert = "certs/server.pem"
tls_key = "certs/server.key"
require_tls = true                 # plaintext startups get 28000

[upstream]
address = "{upstream}"
database = "{database}"
user = "{service_user}"              # neither owner of the tables nor superuser
password_file = "secrets/upstream.pw"
admin_user = "{admin_user}"         # owns the tables: only for policies apply and encrypt-existing
admin_password_file = "secrets/admin.pw"
tls = "{upstream_tls}"                # disable | require | verify-full
{ca_file}

[policies]
dir = "policies"                   # users.toml, roles.toml, one file per protected table; SIGHUP reloads
native = "{native}"                  # verify | apply: native row-level security behind row policies
session_key_file = "secrets/session.key"

[keys]
file = "secrets/phigate.keys"      # column-encryption master keys (mode 0600): back it up; without it the data is lost

[session]
idle_timeout = "15m"               # automatic logoff; roles.toml may shorten it per role
max_lifetime = "12h"
break_glass_duration = "30m"

[admin]
address = "{admin}"         # /metrics, /healthz, /readyz

[audit]
dir = "audit"                      # never deleted by phigate; keep six years
durability = "group"               # group: written to the OS first | fsync: on disk first
signing_key_file = "secrets/audit.ed25519"   # created (0600, with .pub) when absent
{instance}
"#,
        listen = s.listen,
        upstream = s.upstream,
        database = s.database,
        service_user = s.service_user,
        admin_user = s.admin_user,
        upstream_tls = s.upstream_tls,
        native = s.native,
        admin = s.admin,
    )
}
