//! Start-up: the configuration resolved into what the listener and sessions need (the
//! upstream target with its password read and TLS built once, the audit log, the policies
//! with the catalog and native row security behind them), `phigate check`'s checks, and
//! policy reloads.

use std::sync::Arc;

use rand::Rng;

use super::{ServerError, Shared};
use crate::audit::{Auditor, Durability, Kind, LogOptions, Record};
use crate::config::{AuditDurability, Config, NativePolicies};
use crate::crypto::Keyring;
use crate::encryption::Ciphers;
use crate::net::tls;
use crate::policy::PolicySet;
use crate::policy::session_key::SessionKey;
use crate::sql::{Analyzer, Catalog};
use crate::upstream::{self, LiveSchema};

impl Shared {
    /// Writes an audit record built on `template`; a failure is logged (the caller decides
    /// whether it refuses anything).
    pub(super) async fn audit(
        &self,
        mut record: Record,
        kind: Kind,
    ) -> Result<(), crate::audit::AuditError> {
        let Some(auditor) = &self.auditor else {
            return Ok(());
        };
        record.kind = Some(kind);
        // A session may start only once its start is recorded.
        let gate = kind == Kind::SessionStart;
        auditor
            .record(record, gate)
            .await
            .map(|_| ())
            .inspect_err(|e| {
                tracing::error!(error = %e, "audit log unwritable");
            })
    }
}

/// The instance name: `audit.instance`, or the host name.
fn instance_name(config: &Config) -> String {
    config.audit.instance.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "phigate".to_owned())
    })
}

pub(super) fn open_auditor(config: &Config) -> Result<Option<Arc<Auditor>>, ServerError> {
    let a = &config.audit;
    if !a.enabled {
        tracing::warn!("audit.enabled = false: statements are NOT audited");
        return Ok(None);
    }
    let opts = LogOptions {
        instance: instance_name(config),
        segment_bytes: a.segment_size as u64,
        checkpoint_every: a.checkpoint_every,
        durability: match a.durability {
            AuditDurability::Group => Durability::Group,
            AuditDurability::Fsync => Durability::Fsync,
        },
    };
    let auditor = Auditor::open(
        &config.audit_dir(),
        &config.audit_key_file(),
        opts,
        a.checkpoint_interval,
    )?;
    Ok(Some(auditor))
}

impl Shared {
    pub(super) fn policies(&self) -> Arc<PolicySet> {
        self.enforcement.current().analyzer.policies().clone()
    }
}

/// Loads the policy set and everything enforcing it needs: the keyring (the ciphers) and
/// the live schema for protected columns, the native row-level security check (or
/// installation) for row policies.
pub(super) async fn load_enforced(
    config: &Config,
    key: &SessionKey,
    mode: Native,
) -> Result<(Analyzer, Ciphers), ServerError> {
    let policies = PolicySet::load(&config.policies_dir())?;
    let (catalog, keyring) = if policies.tables().next().is_some() {
        let keyring = if policies.tables().any(|t| !t.columns.is_empty()) {
            config.keyring()?
        } else {
            // Row policies only: no column is encrypted, so no key is ever used.
            Keyring::from_keys(1, vec![(1, [0; 32])])
        };
        let schema = LiveSchema::read(config)
            .await
            .map_err(ServerError::Schema)?;
        if !config.policies.allow_plain_bytea {
            schema.require_backstop(&policies)?;
        }
        (Catalog::new(&policies, &schema.tables)?, keyring)
    } else {
        (
            Catalog::default(),
            Keyring::from_keys(1, vec![(1, [0; 32])]),
        )
    };
    let apply = config.policies.native == NativePolicies::Apply;
    match mode {
        Native::Enforce => {
            if apply && policies.uses_database_functions() {
                upstream::apply(config, &policies, key).await?;
            }
            upstream::verify(config, &policies, key, false).await?;
        }
        // `serve` would install them: check what installing cannot fix
        Native::Check if apply => upstream::verify(config, &policies, key, true).await?,
        Native::Check => upstream::verify(config, &policies, key, false).await?,
    }
    let ciphers = Ciphers::new(keyring, &catalog);
    Ok((
        Analyzer::new(Arc::new(catalog), Arc::new(policies)),
        ciphers,
    ))
}

/// What loading the policies does about the native row-level security policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Native {
    /// install them when `policies.native = "apply"`, then verify them (serve, reload)
    Enforce,
    /// change nothing: verify what serve would verify after installing (check)
    Check,
}

/// Runs every check `serve` runs before it listens, changing nothing in the database:
/// policies, TLS files, passwords, the keyring, the live schema against the table
/// policies, the native row-level security (or, with `policies.native = "apply"`, what
/// installing it cannot fix), the session key, and that the audit log can be written.
/// Returns the policy set.
pub async fn check(config: &Config) -> Result<PolicySet, ServerError> {
    let policies = preflight(config)?;
    let key_file = config.session_key_file();
    let key = if key_file.exists() {
        SessionKey::load_or_create(&key_file)?
    } else {
        // serve creates it; until then no database holds its secret
        SessionKey::from_bytes(rand::rng().random())
    };
    load_enforced(config, &key, Native::Check).await?;
    if config.audit.enabled {
        crate::audit::check_writable(&config.audit_dir(), &config.audit_key_file())?;
    }
    Ok(policies)
}

/// Reloads the policies of a running server.
pub struct Reloader(Arc<Shared>);

impl Reloader {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self(shared)
    }

    /// Loads and checks the policy set again and puts it in force; on any error the set in
    /// force stays. Sessions pick the new set up at their next statement. Audited either way.
    pub async fn reload(&self) -> Result<(), ServerError> {
        let shared = &self.0;
        let _one = shared.reloading.lock().await;
        let result = load_enforced(&shared.config, &shared.session_key, Native::Enforce).await;
        let mut record = Record::default();
        match &result {
            Ok(_) => record.decision = Some(crate::audit::Decision::Allowed),
            Err(e) => {
                record.decision = Some(crate::audit::Decision::Error);
                record.detail = Some(e.to_string());
            }
        }
        let audited = shared.audit(record, Kind::PolicyReload).await;
        let (analyzer, ciphers) = result?;
        if audited.is_err() {
            return Err(ServerError::Config(
                "the audit log cannot record the reload; the policies in force stay".into(),
            ));
        }
        let (users, roles) = analyzer.policies().counts();
        shared.enforcement.replace(analyzer, ciphers);
        tracing::info!(users, roles, "policies reloaded");
        Ok(())
    }
}

/// Checks everything `serve` would need except the network: policies, TLS files, the
/// upstream password file. Returns the policy set.
pub fn preflight(config: &Config) -> Result<PolicySet, ServerError> {
    let policies = PolicySet::load(&config.policies_dir())?;
    listener_tls(config)?;
    upstream::service_target(config)?;
    Ok(policies)
}

/// The listener's TLS configuration and its `tls-server-end-point` channel binding data.
pub(super) type ListenerTls = (Arc<rustls::ServerConfig>, Option<Vec<u8>>);

/// The listener's TLS configuration (asking for client certificates when `client_ca` is
/// set) and its channel binding data, when TLS is configured.
pub(super) fn listener_tls(config: &Config) -> Result<Option<ListenerTls>, ServerError> {
    let (Some(cert), Some(key)) = (&config.listen.tls_cert, &config.listen.tls_key) else {
        return Ok(None);
    };
    let ca = config.listen.client_ca.as_ref().map(|c| c.relative());
    let crl = config.listen.client_crl.as_ref().map(|c| c.relative());
    let clients = ca.as_deref().map(|ca| (ca, crl.as_deref()));
    Ok(Some(tls::server_config(
        &cert.relative(),
        &key.relative(),
        clients,
    )?))
}
