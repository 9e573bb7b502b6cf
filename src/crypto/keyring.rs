//! The keyring: versioned 256-bit master keys in a TOML file readable by its owner only.
//!
//! ```toml
//! active = 2
//! [[keys]]
//! id = 1
//! created = "2026-11-24T19:30:00Z"
//! key = "<base64 of 32 random bytes>"
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

/// A keyring file that cannot be used. Never contains key material.
#[derive(Debug, Error)]
pub enum KeyringError {
    /// The file cannot be read or written.
    #[error("{file}: {cause}")]
    Io {
        /// the keyring file
        file: PathBuf,
        /// why
        cause: std::io::Error,
    },
    /// `keys generate` refuses to replace an existing keyring.
    #[error("{0}: a keyring exists already; refusing to overwrite it (use `phigate keys rotate`)")]
    Exists(PathBuf),
    /// Group or others may read the file.
    #[error("{0}: the keyring is readable by group or others; run chmod 600 on it")]
    Permissions(PathBuf),
    /// The file is not a valid keyring.
    #[error("{file}: {problem}")]
    Invalid {
        /// the keyring file
        file: PathBuf,
        /// what is wrong (never a key)
        problem: String,
    },
}

/// The master keys, by version, and the one new writes use.
pub struct Keyring {
    active: u32,
    keys: BTreeMap<u32, MasterKey>,
}

struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    /// RFC 3339 creation time, kept for the file
    created: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    active: u32,
    keys: Vec<FileKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    id: u32,
    created: String,
    key: Zeroizing<String>,
}

const PREAMBLE: &str = "# phigate keyring: master keys for column encryption.\n\
# Keep it secret (mode 0600), back it up, never commit it. Losing it loses the data.\n";

impl Keyring {
    /// A keyring from raw keys (for tests and benchmarks).
    pub fn from_keys(active: u32, keys: Vec<(u32, [u8; 32])>) -> Self {
        Self {
            active,
            keys: keys
                .into_iter()
                .map(|(id, key)| {
                    let created = now();
                    (
                        id,
                        MasterKey {
                            key: Zeroizing::new(key),
                            created,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The version new values are encrypted with.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// Every master key, by version.
    pub fn keys(&self) -> impl Iterator<Item = (u32, &[u8; 32])> {
        self.keys.iter().map(|(id, k)| (*id, &*k.key))
    }

    /// Loads and validates a keyring file; refuses one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let io = |cause| KeyringError::Io {
            file: path.to_owned(),
            cause,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(KeyringError::Permissions(path.to_owned()));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let invalid = |problem: String| KeyringError::Invalid {
            file: path.to_owned(),
            problem,
        };
        let file: File = toml::from_str(&text)
            .map_err(|e| invalid(format!("not a keyring: {}", e.message())))?;
        let mut keys = BTreeMap::new();
        for k in file.keys {
            let raw = Zeroizing::new(
                B64.decode(k.key.as_bytes())
                    .map_err(|_| invalid(format!("key {}: not base64", k.id)))?,
            );
            let key: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| invalid(format!("key {}: must be 32 bytes", k.id)))?;
            let entry = MasterKey {
                key: Zeroizing::new(key),
                created: k.created,
            };
            if keys.insert(k.id, entry).is_some() {
                return Err(invalid(format!("key {} appears twice", k.id)));
            }
        }
        if !keys.contains_key(&file.active) {
            return Err(invalid(format!(
                "active = {} names no key in the file",
                file.active
            )));
        }
        Ok(Self {
            active: file.active,
            keys,
        })
    }

    /// Writes a new keyring with one fresh key (mode 0600; a missing directory is created
    /// with mode 0700); refuses to overwrite.
    pub fn generate(path: &Path) -> Result<Self, KeyringError> {
        let ring = Self::from_keys(1, vec![(1, rand::rng().random())]);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists());
        dir.map_or(Ok(()), |d| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
        })
        .and_then(|()| write_new(path, &ring.to_toml()))
        .map_err(|cause| match cause.kind() {
            std::io::ErrorKind::AlreadyExists => KeyringError::Exists(path.to_owned()),
            _ => KeyringError::Io {
                file: path.to_owned(),
                cause,
            },
        })?;
        Ok(ring)
    }

    /// Adds a fresh key and makes it active, rewriting the file atomically. Old keys stay,
    /// so existing values remain readable until `encrypt-existing --rekey`.
    pub fn rotate(path: &Path) -> Result<Self, KeyringError> {
        let mut ring = Self::load(path)?;
        let id = ring.keys.keys().max().copied().unwrap_or(0) + 1;
        let key = MasterKey {
            key: Zeroizing::new(rand::rng().random()),
            created: now(),
        };
        ring.keys.insert(id, key);
        ring.active = id;
        let tmp = path.with_extension("rotate.tmp");
        let io = |cause| KeyringError::Io {
            file: tmp.clone(),
            cause,
        };
        write_new(&tmp, &ring.to_toml()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(ring)
    }

    fn to_toml(&self) -> Zeroizing<String> {
        let file = File {
            active: self.active,
            keys: self
                .keys
                .iter()
                .map(|(id, k)| FileKey {
                    id: *id,
                    created: k.created.clone(),
                    key: Zeroizing::new(B64.encode(k.key.as_ref())),
                })
                .collect(),
        };
        let body = toml::to_string(&file).expect("a keyring always serialises");
        Zeroizing::new(format!("{PREAMBLE}{body}"))
    }
}

/// Creates `path` (which must not exist) with mode 0600, writes `text` and syncs it.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phigate.keys");
        let ring = Keyring::generate(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            Keyring::generate(&path),
            Err(KeyringError::Exists(_))
        ));
        let loaded = Keyring::load(&path).unwrap();
        assert_eq!(loaded.active(), 1);
        assert_eq!(
            loaded.keys().next().map(|(_, k)| *k),
            ring.keys().next().map(|(_, k)| *k)
        );
        let rotated = Keyring::rotate(&path).unwrap();
        assert_eq!(rotated.active(), 2);
        let again = Keyring::load(&path).unwrap();
        assert_eq!(again.keys().count(), 2);
        assert_eq!(
            again.keys().next().map(|(_, k)| *k),
            ring.keys().next().map(|(_, k)| *k),
            "old key kept"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!format!("{again:?}").contains(&B64.encode(ring.keys().next().unwrap().1)));
    }

    #[test]
    fn refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let key = B64.encode([1u8; 32]);
        write(
            &format!("active = 1\n[[keys]]\nid = 1\ncreated = \"x\"\nkey = \"{key}\"\n"),
            0o644,
        );
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyringError::Permissions(_))
        ));
        for (text, problem) in [
            (
                format!("active = 2\n[[keys]]\nid = 1\ncreated = \"x\"\nkey = \"{key}\"\n"),
                "names no key",
            ),
            (
                "active = 1\n[[keys]]\nid = 1\ncreated = \"x\"\nkey = \"c2hvcnQ=\"\n".to_owned(),
                "32 bytes",
            ),
            (
                format!(
                    "active = 1\n[[keys]]\nid = 1\ncreated = \"x\"\nkey = \"{key}\"\n[[keys]]\nid = 1\ncreated = \"x\"\nkey = \"{key}\"\n"
                ),
                "twice",
            ),
        ] {
            write(&text, 0o600);
            let e = Keyring::load(&path).unwrap_err().to_string();
            assert!(e.contains(problem), "{e}");
            assert!(!e.contains(&key), "no key material in errors");
        }
    }
}
