//! The stored form of an encrypted value:
//! `version u8 = 1 | mode u8 (1 randomized, 2 deterministic) | key_id u32 BE | nonce [12] |
//! AES-256-GCM-SIV ciphertext + 16-byte tag`.

use super::{CryptoError, Mode};

/// Bytes an envelope adds to a plaintext: header, nonce and tag.
pub const ENVELOPE_OVERHEAD: usize = HEADER + NONCE + TAG;
const HEADER: usize = 6;
const NONCE: usize = 12;
const TAG: usize = 16;
const VERSION: u8 = 1;

/// A parsed envelope, borrowing the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// encryption mode
    pub mode: Mode,
    /// keyring version of the master key
    pub key_id: u32,
    /// the AES-GCM-SIV nonce
    pub nonce: [u8; NONCE],
    /// ciphertext followed by the tag
    pub sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Parses stored bytes. This is also the check the database-side domain performs.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CryptoError> {
        if bytes.len() < ENVELOPE_OVERHEAD || bytes[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let mode = Mode::from_byte(bytes[1]).ok_or(CryptoError::Malformed)?;
        let key_id = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        let mut nonce = [0u8; NONCE];
        nonce.copy_from_slice(&bytes[HEADER..HEADER + NONCE]);
        Ok(Self {
            mode,
            key_id,
            nonce,
            sealed: &bytes[HEADER + NONCE..],
        })
    }

    /// Appends the header and nonce; the caller appends the sealed bytes.
    pub(super) fn write_header(mode: Mode, key_id: u32, nonce: &[u8; NONCE], out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(mode.byte());
        out.extend_from_slice(&key_id.to_be_bytes());
        out.extend_from_slice(nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut v = Vec::new();
        Envelope::write_header(Mode::Deterministic, 7, &[9; 12], &mut v);
        v.extend_from_slice(&[1; 16]);
        let e = Envelope::parse(&v).unwrap();
        assert_eq!(
            (e.mode, e.key_id, e.nonce, e.sealed.len()),
            (Mode::Deterministic, 7, [9; 12], 16)
        );
        assert_eq!(
            Envelope::parse(&v[..v.len() - 1]),
            Err(CryptoError::Malformed)
        );
        let mut bad = v.clone();
        bad[0] = 2;
        assert_eq!(Envelope::parse(&bad), Err(CryptoError::Malformed));
        bad = v.clone();
        bad[1] = 3;
        assert_eq!(Envelope::parse(&bad), Err(CryptoError::Malformed));
        assert_eq!(
            Envelope::parse(b"plaintext ssn 999-12-3456"),
            Err(CryptoError::Malformed)
        );
    }
}
