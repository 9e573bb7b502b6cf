//! Sessions of phigate's own logins (the service login, the tables' owner, or a URL) for
//! administrative work: schema checks, migrations, native row security, the demo.

use super::UpstreamError;
use super::connect::{Connected, connect};
use super::target::{admin_target, service_target};
use crate::config::Config;

/// A session of phigate's own service login, for administrative work (schema checks,
/// migrations); never a client's session.
pub struct ServiceSession(Connected);

impl ServiceSession {
    /// Logs in upstream as the configured service user.
    pub async fn open(config: &Config, application_name: &str) -> Result<Self, UpstreamError> {
        let target = service_target(config)?;
        let conn = connect(&target, &[("application_name", application_name)]).await?;
        Ok(Self(conn))
    }

    /// Logs in upstream as `upstream.admin_user`, the tables' owner.
    pub(crate) async fn open_admin(
        config: &Config,
        application_name: &str,
    ) -> Result<Self, UpstreamError> {
        let target = admin_target(config)?;
        let conn = connect(&target, &[("application_name", application_name)]).await?;
        Ok(Self(conn))
    }

    /// Logs in at a `postgres://` URL (as a client of phigate or of PostgreSQL).
    pub async fn open_url(url: &str, application_name: &str) -> Result<Self, UpstreamError> {
        let target = super::url::target(url)?;
        let conn = connect(&target, &[("application_name", application_name)]).await?;
        Ok(Self(conn))
    }

    /// Runs a simple query (one or more statements); returns the rows as text.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
        self.0.query_text(sql).await
    }
}
