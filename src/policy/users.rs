//! `users.toml`: one identity per person or service, with a SCRAM-SHA-256 verifier (never a
//! password) and a role.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::PolicyError;
use super::delegation::Delegation;

/// A SCRAM-SHA-256 verifier in PostgreSQL's format:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count
    pub iterations: u32,
    /// the salt
    pub salt: Vec<u8>,
    /// SHA-256(ClientKey)
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key")
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

impl std::str::FromStr for ScramVerifier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            "not a SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)".to_owned()
        };
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iter, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iter.parse().map_err(|_| bad())?;
        if iterations == 0 {
            return Err(bad());
        }
        let salt = B64.decode(salt).map_err(|_| bad())?;
        let key = |k: &str| -> Result<[u8; 32], String> {
            B64.decode(k)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(bad)
        };
        Ok(Self {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// How a user proves who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Auth {
    /// SCRAM-SHA-256 with the user's password
    #[default]
    #[serde(rename = "password")]
    Password,
    /// a client certificate naming the user (no password)
    #[serde(rename = "certificate")]
    Certificate,
    /// both
    #[serde(rename = "certificate+password")]
    CertificateAndPassword,
    /// never logs in: an end user a delegating service names
    #[serde(rename = "delegated")]
    Delegated,
}

impl Auth {
    /// True when a client certificate is needed.
    pub fn needs_certificate(self) -> bool {
        matches!(self, Self::Certificate | Self::CertificateAndPassword)
    }

    /// True when the password is needed.
    pub fn needs_password(self) -> bool {
        matches!(self, Self::Password | Self::CertificateAndPassword)
    }
}

/// A person or service that may connect.
#[derive(Debug, Clone)]
pub struct User {
    /// the role whose policies apply
    pub role: String,
    /// how the user logs in
    pub auth: Auth,
    /// the name a client certificate must carry (its subject CN, or a DNS or email SAN)
    pub certificate_name: String,
    /// the login verifier (absent for certificate-only users)
    pub scram: Option<ScramVerifier>,
    /// attributes usable in row policies as `:user.NAME`
    pub attributes: BTreeMap<String, toml::Value>,
    /// the user is a service that names its end users (see [`Delegation`])
    pub delegate: Option<Delegation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: HashMap<String, RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    role: String,
    #[serde(default)]
    scram: Option<String>,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    certificate_name: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, toml::Value>,
    #[serde(default)]
    delegate: Option<Delegation>,
}

pub(super) fn parse(file: &Path, text: &str) -> Result<HashMap<String, User>, PolicyError> {
    let raw: UsersFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    raw.users
        .into_iter()
        .map(|(name, u)| {
            let invalid = |key: &str, problem: String| PolicyError::Invalid {
                file: file.to_owned(),
                key: format!("users.{}.{key}", super::toml_key(&name)),
                problem,
            };
            check_name(&name).map_err(|p| invalid("name", p))?;
            let scram = match (&u.scram, u.auth.needs_password()) {
                (Some(s), _) => Some(s.parse().map_err(|p| invalid("scram", p))?),
                (None, false) => None,
                (None, true) => {
                    return Err(invalid(
                        "scram",
                        "missing: the user logs in with a password (`phigate user add`)".into(),
                    ));
                }
            };
            if let Some(p) = u.delegate.as_ref().and_then(Delegation::problem) {
                return Err(invalid("delegate", p));
            }
            if u.auth == Auth::Delegated && (u.scram.is_some() || u.delegate.is_some()) {
                return Err(invalid(
                    "auth",
                    "a delegated end user has no login (no scram) and names no one (no delegate)"
                        .into(),
                ));
            }
            Ok((
                name.clone(),
                User {
                    role: u.role,
                    auth: u.auth,
                    certificate_name: u.certificate_name.unwrap_or(name),
                    scram,
                    attributes: u.attributes,
                    delegate: u.delegate,
                },
            ))
        })
        .collect()
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 || name.chars().any(char::is_control) {
        return Err("a user name has 1 to 63 bytes and no control characters".into());
    }
    Ok(())
}

/// Adds `name` with `role` and a fresh verifier for `password` to the users file at
/// `path` (created if missing), keeping its comments and layout. Refuses to replace an
/// existing user.
pub fn add_user(path: &Path, name: &str, role: &str, password: &str) -> Result<(), PolicyError> {
    add_user_with(path, name, role, Login::Password(password), &[])
}

/// How a new user logs in.
#[derive(Debug, Clone, Copy)]
pub enum Login<'a> {
    /// with this password (SCRAM-SHA-256; only the verifier is stored)
    Password(&'a str),
    /// with a client certificate naming `certificate_name`, and this password too when
    /// given
    Certificate {
        /// the name the certificate must carry
        certificate_name: &'a str,
        /// the password, for `certificate+password`
        password: Option<&'a str>,
    },
    /// never: an end user a delegating service names
    Delegated,
}

/// [`add_user`] with how the user logs in and attributes for row policies
/// (`:user.NAME`), as TOML values.
pub fn add_user_with(
    path: &Path,
    name: &str,
    role: &str,
    login: Login<'_>,
    attributes: &[(String, toml::Value)],
) -> Result<(), PolicyError> {
    let password = match login {
        Login::Password(p)
        | Login::Certificate {
            password: Some(p), ..
        } => Some(p),
        Login::Certificate { password: None, .. } | Login::Delegated => None,
    };
    let invalid = |key: &str, problem: String| PolicyError::Invalid {
        file: path.to_owned(),
        key: key.to_owned(),
        problem,
    };
    check_name(name).map_err(|p| invalid("name", p))?;
    if role.is_empty() {
        return Err(invalid("role", "must not be empty".into()));
    }
    if password.is_some_and(str::is_empty) {
        return Err(invalid("password", "must not be empty".into()));
    }
    let text = super::read_optional(path)?.unwrap_or_default();
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| PolicyError::Parse {
                file: path.to_owned(),
                message: e.to_string(),
            })?;
    let users = doc
        .entry("users")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| invalid("users", "is not a table".into()))?;
    if users.contains_key(name) {
        return Err(invalid(
            &format!("users.{}", super::toml_key(name)),
            "this user exists already; remove it first to replace it".into(),
        ));
    }
    let entry = user_entry(role, login, password, attributes);
    users.insert(name, toml_edit::Item::Table(entry));
    let io = |cause| PolicyError::Io {
        file: path.to_owned(),
        cause,
    };
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The users.toml table of a new user.
fn user_entry(
    role: &str,
    login: Login<'_>,
    password: Option<&str>,
    attributes: &[(String, toml::Value)],
) -> toml_edit::Table {
    let mut entry = toml_edit::Table::new();
    entry["role"] = toml_edit::value(role);
    if let Login::Delegated = login {
        entry["auth"] = toml_edit::value("delegated");
    }
    if let Login::Certificate {
        certificate_name, ..
    } = login
    {
        let auth = match password {
            Some(_) => "certificate+password",
            None => "certificate",
        };
        entry["auth"] = toml_edit::value(auth);
        entry["certificate_name"] = toml_edit::value(certificate_name);
    }
    if let Some(password) = password {
        entry["scram"] = toml_edit::value(postgres_protocol::password::scram_sha_256(
            password.as_bytes(),
        ));
    }
    if !attributes.is_empty() {
        let mut inline = toml_edit::InlineTable::new();
        for (k, v) in attributes {
            let value = match v {
                toml::Value::Integer(i) => toml_edit::Value::from(*i),
                toml::Value::Float(f) => toml_edit::Value::from(*f),
                toml::Value::Boolean(b) => toml_edit::Value::from(*b),
                other => toml_edit::Value::from(other.as_str().unwrap_or_default()),
            };
            inline.insert(k, value);
        }
        entry["attributes"] = toml_edit::value(inline);
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_round_trip_and_rejects() {
        let v: ScramVerifier = postgres_protocol::password::scram_sha_256(b"pw")
            .parse()
            .unwrap();
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt.len(), 16);
        assert_eq!(format!("{v:?}"), "ScramVerifier(..)", "keys never print");
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
        ] {
            assert!(bad.parse::<ScramVerifier>().is_err(), "{bad}");
        }
    }

    #[test]
    fn add_user_keeps_comments_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users.toml");
        std::fs::write(&f, "# staff of clinic 3\n").unwrap();
        add_user(&f, "dr.smith", "clinician", "s3cret").unwrap();
        add_user(&f, "svc-billing", "billing", "x").unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains("# staff of clinic 3"), "{text}");
        assert!(!text.contains("s3cret"));
        let users = parse(&f, &text).unwrap();
        assert_eq!(users["dr.smith"].role, "clinician");
        let e = add_user(&f, "dr.smith", "clinician", "again")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exists"), "{e}");
        assert!(add_user(&f, "", "r", "p").is_err());
    }

    #[test]
    fn delegating_services_and_delegated_end_users() {
        let f = Path::new("users.toml");
        let scram = postgres_protocol::password::scram_sha_256(b"pw");
        let text = format!(
            "[users.app]\nrole = \"svc\"\nscram = \"{scram}\"\ndelegate = {{ comment = \"db_user\" }}\n\
             [users.\"dr.smith\"]\nrole = \"clinician\"\nauth = \"delegated\"\n"
        );
        let users = parse(f, &text).unwrap();
        assert_eq!(
            users["app"]
                .delegate
                .as_ref()
                .and_then(|d| d.comment.as_deref()),
            Some("db_user")
        );
        let smith = &users["dr.smith"];
        assert_eq!((smith.auth, smith.scram.is_none()), (Auth::Delegated, true));
        assert!(!smith.auth.needs_password() && !smith.auth.needs_certificate());
        for (bad, key) in [
            (
                "[users.a]\nrole = \"r\"\nauth = \"delegated\"\ndelegate = { set = true }\n",
                "users.a.auth",
            ),
            (
                &format!(
                    "[users.a]\nrole = \"r\"\nscram = \"{scram}\"\ndelegate = {{ set = false }}\n"
                ),
                "users.a.delegate",
            ),
        ] {
            let e = parse(f, bad).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn certificate_users_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users.toml");
        let cert = |password| Login::Certificate {
            certificate_name: "lab-7.example.org",
            password,
        };
        add_user_with(&f, "lab-7", "feed", cert(None), &[]).unwrap();
        add_user_with(&f, "dr.who", "clinician", cert(Some("pw")), &[]).unwrap();
        let users = parse(&f, &std::fs::read_to_string(&f).unwrap()).unwrap();
        let lab = &users["lab-7"];
        assert_eq!((lab.auth, lab.scram.is_none()), (Auth::Certificate, true));
        assert_eq!(lab.certificate_name, "lab-7.example.org");
        let who = &users["dr.who"];
        assert_eq!(
            (who.auth, who.scram.is_some()),
            (Auth::CertificateAndPassword, true)
        );
        // a password user without a verifier does not load
        let broken = "[users.x]\nrole = \"r\"\n";
        let e = parse(&f, broken).unwrap_err().to_string();
        assert!(e.contains("scram"), "{e}");
        // the certificate name defaults to the user name
        add_user(&f, "plain", "r", "pw").unwrap();
        let users = parse(&f, &std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(users["plain"].certificate_name, "plain");
    }
}
