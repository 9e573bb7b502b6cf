//! Encrypting and decrypting the values of one column or deterministic domain.

use aes_gcm_siv::aead::{Aead, AeadInOut, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::CryptoError;
use super::envelope::Envelope;
use super::keyring::Keyring;
use super::mac::keyed_hmac;

/// How a column is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// random nonce: equal plaintexts give different ciphertexts; no search
    Randomized,
    /// nonce derived from the plaintext: equal plaintexts give equal ciphertexts within
    /// the column or domain, so `=`, `IN`, joins and unique indexes work on ciphertext
    Deterministic,
}

impl Mode {
    pub(super) fn byte(self) -> u8 {
        match self {
            Mode::Randomized => 1,
            Mode::Deterministic => 2,
        }
    }

    pub(super) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Mode::Randomized),
            2 => Some(Mode::Deterministic),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Randomized => "randomized",
            Mode::Deterministic => "deterministic",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The keys of one column under one master key.
struct ColumnKeys {
    /// the master key's id
    id: u32,
    aead: Aes256GcmSiv,
    /// HMAC-SHA256 keyed for deterministic nonces (a separate subkey: no key serves two
    /// primitives)
    nonce_mac: Hmac<Sha256>,
}

/// The first `N` bytes of `mac` over `data`.
fn mac_prefix<const N: usize>(mac: &Hmac<Sha256>, data: &[u8]) -> [u8; N] {
    let mut mac = mac.clone();
    mac.update(data);
    let tag = mac.finalize().into_bytes();
    let mut out = [0u8; N];
    out.copy_from_slice(&tag[..N]);
    out
}

/// Encrypts with the active master key and decrypts with any key of the ring, for one
/// column (or deterministic domain) identified by its AAD. Data keys are derived once, at
/// construction: `HKDF-SHA256(master[key_id], info = mode ":" AAD)` gives 64 bytes, the
/// AES-256-GCM-SIV key and the HMAC-SHA256 nonce key.
pub struct ColumnCipher {
    mode: Mode,
    aad: Vec<u8>,
    active: u32,
    /// per master key of the ring (a ring holds a few: a linear search)
    keys: Vec<ColumnKeys>,
    /// HMAC for `mask:hash`, keyed from the oldest master key so that a value masks the
    /// same way across key rotations
    mask: Hmac<Sha256>,
}

impl std::fmt::Debug for ColumnCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnCipher")
            .field("mode", &self.mode)
            .field("aad", &String::from_utf8_lossy(&self.aad))
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl ColumnCipher {
    /// Derives the column's keys from every master key in `keyring`.
    pub fn new(keyring: &Keyring, mode: Mode, aad: &str) -> Self {
        let info = format!("{}:{aad}", mode.label());
        let keys = keyring
            .keys()
            .map(|(id, master)| {
                let mut okm = Zeroizing::new([0u8; 64]);
                Hkdf::<Sha256>::new(None, master)
                    .expand(info.as_bytes(), okm.as_mut())
                    .expect("64 bytes is a valid HKDF-SHA256 output length");
                ColumnKeys {
                    id,
                    aead: Aes256GcmSiv::new_from_slice(&okm[..32]).expect("32-byte AES-256 key"),
                    nonce_mac: keyed_hmac(&okm[32..]),
                }
            })
            .collect();
        let mut mask_key = Zeroizing::new([0u8; 32]);
        if let Some((_, master)) = keyring.keys().min_by_key(|(id, _)| *id) {
            Hkdf::<Sha256>::new(None, master)
                .expand(format!("mask:{aad}").as_bytes(), mask_key.as_mut())
                .expect("32 bytes is a valid HKDF-SHA256 output length");
        }
        Self {
            mode,
            aad: aad.as_bytes().to_vec(),
            active: keyring.active(),
            keys,
            mask: keyed_hmac(mask_key.as_ref()),
        }
    }

    /// A keyed hash of a canonical plaintext for `mask:hash` reads: equal values give equal
    /// hashes within the column (or domain); without the key nothing about the value shows.
    pub(crate) fn mask_hash(&self, plaintext: &[u8]) -> [u8; 16] {
        mac_prefix(&self.mask, plaintext)
    }

    /// The column's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Encrypts a canonical plaintext into an envelope, with the active key.
    /// The envelope is built in one buffer: header, then the plaintext encrypted in place,
    /// then the tag.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let keys = self
            .keys(self.active)
            .expect("a keyring holds its active key");
        let nonce: [u8; 12] = match self.mode {
            Mode::Randomized => rand::rng().random(),
            Mode::Deterministic => mac_prefix(&keys.nonce_mac, plaintext),
        };
        let mut out = Vec::with_capacity(plaintext.len() + super::ENVELOPE_OVERHEAD);
        Envelope::write_header(self.mode, self.active, &nonce, &mut out);
        let at = out.len();
        out.extend_from_slice(plaintext);
        let tag = keys
            .aead
            .encrypt_inout_detached(&Nonce::from(nonce), &self.aad, (&mut out[at..]).into())
            .expect("AES-GCM-SIV seals any value PostgreSQL can hold (limit 2^36 bytes)");
        out.extend_from_slice(&tag);
        out
    }

    /// The column's keys under master key `id`.
    fn keys(&self, id: u32) -> Option<&ColumnKeys> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Decrypts a stored envelope. Fails for another column's ciphertext, a tampered one,
    /// or one made with a key the ring does not hold.
    pub fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let env = Envelope::parse(stored)?;
        if env.mode != self.mode {
            return Err(CryptoError::WrongMode {
                expected: self.mode,
                found: env.mode,
            });
        }
        let keys = self
            .keys(env.key_id)
            .ok_or(CryptoError::UnknownKey(env.key_id))?;
        keys.aead
            .decrypt(
                &Nonce::from(env.nonce),
                Payload {
                    msg: env.sealed,
                    aad: &self.aad,
                },
            )
            .map_err(|_| CryptoError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{column_aad, domain_aad};

    fn ring() -> Keyring {
        Keyring::from_keys(1, vec![(1, [7u8; 32])])
    }

    #[test]
    fn round_trips_in_both_modes() {
        let ring = ring();
        for mode in [Mode::Randomized, Mode::Deterministic] {
            let c = ColumnCipher::new(
                &ring,
                mode,
                &column_aad("public", "patients", "ssn", "text"),
            );
            for value in [&b""[..], b"999-12-3456", &[0u8; 1024]] {
                let sealed = c.encrypt(value);
                assert_eq!(sealed.len(), value.len() + crate::crypto::ENVELOPE_OVERHEAD);
                assert_eq!(c.decrypt(&sealed).unwrap(), value);
                if !value.is_empty() {
                    assert!(
                        !sealed.windows(value.len()).any(|w| w == value),
                        "plaintext visible"
                    );
                }
            }
        }
    }

    /// Stored deterministic ciphertexts and mask hashes must never change: equality
    /// lookups and unique indexes compare them with what was written years ago.
    #[test]
    fn deterministic_ciphertexts_and_mask_hashes_are_fixed() {
        let ring = Keyring::from_keys(1, vec![(1, [7u8; 32])]);
        let c = ColumnCipher::new(
            &ring,
            Mode::Deterministic,
            "phigate/v1/public.patients.ssn/text",
        );
        assert_eq!(
            hex::encode(c.encrypt(b"999-12-3456")),
            "010200000001ab5ee2fc65394e4448998ae54fa7dd526c4f9f90c323eee0e25892968a535e2afb2a39fd513247"
        );
        assert_eq!(
            hex::encode(c.mask_hash(b"999-12-3456")),
            "b4d55fb8073554e46425b8e4d576377b"
        );
    }

    #[test]
    fn deterministic_is_stable_randomized_is_not() {
        let ring = ring();
        let d = ColumnCipher::new(&ring, Mode::Deterministic, &domain_aad("ssn", "text"));
        assert_eq!(d.encrypt(b"999-12-3456"), d.encrypt(b"999-12-3456"));
        assert_ne!(d.encrypt(b"999-12-3456"), d.encrypt(b"999-12-3457"));
        let r = ColumnCipher::new(&ring, Mode::Randomized, &domain_aad("ssn", "text"));
        assert_ne!(r.encrypt(b"999-12-3456"), r.encrypt(b"999-12-3456"));
    }

    #[test]
    fn a_ciphertext_copied_into_another_column_fails() {
        let ring = ring();
        let ssn = ColumnCipher::new(
            &ring,
            Mode::Deterministic,
            &column_aad("public", "patients", "ssn", "text"),
        );
        let mrn = ColumnCipher::new(
            &ring,
            Mode::Deterministic,
            &column_aad("public", "patients", "mrn", "text"),
        );
        let sealed = ssn.encrypt(b"999-12-3456");
        assert_eq!(mrn.decrypt(&sealed), Err(CryptoError::Authentication));
        // Same column, other logical type: also bound.
        let as_int = ColumnCipher::new(
            &ring,
            Mode::Deterministic,
            &column_aad("public", "patients", "ssn", "int8"),
        );
        assert_eq!(as_int.decrypt(&sealed), Err(CryptoError::Authentication));
        let random = ColumnCipher::new(
            &ring,
            Mode::Randomized,
            &column_aad("public", "patients", "ssn", "text"),
        );
        assert!(matches!(
            random.decrypt(&sealed),
            Err(CryptoError::WrongMode { .. })
        ));
    }

    #[test]
    fn tampering_and_unknown_keys_are_detected() {
        let ring = ring();
        let c = ColumnCipher::new(&ring, Mode::Randomized, "aad");
        let sealed = c.encrypt(b"value");
        for i in 6..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert_eq!(c.decrypt(&t), Err(CryptoError::Authentication), "byte {i}");
        }
        let mut other_key = sealed.clone();
        other_key[5] = 9;
        assert_eq!(c.decrypt(&other_key), Err(CryptoError::UnknownKey(9)));
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = Keyring::from_keys(1, vec![(1, [1u8; 32])]);
        let sealed = ColumnCipher::new(&old, Mode::Deterministic, "aad").encrypt(b"v");
        let rotated = Keyring::from_keys(2, vec![(1, [1u8; 32]), (2, [2u8; 32])]);
        let c = ColumnCipher::new(&rotated, Mode::Deterministic, "aad");
        assert_eq!(c.decrypt(&sealed).unwrap(), b"v");
        let key = |stored: &[u8]| Envelope::parse(stored).map(|e| e.key_id);
        assert_eq!(key(&sealed), Ok(1));
        let resealed = c.encrypt(b"v");
        assert_eq!(key(&resealed), Ok(2));
        assert_ne!(resealed, sealed, "new writes use the new key");
    }
}
