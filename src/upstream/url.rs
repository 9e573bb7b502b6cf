//! `postgres://user:password@host:port/database?sslmode=...` connection URLs, for the
//! commands that connect as a client (`phigate synth --through`).

use std::time::Duration;

use super::UpstreamError;
use super::connect::UpstreamTarget;
use crate::net::tls;
use crate::sql::percent_decode as decode;

/// How a URL asks for TLS (libpq's `sslmode`, the values phigate supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// no TLS
    Disable,
    /// TLS, the certificate not checked (the default)
    Require,
    /// TLS, chain and host name checked
    VerifyFull,
}

impl SslMode {
    /// The value as `upstream.tls` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// A parsed connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    /// the user (the URL's, or the empty string)
    pub user: String,
    /// the password, if the URL holds one
    pub password: Option<String>,
    /// host name or address
    pub host: String,
    /// port (5432 when absent)
    pub port: u16,
    /// database (the user's name when absent)
    pub database: String,
    /// `sslmode`
    pub sslmode: SslMode,
    /// `sslrootcert`
    pub sslrootcert: Option<String>,
}

fn bad(url: &str, problem: &str) -> UpstreamError {
    // never echo the URL: it may hold a password
    let _ = url;
    UpstreamError::Config(format!(
        "the connection URL {problem}; write postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require"
    ))
}

/// Parses a `postgres://` URL; the user may be absent.
pub fn parse(url: &str) -> Result<ParsedUrl, UpstreamError> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| bad(url, "does not start with postgres://"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    let (user, password) = match credentials.map(|c| c.split_once(':').unwrap_or((c, ""))) {
        Some((u, p)) => (
            decode(u).ok_or_else(|| bad(url, "has a badly escaped user name"))?,
            Some(decode(p).ok_or_else(|| bad(url, "has a badly escaped password"))?)
                .filter(|p| !p.is_empty()),
        ),
        None => (String::new(), None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| bad(url, "has a port that is not a number"))?,
        ),
        None => (hostport, 5432),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad(url, "lacks a host"));
    }
    let mut parsed = ParsedUrl {
        database: decode(database)
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone()),
        user,
        password,
        host: host.to_owned(),
        port,
        sslmode: SslMode::Require,
        sslrootcert: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v).ok_or_else(|| bad(url, "has a badly escaped parameter"))?;
        match (k, v.as_str()) {
            ("sslmode", "disable") => parsed.sslmode = SslMode::Disable,
            ("sslmode", "require") => parsed.sslmode = SslMode::Require,
            ("sslmode", "verify-full") => parsed.sslmode = SslMode::VerifyFull,
            ("sslmode", _) => {
                return Err(bad(
                    url,
                    "has an sslmode other than disable, require, verify-full",
                ));
            }
            ("sslrootcert", _) => parsed.sslrootcert = Some(v),
            _ => return Err(bad(url, &format!("has an unknown parameter `{k}`"))),
        }
    }
    Ok(parsed)
}

/// The target a connection URL describes.
pub(super) fn target(url: &str) -> Result<UpstreamTarget, UpstreamError> {
    let p = parse(url)?;
    if p.user.is_empty() {
        return Err(bad(url, "names no user"));
    }
    let tls = match p.sslmode {
        SslMode::Disable => None,
        mode => {
            let ca = p.sslrootcert.as_ref().map(std::path::PathBuf::from);
            let config = tls::client_config(mode == SslMode::VerifyFull, ca.as_deref())?;
            Some((config, tls::server_name(&p.host)?))
        }
    };
    let address = if p.host.contains(':') {
        format!("[{}]:{}", p.host, p.port)
    } else {
        format!("{}:{}", p.host, p.port)
    };
    Ok(UpstreamTarget {
        address,
        database: p.database,
        user: p.user,
        password: p.password,
        tls,
        connect_timeout: Duration::from_secs(10),
        salted: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_libpq_writes_them() {
        let p = parse("postgres://ada.admin:s%40cret@127.0.0.1:6432/ehr?sslmode=disable").unwrap();
        assert_eq!(
            p,
            ParsedUrl {
                user: "ada.admin".into(),
                password: Some("s@cret".into()),
                host: "127.0.0.1".into(),
                port: 6432,
                database: "ehr".into(),
                sslmode: SslMode::Disable,
                sslrootcert: None,
            }
        );
        let p = parse("postgresql://bob@db.internal/").unwrap();
        assert_eq!(
            (p.port, p.database.as_str(), p.password),
            (5432, "bob", None)
        );
        assert_eq!(p.sslmode, SslMode::Require);
        let p = parse("postgres://u:p@[::1]:7/d?sslmode=verify-full&sslrootcert=ca.pem").unwrap();
        assert_eq!(
            (p.host.as_str(), p.sslrootcert.as_deref()),
            ("::1", Some("ca.pem"))
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_the_password() {
        for url in [
            "mysql://u:hunter2@h/d",
            "postgres://u:hunter2@/d",
            "postgres://u:hunter2@h:x/d",
            "postgres://u:hunter2@h/d?sslmode=prefer",
            "postgres://u:hunter2@h/d?bogus=1",
            "postgres://u:hunter%zz@h/d",
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(!e.contains("hunter"), "{e}");
            assert!(e.contains("postgres://USER"), "{e}");
        }
    }
}
