//! Column encryption: the versioned keyring, the value envelope, and the randomized and
//! deterministic modes (DESIGN section 5). Pure: bytes in, bytes out; no I/O except loading
//! and writing the keyring file, and the key provider (a PKCS#11 token) that may wrap its
//! keys.
//!
//! Primitives come from RustCrypto: AES-256-GCM-SIV (`aes-gcm-siv`), HKDF-SHA256 (`hkdf`),
//! HMAC-SHA256 (`hmac`; keyed in `mac`, which the audit log, SCRAM and signed settings
//! use too). Nothing here implements a primitive.

mod cipher;
mod envelope;
mod keyring;
mod mac;
mod pkcs11;
mod provider;

pub use cipher::{ColumnCipher, Mode};
pub use envelope::{ENVELOPE_OVERHEAD, Envelope};
pub use keyring::{Keyring, KeyringError};
pub(crate) use mac::{hmac_sha256, keyed_hmac};
pub use pkcs11::{Token, TokenConfig};
pub use provider::{KeyProvider, ProviderError};

use thiserror::Error;

/// Why a value could not be decrypted. Messages never contain values or key material.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The stored bytes are not a phigate envelope.
    #[error("not a phigate envelope (wrong version, mode or length)")]
    Malformed,
    /// The envelope names a key the keyring does not hold.
    #[error("the value was encrypted with key {0}, which the keyring does not hold")]
    UnknownKey(u32),
    /// The envelope was made in the other mode than the column's.
    #[error("the value was encrypted in {found} mode but the column is {expected}")]
    WrongMode {
        /// the column's mode
        expected: Mode,
        /// the envelope's mode
        found: Mode,
    },
    /// Authentication failed: the ciphertext was altered, or belongs to another column or
    /// domain (the AAD binds it to its column).
    #[error(
        "the value does not authenticate for this column (altered, or copied from another column)"
    )]
    Authentication,
}

/// Loads the keyring at `path`, its keys unwrapped by the token `token` names (if any).
pub fn load_keyring(
    path: &std::path::Path,
    token: Option<&TokenConfig>,
) -> Result<Keyring, KeyringError> {
    match token {
        Some(config) => {
            let (token, _) = Token::open(config, false)?;
            Keyring::load_with(path, Some(&token))
        }
        None => Keyring::load(path),
    }
}

/// SQL creating the `phigate_encrypted` domain (idempotent): `bytea` whose CHECK accepts
/// only a well-formed envelope. Protected columns are declared with it.
pub const BACKSTOP_SQL: &str = include_str!("../../sql/phigate_encrypted.sql");

/// The AAD of a protected column: binds each ciphertext to its column and logical type.
pub fn column_aad(schema: &str, table: &str, column: &str, logical_type: &str) -> String {
    format!("phigate/v1/{schema}.{table}.{column}/{logical_type}")
}

/// The AAD of a deterministic domain shared by several columns (so they join on ciphertext).
pub fn domain_aad(domain: &str, logical_type: &str) -> String {
    format!("phigate/v1/domain:{domain}/{logical_type}")
}
