//! Settings: `phigate.toml`, then `PHIGATE_SECTION__KEY` environment variables.
//!
//! Relative paths in the file are resolved against the file's own directory. Every error
//! names the file, the key and the problem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// A configuration that could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file is missing, is not TOML, or a key has the wrong type or is unknown.
    #[error("{file}: {error}")]
    Load {
        /// the configuration file
        file: String,
        /// what figment reported (it names the key and where the value came from)
        error: Box<figment::Error>,
    },
    /// A key's value is well-typed but unusable.
    #[error("{file}: {key}: {problem}")]
    Invalid {
        /// the configuration file
        file: String,
        /// the key, as `section.key`
        key: &'static str,
        /// what is wrong and what to do
        problem: String,
    },
}

/// All of phigate's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// where clients connect
    pub listen: Listen,
    /// the real PostgreSQL server
    pub upstream: Upstream,
    /// the policy directory
    #[serde(default)]
    pub policies: Policies,
    /// session limits
    #[serde(default)]
    pub session: SessionLimits,
    /// the admin HTTP endpoint
    #[serde(default)]
    pub admin: Admin,
    /// the keyring for column encryption
    #[serde(default)]
    pub keys: Keys,
    /// the audit log
    #[serde(default)]
    pub audit: Audit,
    /// the directory of the configuration file, against which defaults resolve
    #[serde(skip)]
    base: PathBuf,
}

/// `[listen]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// address:port to accept clients on
    pub address: SocketAddr,
    /// PEM certificate chain for TLS
    pub tls_cert: Option<RelativePathBuf>,
    /// PEM private key for TLS
    pub tls_key: Option<RelativePathBuf>,
    /// refuse plaintext startups (28000)
    #[serde(default)]
    pub require_tls: bool,
    /// PEM certificates of the CAs whose client certificates are accepted (users whose
    /// `auth` asks for a certificate need one); expired certificates are refused
    pub client_ca: Option<RelativePathBuf>,
    /// PEM certificate revocation lists of those CAs: revoked client certificates are
    /// refused
    pub client_crl: Option<RelativePathBuf>,
    /// the largest client message accepted (08P01 and disconnect beyond it)
    #[serde(default = "defaults::max_message_size", deserialize_with = "de_size")]
    pub max_message_size: usize,
    /// time allowed from connect to authenticated
    #[serde(default = "defaults::auth_timeout", deserialize_with = "de_duration")]
    pub auth_timeout: Duration,
    /// pause before a failed login is answered
    #[serde(
        default = "defaults::auth_failure_delay",
        deserialize_with = "de_duration"
    )]
    pub auth_failure_delay: Duration,
    /// simultaneous client connections; more are refused with 53300
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// session threads (each a single-threaded runtime); the number of CPUs when absent
    pub threads: Option<usize>,
    /// pin session thread i to the i-th CPU phigate may run on (in turn when there are
    /// more threads than CPUs)
    #[serde(default)]
    pub pin_threads: bool,
}

impl Listen {
    /// Client certificates need TLS, and a CRL needs the CAs it belongs to.
    fn validate_client_certificates(&self) -> Result<(), (&'static str, &'static str)> {
        if self.client_ca.is_some() && self.tls_cert.is_none() {
            return Err((
                "listen.client_ca",
                "client certificates need TLS: set listen.tls_cert and listen.tls_key",
            ));
        }
        if self.client_crl.is_some() && self.client_ca.is_none() {
            return Err((
                "listen.client_crl",
                "needs listen.client_ca (the CAs whose revocations it lists)",
            ));
        }
        Ok(())
    }
}

/// How phigate secures its connection to the upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// plaintext
    Disable,
    /// TLS, certificate not verified
    Require,
    /// TLS, certificate chain and host name verified
    VerifyFull,
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// host:port of PostgreSQL
    pub address: String,
    /// the database every session uses
    pub database: String,
    /// the service login phigate uses
    pub user: String,
    /// file holding that login's password (not needed for trust auth)
    pub password_file: Option<RelativePathBuf>,
    /// a login that owns the protected tables, for administrative work only (`policies
    /// apply`, `encrypt-existing`); never used for client sessions
    pub admin_user: Option<String>,
    /// file holding the admin login's password
    pub admin_password_file: Option<RelativePathBuf>,
    /// disable | require | verify-full
    #[serde(default = "defaults::upstream_tls")]
    pub tls: UpstreamTls,
    /// CA certificates (PEM) for verify-full; the Mozilla roots when absent
    pub ca_file: Option<RelativePathBuf>,
    /// name to verify the server certificate against; the host of `address` when absent
    pub server_name: Option<String>,
    /// time allowed to connect and authenticate upstream
    #[serde(
        default = "defaults::connect_timeout",
        deserialize_with = "de_duration"
    )]
    pub connect_timeout: Duration,
    /// upstream sessions kept, reset, for later clients whose login sends the same
    /// startup parameters (0: none kept; see `upstream::Pool`)
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// how long a kept upstream session waits for a client before it is closed
    #[serde(
        default = "defaults::pool_idle_timeout",
        deserialize_with = "de_duration"
    )]
    pub pool_idle_timeout: Duration,
}

/// `[policies]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// directory of `*.toml` policy files (`users.toml`, `roles.toml`, ...); `policies`
    /// beside the configuration file when absent
    pub dir: Option<RelativePathBuf>,
    /// the native row-level security policies behind row policies: `verify` (at start-up
    /// and reload, refuse to serve unless `phigate policies apply` installed the current
    /// ones) or `apply` (install them with the admin login)
    #[serde(default)]
    pub native: NativePolicies,
    /// the key that tags phigate's session settings for the native policies (created,
    /// mode 0600, when absent); `secrets/session.key` beside the configuration file
    pub session_key_file: Option<RelativePathBuf>,
    /// serve protected columns of plain `bytea` (without the `phigate_encrypted` domain,
    /// whose CHECK stops plaintext written around phigate); off by default
    #[serde(default)]
    pub allow_plain_bytea: bool,
}

/// `policies.native`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NativePolicies {
    /// check that the installed policies are the current ones
    #[default]
    Verify,
    /// install them (needs `upstream.admin_user`)
    Apply,
}

/// `[keys]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// the keyring file (mode 0600); `secrets/phigate.keys` beside the configuration when
    /// absent
    pub file: Option<RelativePathBuf>,
    /// master keys wrapped by a key-encryption key in a PKCS#11 token (an HSM)
    pub pkcs11: Option<Pkcs11Keys>,
}

/// `[keys.pkcs11]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Keys {
    /// the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`)
    pub module: RelativePathBuf,
    /// the token's label
    pub token: String,
    /// a file holding the user PIN (mode 0600)
    pub pin_file: RelativePathBuf,
    /// the label of the AES key-encryption key in the token
    #[serde(default = "default_key_label")]
    pub key_label: String,
}

fn default_key_label() -> String {
    "phigate-kek".into()
}

/// When an audit record counts as written (`audit.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditDurability {
    /// written to the operating system before the statement is forwarded; fsync every 5 ms
    #[default]
    Group,
    /// on disk before the statement is forwarded
    Fsync,
}

/// What happens when the audit log cannot be written (`audit.on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditFailure {
    /// statements are refused with SQLSTATE 58030
    #[default]
    Reject,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// false turns the audit log off (a warning is logged at startup)
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// the log directory; `audit` beside the configuration when absent
    pub dir: Option<RelativePathBuf>,
    /// when a record counts as written
    #[serde(default)]
    pub durability: AuditDurability,
    /// what happens when the log cannot be written
    #[serde(default)]
    pub on_failure: AuditFailure,
    /// how long segments are kept at least; less than six years is refused
    #[serde(default = "defaults::retention", deserialize_with = "de_duration")]
    pub retention: Duration,
    /// the Ed25519 signing key (created, mode 0600, with a `.pub` beside it, when absent);
    /// `secrets/audit.ed25519` beside the configuration when absent
    pub signing_key_file: Option<RelativePathBuf>,
    /// the name written into every record; the host name when absent
    pub instance: Option<String>,
    /// a segment is closed at this size (it is also closed at midnight UTC)
    #[serde(default = "defaults::segment_size", deserialize_with = "de_size")]
    pub segment_size: usize,
    /// a checkpoint is written after this many records ...
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: u64,
    /// ... or after this long, whichever comes first
    #[serde(
        default = "defaults::checkpoint_interval",
        deserialize_with = "de_duration"
    )]
    pub checkpoint_interval: Duration,
    /// every record also streamed to a syslog collector
    pub syslog: Option<Syslog>,
}

/// `[audit.syslog]`: every record sent, as RFC 5424 over TCP, to a collector; the chained
/// files stay the source of truth, and a cursor file beside them says how far the
/// collector has been sent, so a restart or an outage resumes there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Syslog {
    /// host:port of the collector
    pub address: String,
    /// TLS to the collector (as `upstream.tls`)
    #[serde(default = "defaults::upstream_tls")]
    pub tls: UpstreamTls,
    /// PEM CA certificates to verify the collector with (system roots when absent)
    pub ca_file: Option<RelativePathBuf>,
    /// the name the collector's certificate must carry; its host when absent
    pub server_name: Option<String>,
    /// the message body: the record as stored (`stored`) or its OCSF event (`ocsf`)
    #[serde(default)]
    pub format: SyslogFormat,
}

/// The body of each syslog message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    /// the line as stored (JSON, MAC included)
    #[default]
    Stored,
    /// the OCSF 1.1 event
    Ocsf,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            durability: AuditDurability::default(),
            on_failure: AuditFailure::default(),
            retention: defaults::retention(),
            signing_key_file: None,
            instance: None,
            segment_size: defaults::segment_size(),
            checkpoint_every: defaults::checkpoint_every(),
            checkpoint_interval: defaults::checkpoint_interval(),
            syslog: None,
        }
    }
}

/// Six years (HIPAA's retention for audit documentation), as humantime counts years.
pub(crate) const MIN_AUDIT_RETENTION: Duration = Duration::from_secs(6 * 31_557_600);

/// `[session]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    /// a session idle this long ends with FATAL 57P05 (roles may override)
    #[serde(default = "defaults::idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// a session this old ends (57P01) at its next idle moment
    #[serde(default = "defaults::max_lifetime", deserialize_with = "de_duration")]
    pub max_lifetime: Duration,
    /// how long a declared emergency (`SET phigate.break_glass`) lasts
    #[serde(
        default = "defaults::break_glass_duration",
        deserialize_with = "de_duration"
    )]
    pub break_glass_duration: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle_timeout: defaults::idle_timeout(),
            max_lifetime: defaults::max_lifetime(),
            break_glass_duration: defaults::break_glass_duration(),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// address:port for /metrics, /healthz and /readyz; none when absent
    pub address: Option<SocketAddr>,
}

mod defaults {
    use super::UpstreamTls;
    use std::time::Duration;

    pub fn max_message_size() -> usize {
        256 << 20
    }
    pub(crate) fn auth_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub(crate) fn auth_failure_delay() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn upstream_tls() -> UpstreamTls {
        UpstreamTls::VerifyFull
    }
    pub(crate) fn connect_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(crate) fn pool_size() -> usize {
        20
    }
    pub(crate) fn pool_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn max_lifetime() -> Duration {
        Duration::from_secs(12 * 3600)
    }
    pub fn break_glass_duration() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn yes() -> bool {
        true
    }
    pub(crate) fn retention() -> Duration {
        super::MIN_AUDIT_RETENTION
    }
    pub fn segment_size() -> usize {
        64 << 20
    }
    pub fn checkpoint_every() -> u64 {
        10_000
    }
    pub(crate) fn checkpoint_interval() -> Duration {
        Duration::from_secs(10)
    }
}

/// Parses a duration such as `15m`, `1h 30m` or `500ms`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); use e.g. 90s, 15m, 12h"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Parses a size such as `256MiB`, `64KiB` or `1048576`.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "kB" | "KB" => 1 << 10,
        "MiB" | "MB" => 1 << 20,
        "GiB" | "GB" => 1 << 30,
        _ => return Err(format!("`{s}` is not a size; use e.g. 64KiB, 256MiB, 1GiB")),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size; use e.g. 64KiB, 256MiB, 1GiB"))
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(usize),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Int(n) => Ok(n),
        Size::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

impl Config {
    /// Loads `path`, applies `PHIGATE_*` overrides and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let figment =
            Figment::from(Toml::file_exact(path)).merge(Env::prefixed("PHIGATE_").split("__"));
        let mut config: Config = figment.extract().map_err(|e| ConfigError::Load {
            file: file.clone(),
            error: Box::new(e),
        })?;
        config.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.validate(&file)?;
        Ok(config)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| ConfigError::Invalid {
            file: file.to_owned(),
            key,
            problem: problem.to_owned(),
        };
        let l = &self.listen;
        if l.tls_cert.is_some() != l.tls_key.is_some() {
            return Err(invalid(
                "listen.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        if l.require_tls && l.tls_cert.is_none() {
            return Err(invalid(
                "listen.require_tls",
                "needs listen.tls_cert and listen.tls_key",
            ));
        }
        l.validate_client_certificates()
            .map_err(|(key, problem)| invalid(key, problem))?;
        if !(1024..=1 << 30).contains(&l.max_message_size) {
            // PostgreSQL's own limit is 1 GiB; larger values could only come from an attacker.
            return Err(invalid(
                "listen.max_message_size",
                "must be between 1KiB and 1GiB",
            ));
        }
        if l.max_connections == 0 {
            return Err(invalid("listen.max_connections", "must be at least 1"));
        }
        if l.threads == Some(0) {
            return Err(invalid("listen.threads", "must be at least 1"));
        }
        if self
            .upstream
            .address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(invalid("upstream.address", "must be host:port"));
        }
        for (key, d) in [
            ("listen.auth_timeout", l.auth_timeout),
            ("upstream.connect_timeout", self.upstream.connect_timeout),
            ("session.idle_timeout", self.session.idle_timeout),
            ("session.max_lifetime", self.session.max_lifetime),
            (
                "session.break_glass_duration",
                self.session.break_glass_duration,
            ),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        let a = &self.audit;
        if a.retention < MIN_AUDIT_RETENTION {
            return Err(invalid(
                "audit.retention",
                "must be at least 6y (HIPAA keeps audit records six years)",
            ));
        }
        if a.checkpoint_every == 0 || a.checkpoint_interval.is_zero() {
            return Err(invalid(
                "audit.checkpoint_every",
                "checkpoint_every and checkpoint_interval must be above zero",
            ));
        }
        if a.segment_size < 4096 {
            return Err(invalid("audit.segment_size", "must be at least 4KiB"));
        }
        Ok(())
    }

    /// The audit directory.
    pub fn audit_dir(&self) -> PathBuf {
        match &self.audit.dir {
            Some(d) => d.relative(),
            None => self.base.join("audit"),
        }
    }

    /// The audit signing key file.
    pub fn audit_key_file(&self) -> PathBuf {
        match &self.audit.signing_key_file {
            Some(f) => f.relative(),
            None => self.base.join("secrets/audit.ed25519"),
        }
    }

    /// The policy directory.
    pub fn policies_dir(&self) -> PathBuf {
        match &self.policies.dir {
            Some(d) => d.relative(),
            None => self.base.join("policies"),
        }
    }

    /// The session-settings key file.
    pub fn session_key_file(&self) -> PathBuf {
        match &self.policies.session_key_file {
            Some(f) => f.relative(),
            None => self.base.join("secrets/session.key"),
        }
    }

    /// The keyring file.
    pub fn keyring_file(&self) -> PathBuf {
        match &self.keys.file {
            Some(f) => f.relative(),
            None => self.base.join("secrets/phigate.keys"),
        }
    }

    /// The token whose key wraps the keyring's keys (`[keys.pkcs11]`), if any.
    pub fn key_token(&self) -> Option<crate::crypto::TokenConfig> {
        self.keys
            .pkcs11
            .as_ref()
            .map(|p| crate::crypto::TokenConfig {
                module: p.module.relative(),
                token: p.token.clone(),
                pin_file: p.pin_file.relative(),
                key_label: p.key_label.clone(),
            })
    }

    /// The keyring, its keys unwrapped by the configured token if any.
    pub fn keyring(&self) -> Result<crate::crypto::Keyring, crate::crypto::KeyringError> {
        crate::crypto::load_keyring(&self.keyring_file(), self.key_token().as_ref())
    }

    /// Session threads: `listen.threads`, or the number of CPUs.
    pub fn threads(&self) -> usize {
        self.listen
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The host part of `upstream.address`.
    pub(crate) fn upstream_host(&self) -> &str {
        let addr = &self.upstream.address;
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("phigate.toml");
        std::fs::write(&p, body).unwrap();
        p
    }

    const MINIMAL: &str = "[listen]\naddress = \"127.0.0.1:6432\"\n[upstream]\naddress = \"db:5432\"\ndatabase = \"ehr\"\nuser = \"svc\"\n";

    #[test]
    fn minimal_file_gets_defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(c.session.idle_timeout, Duration::from_secs(900));
        assert_eq!(c.upstream.tls, UpstreamTls::VerifyFull);
        assert_eq!(c.listen.max_message_size, 256 << 20);
        assert_eq!(c.policies_dir(), dir.path().join("policies"));
        assert_eq!(c.upstream_host(), "db");
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &format!("{MINIMAL}[session]\nidle_timeout = \"soon\"\n"),
        );
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("phigate.toml")
                && e.contains("idle_timeout")
                && e.contains("not a duration"),
            "{e}"
        );
        let p = write(
            dir.path(),
            &format!("{MINIMAL}[session]\nidle_timeot = \"1m\"\n"),
        );
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("idle_timeot"), "{e}");
        let p = write(
            dir.path(),
            &MINIMAL.replace("[listen]\n", "[listen]\nmax_message_size = \"2GiB\"\n"),
        );
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("listen.max_message_size") && e.contains("1GiB"),
            "{e}"
        );
        let p = write(
            dir.path(),
            &MINIMAL.replace("[listen]\n", "[listen]\nrequire_tls = true\n"),
        );
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("listen.require_tls") && e.contains("tls_cert"),
            "{e}"
        );
        let e = Config::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("3"), Ok(3));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
    }
}
