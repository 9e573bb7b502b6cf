//! HMAC-SHA256 from a key: the one place phigate keys one (column nonces and masks, the
//! audit chain and value hashes, SCRAM on both sides, signed session settings).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// HMAC-SHA256 keyed with `key` (any length). Kept and cloned per message, the key's two
/// blocks are hashed once; the state is zeroed when dropped.
pub(crate) fn keyed_hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// HMAC-SHA256(`key`, `msg`).
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = keyed_hmac(key);
    mac.update(msg);
    mac.finalize().into_bytes().into()
}
