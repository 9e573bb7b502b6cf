//! The keyring: versioned 256-bit master keys in a TOML file readable by its owner only.
//!
//! ```toml
//! active = 2
//! [[keys]]
//! id = 1
//! created = "2026-11-24T19:30:00Z"
//! key = "<base64 of 32 random bytes>"
//! ```
//!
//! With a key provider (an HSM), the file says which (`wrapped_by`) and each key is
//! `wrapped = "<base64>"` instead: the file alone decrypts nothing.

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

use super::provider::{KeyProvider, ProviderError};

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
    /// The key provider cannot wrap or unwrap.
    #[error(transparent)]
    Provider(#[from] ProviderError),
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
    /// the provider whose key wraps every key (`pkcs11:<token>/<label>`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped_by: Option<String>,
    keys: Vec<FileKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    id: u32,
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<Zeroizing<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<String>,
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

    /// Loads and validates a keyring file that holds its keys (no provider); refuses one
    /// that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        Self::load_with(path, None)
    }

    /// Loads a keyring whose keys `provider` wraps (or, with none, that holds them).
    pub fn load_with(
        path: &Path,
        provider: Option<&dyn KeyProvider>,
    ) -> Result<Self, KeyringError> {
        let invalid = |problem: String| KeyringError::Invalid {
            file: path.to_owned(),
            problem,
        };
        let file = read_file(path)?;
        match (&file.wrapped_by, provider) {
            (Some(by), None) => {
                return Err(invalid(format!(
                    "its keys are wrapped by {by}; configure [keys.pkcs11] to unwrap them"
                )));
            }
            (None, Some(p)) => {
                return Err(invalid(format!(
                    "its keys are not wrapped, but {} is configured; run `phigate keys wrap`",
                    p.name()
                )));
            }
            _ => {}
        }
        let mut keys = BTreeMap::new();
        for k in file.keys {
            let key = master_key(&k, provider).map_err(|e| match e {
                Unreadable::Problem(p) => invalid(format!("key {}: {p}", k.id)),
                Unreadable::Provider(e) => KeyringError::Provider(e),
            })?;
            let entry = MasterKey {
                key,
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
    /// with mode 0700), wrapped by `provider` if any; refuses to overwrite.
    pub fn generate(path: &Path) -> Result<Self, KeyringError> {
        Self::generate_with(path, None)
    }

    /// [`Keyring::generate`], its key wrapped by `provider`.
    pub fn generate_with(
        path: &Path,
        provider: Option<&dyn KeyProvider>,
    ) -> Result<Self, KeyringError> {
        let ring = Self::from_keys(1, vec![(1, rand::rng().random())]);
        let text = ring.to_toml(provider)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists());
        dir.map_or(Ok(()), |d| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
        })
        .and_then(|()| write_new(path, &text))
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
        Self::rotate_with(path, None)
    }

    /// [`Keyring::rotate`] of a keyring whose keys `provider` wraps.
    pub fn rotate_with(
        path: &Path,
        provider: Option<&dyn KeyProvider>,
    ) -> Result<Self, KeyringError> {
        let mut ring = Self::load_with(path, provider)?;
        let id = ring.keys.keys().max().copied().unwrap_or(0) + 1;
        let key = MasterKey {
            key: Zeroizing::new(rand::rng().random()),
            created: now(),
        };
        ring.keys.insert(id, key);
        ring.active = id;
        ring.replace(path, provider)?;
        Ok(ring)
    }

    /// Rewrites a keyring that holds its keys with every key wrapped by `provider`.
    pub fn wrap(path: &Path, provider: &dyn KeyProvider) -> Result<Self, KeyringError> {
        let ring = Self::load(path)?;
        ring.replace(path, Some(provider))?;
        Ok(ring)
    }

    /// Replaces the file at `path` with this keyring, atomically.
    fn replace(&self, path: &Path, provider: Option<&dyn KeyProvider>) -> Result<(), KeyringError> {
        let text = self.to_toml(provider)?;
        let tmp = path.with_extension("rotate.tmp");
        let io = |cause| KeyringError::Io {
            file: tmp.clone(),
            cause,
        };
        let _ = std::fs::remove_file(&tmp);
        write_new(&tmp, &text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn to_toml(
        &self,
        provider: Option<&dyn KeyProvider>,
    ) -> Result<Zeroizing<String>, KeyringError> {
        let mut keys = Vec::new();
        for (id, k) in &self.keys {
            let (key, wrapped) = match provider {
                Some(p) => (None, Some(B64.encode(p.wrap(*id, &k.key)?))),
                None => (Some(Zeroizing::new(B64.encode(k.key.as_ref()))), None),
            };
            keys.push(FileKey {
                id: *id,
                created: k.created.clone(),
                key,
                wrapped,
            });
        }
        let file = File {
            active: self.active,
            wrapped_by: provider.map(|p| p.name()),
            keys,
        };
        let body = Zeroizing::new(toml::to_string(&file).expect("a keyring always serialises"));
        Ok(Zeroizing::new(format!("{PREAMBLE}{}", body.as_str())))
    }
}

/// The keyring file at `path`, parsed; refused when group or others can read it.
fn read_file(path: &Path) -> Result<File, KeyringError> {
    let io = |cause| KeyringError::Io {
        file: path.to_owned(),
        cause,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyringError::Permissions(path.to_owned()));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    toml::from_str(&text).map_err(|e| KeyringError::Invalid {
        file: path.to_owned(),
        problem: format!("not a keyring: {}", e.message()),
    })
}

/// Why one key of the file cannot be read.
enum Unreadable {
    Problem(&'static str),
    Provider(ProviderError),
}

/// The master key an entry holds, or that `provider` unwraps from it.
fn master_key(
    k: &FileKey,
    provider: Option<&dyn KeyProvider>,
) -> Result<Zeroizing<[u8; 32]>, Unreadable> {
    match (&k.key, &k.wrapped, provider) {
        (Some(text), None, None) => {
            let raw = Zeroizing::new(
                B64.decode(text.as_bytes())
                    .map_err(|_| Unreadable::Problem("not base64"))?,
            );
            let key: [u8; 32] =
                (raw.as_slice().try_into()).map_err(|_| Unreadable::Problem("must be 32 bytes"))?;
            Ok(Zeroizing::new(key))
        }
        (None, Some(text), Some(p)) => {
            let wrapped =
                (B64.decode(text.as_bytes())).map_err(|_| Unreadable::Problem("not base64"))?;
            p.unwrap(k.id, &wrapped).map_err(Unreadable::Provider)
        }
        _ => Err(Unreadable::Problem(
            "holds `key` or `wrapped` where the file says the other",
        )),
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

    /// A provider for tests: AES-256-GCM-SIV under a fixed key, the version as AAD.
    struct Fake([u8; 32]);

    impl KeyProvider for Fake {
        fn name(&self) -> String {
            "fake:test".into()
        }

        fn wrap(&self, id: u32, key: &[u8; 32]) -> Result<Vec<u8>, ProviderError> {
            use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
            let cipher = aes_gcm_siv::Aes256GcmSiv::new((&self.0).into());
            let aad = super::super::provider::binding(id);
            let payload = Payload {
                msg: key,
                aad: aad.as_bytes(),
            };
            Ok(cipher
                .encrypt(&[0u8; 12].into(), payload)
                .expect("encrypts"))
        }

        fn unwrap(&self, id: u32, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, ProviderError> {
            use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
            let cipher = aes_gcm_siv::Aes256GcmSiv::new((&self.0).into());
            let aad = super::super::provider::binding(id);
            let payload = Payload {
                msg: wrapped,
                aad: aad.as_bytes(),
            };
            let fail = || ProviderError {
                provider: self.name(),
                problem: format!("key {id} does not unwrap"),
            };
            let plain = cipher
                .decrypt(&[0u8; 12].into(), payload)
                .map_err(|_| fail())?;
            Ok(Zeroizing::new(plain.try_into().map_err(|_| fail())?))
        }
    }

    #[test]
    fn wrapped_keyrings_need_their_provider() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phigate.keys");
        let plain = Keyring::generate(&path).unwrap();
        let fake = Fake([9; 32]);
        // a keyring that holds its keys is refused while a provider is configured
        let e = Keyring::load_with(&path, Some(&fake))
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys wrap"), "{e}");
        Keyring::wrap(&path, &fake).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let key = B64.encode(plain.keys().next().unwrap().1);
        assert!(text.contains("wrapped_by = \"fake:test\"") && !text.contains(&key));
        let e = Keyring::load(&path).unwrap_err().to_string();
        assert!(e.contains("wrapped by fake:test"), "{e}");
        let e = Keyring::load_with(&path, Some(&Fake([8; 32])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not unwrap"), "{e}");
        let rotated = Keyring::rotate_with(&path, Some(&fake)).unwrap();
        let loaded = Keyring::load_with(&path, Some(&fake)).unwrap();
        assert_eq!(loaded.active(), 2);
        assert_eq!(
            loaded.keys().collect::<Vec<_>>(),
            rotated.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            loaded.keys().next().map(|(_, k)| *k),
            plain.keys().next().map(|(_, k)| *k)
        );
        // a wrapped key moved to another version does not unwrap
        let swapped = text
            .replacen("id = 1", "id = 7", 1)
            .replacen("active = 1", "active = 7", 1);
        std::fs::write(&path, swapped).unwrap();
        let e = Keyring::load_with(&path, Some(&fake))
            .unwrap_err()
            .to_string();
        assert!(e.contains("key 7 does not unwrap"), "{e}");
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
