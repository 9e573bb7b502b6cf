//! Key providers: what protects the master keys at rest. With none, the keyring file holds
//! them (mode 0600). With a provider, it holds each key wrapped by a key-encryption key
//! the provider keeps (in an HSM, a KMS), and phigate unwraps them in memory at start-up
//! and on reload; the file alone decrypts nothing.
//!
//! A provider only wraps and unwraps 32-byte keys, bound to their keyring version so a
//! wrapped key cannot be moved to another version. A cloud KMS (AWS KMS `Encrypt` and
//! `Decrypt` with an encryption context, Google Cloud KMS, Azure Key Vault `wrapKey`) or
//! Vault Transit (`encrypt`/`decrypt` with a context) is one more implementation of
//! [`KeyProvider`] and one more `[keys.*]` section; see docs/KEYS.md.

use thiserror::Error;
use zeroize::Zeroizing;

/// A provider that cannot wrap or unwrap. Never contains key material or the PIN.
#[derive(Debug, Error)]
#[error("{provider}: {problem}")]
pub struct ProviderError {
    /// the provider (`pkcs11:<token>/<key label>`)
    pub provider: String,
    /// what went wrong, and what to do
    pub problem: String,
}

/// Protects master keys at rest: wraps them for the keyring file, unwraps them from it.
pub trait KeyProvider {
    /// What the keyring file records as its wrapper (`pkcs11:<token>/<key label>`).
    fn name(&self) -> String;

    /// Master key `key` of version `id`, wrapped.
    fn wrap(&self, id: u32, key: &[u8; 32]) -> Result<Vec<u8>, ProviderError>;

    /// The master key of version `id` that `wrapped` holds.
    fn unwrap(&self, id: u32, wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, ProviderError>;
}

/// The additional authenticated data binding a wrapped key to its version.
pub(crate) fn binding(id: u32) -> String {
    format!("phigate/v1/keyring/{id}")
}
