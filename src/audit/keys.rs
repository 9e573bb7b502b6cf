//! The audit keys: one Ed25519 signing key per instance (a 32-byte seed in a mode-0600
//! file), from which HKDF-SHA256 derives the chain key (record MACs) and the lookup key
//! (keyed hashes of statement values). The public key is written beside it (`.pub`) for
//! verifiers.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{AuditError, unhex};
use crate::crypto::keyed_hmac;

/// The secret audit keys of one instance.
pub struct AuditKeys {
    signing: SigningKey,
    /// HMAC-SHA256 keyed with the chain key (cloned per use)
    chain: Hmac<Sha256>,
    /// HMAC-SHA256 keyed with the lookup key
    lookup: Hmac<Sha256>,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeys")
            .field(
                "public",
                &hex::encode(self.signing.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

/// A verifier's key: the instance's Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads a `.pub` file (64 hex digits).
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(path).map_err(super::io(path))?;
        let bad = |problem: &str| AuditError::Key {
            path: path.to_owned(),
            problem: problem.to_owned(),
        };
        let bytes = unhex::<32>(text.trim()).ok_or_else(|| bad("not a hex Ed25519 public key"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| bad("not a valid Ed25519 public key"))
    }

    /// True when `signature` (hex) signs `message`.
    pub(super) fn verifies(&self, message: &[u8], signature: &str) -> bool {
        unhex::<64>(signature)
            .map(|s| Signature::from_bytes(&s))
            .is_some_and(|s| self.0.verify(message, &s).is_ok())
    }
}

fn derive(seed: &[u8; 32], info: &str) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // HKDF-SHA256 can always produce 32 bytes.
    let _ = Hkdf::<Sha256>::new(None, seed).expand(info.as_bytes(), out.as_mut());
    out
}

impl AuditKeys {
    /// Keys from a seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let keyed = |info| keyed_hmac(derive(seed, info).as_ref());
        Self {
            signing: SigningKey::from_bytes(seed),
            chain: keyed("phigate audit chain v1"),
            lookup: keyed("phigate audit lookup v1"),
        }
    }

    /// Loads the signing key file. A key file that group or others can read is refused.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let bad = |problem: &str| AuditError::Key {
            path: path.to_owned(),
            problem: problem.to_owned(),
        };
        let meta = std::fs::metadata(path).map_err(super::io(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(
                "readable by group or others; chmod 600 it (the key may have leaked)",
            ));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(super::io(path))?);
        let seed =
            Zeroizing::new(unhex::<32>(text.trim()).ok_or_else(|| bad("not a 32-byte hex seed"))?);
        Ok(Self::from_seed(&seed))
    }

    /// Loads the signing key file, creating it (and its `.pub`) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        match std::fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed = Zeroizing::new(rand::rng().random::<[u8; 32]>());
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(super::io(dir))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(super::io(path))?;
                f.write_all(format!("{}\n", hex::encode(seed.as_ref())).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(super::io(path))?;
                let keys = Self::from_seed(&seed);
                let public = public_path(path);
                std::fs::write(
                    &public,
                    format!("{}\n", hex::encode(keys.public_bytes().as_ref())),
                )
                .map_err(super::io(public))?;
                Ok(keys)
            }
            Err(e) => Err(super::io(path)(e)),
        }
    }

    fn public_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The public key verifiers use.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// HMAC-SHA256 under the chain key of `prev || line`.
    pub(super) fn mac(&self, prev: &[u8; 32], line: &[u8]) -> [u8; 32] {
        let mut m = self.chain.clone();
        m.update(prev);
        m.update(line);
        m.finalize().into_bytes().into()
    }

    /// Signs a checkpoint message; hex.
    pub(super) fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.signing.sign(message).to_bytes())
    }

    /// The keyed hash under which a statement value is recorded (hex): equal values give
    /// equal hashes, so `audit search --value` finds them, and nothing reveals the value.
    pub fn value_hash(&self, value: &[u8]) -> String {
        let mut m = self.lookup.clone();
        m.update(value);
        super::to_hex(&m.finalize().into_bytes()[..16])
    }
}

/// The public key file beside a signing key file.
pub(crate) fn public_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}
