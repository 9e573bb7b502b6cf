//! Where phigate's own upstream sessions go, resolved from the configuration: the address,
//! database and login, the password read from its file, the TLS client configuration.

use super::UpstreamError;
use super::connect::UpstreamTarget;
use crate::config::{Config, UpstreamTls};
use crate::net::tls;

pub(crate) fn read_password(
    path: &std::path::Path,
    key: &'static str,
) -> Result<String, UpstreamError> {
    let text = std::fs::read_to_string(path).map_err(|cause| UpstreamError::File {
        key,
        path: path.display().to_string(),
        cause,
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// The service login's target: password file read, TLS configuration built.
pub(crate) fn service_target(config: &Config) -> Result<UpstreamTarget, UpstreamError> {
    let u = &config.upstream;
    let password = match &u.password_file {
        Some(p) => Some(read_password(&p.relative(), "upstream.password_file")?),
        None => None,
    };
    let tls = match u.tls {
        UpstreamTls::Disable => None,
        mode => {
            let ca = u.ca_file.as_ref().map(|c| c.relative());
            let client = tls::client_config(mode == UpstreamTls::VerifyFull, ca.as_deref())?;
            let name =
                tls::server_name(u.server_name.as_deref().unwrap_or(config.upstream_host()))?;
            Some((client, name))
        }
    };
    Ok(UpstreamTarget {
        address: u.address.clone(),
        database: u.database.clone(),
        user: u.user.clone(),
        password,
        tls,
        connect_timeout: u.connect_timeout,
        salted: Default::default(),
    })
}

/// The admin login's target (`upstream.admin_user`, the tables' owner).
pub(crate) fn admin_target(config: &Config) -> Result<UpstreamTarget, UpstreamError> {
    let u = &config.upstream;
    let Some(user) = &u.admin_user else {
        return Err(UpstreamError::Config(
            "upstream.admin_user is not set: this needs a login that owns the protected tables"
                .into(),
        ));
    };
    let mut target = service_target(config)?;
    target.user.clone_from(user);
    // another login: its own salted password
    target.salted = Default::default();
    target.password = match &u.admin_password_file {
        Some(p) => Some(read_password(
            &p.relative(),
            "upstream.admin_password_file",
        )?),
        None => None,
    };
    Ok(target)
}
