//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, without
//! I/O. Channel binding is not offered, so clients send `n,,` or `y,,`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::policy::ScramVerifier;

/// Why an exchange failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    /// A client message does not follow the SCRAM grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The proof does not match the verifier: wrong password (or unknown user).
    #[error("password authentication failed")]
    BadProof,
}

/// An exchange after the server-first message.
pub struct ScramExchange {
    verifier: ScramVerifier,
    gs2_header: String,
    nonce: String,
    /// client-first-bare "," server-first
    auth_prefix: String,
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

impl ScramExchange {
    /// Handles client-first-message; returns the exchange and the server-first-message.
    /// `server_nonce` must be fresh, random and printable (no commas).
    pub fn start(
        verifier: ScramVerifier,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(Self, String), ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (cb_flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if !matches!(cb_flag, "n" | "y") {
            return Err(ScramError::Malformed("channel binding was not offered"));
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identities are not supported",
            ));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("no client nonce"))?;
        if bare.starts_with("m=") {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = Self {
            verifier,
            gs2_header: format!("{cb_flag},{authzid},"),
            nonce,
            auth_prefix: format!("{bare},{server_first}"),
        };
        Ok((exchange, server_first))
    }

    /// Handles client-final-message; returns the server-final-message when the proof holds.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding attribute"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed(
                "channel binding does not match the GS2 header",
            ));
        }
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof is not 32 bytes of base64"))?;
        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature))
        {
            *k = p ^ s;
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        if !bool::from(stored_key.ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// A verifier for a user that does not exist: the exchange runs as for a real user (same
/// salt every time, so probing cannot tell) and always fails with [`ScramError::BadProof`].
pub(crate) fn decoy_verifier(instance_secret: &[u8], user: &str) -> ScramVerifier {
    let salt = hmac(instance_secret, user.as_bytes())[..16].to_vec();
    ScramVerifier {
        iterations: 4096,
        salt,
        stored_key: hmac(instance_secret, b"decoy stored key"),
        server_key: hmac(instance_secret, b"decoy server key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(password: &[u8], verifier: &ScramVerifier) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password, ChannelBinding::unrequested());
        let (exchange, server_first) =
            ScramExchange::start(verifier.clone(), client.message(), "snonce")?;
        client
            .update(server_first.as_bytes())
            .expect("client accepts server-first");
        let server_final = exchange.finish(client.message())?;
        client
            .finish(server_final.as_bytes())
            .expect("client verifies the server");
        Ok(())
    }

    #[test]
    fn postgres_protocol_client_authenticates() {
        let v: ScramVerifier = postgres_protocol::password::scram_sha_256(b"right")
            .parse()
            .unwrap();
        assert_eq!(run(b"right", &v), Ok(()));
        assert_eq!(run(b"wrong", &v), Err(ScramError::BadProof));
    }

    #[test]
    fn decoy_always_fails_with_a_stable_salt() {
        let a = decoy_verifier(b"k", "nobody");
        assert_eq!(a.salt, decoy_verifier(b"k", "nobody").salt);
        assert_ne!(a.salt, decoy_verifier(b"k", "other").salt);
        assert_eq!(run(b"", &a), Err(ScramError::BadProof));
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let v: ScramVerifier = postgres_protocol::password::scram_sha_256(b"pw")
            .parse()
            .unwrap();
        for first in [
            &b"p=tls-server-end-point,,n=,r=abc"[..],
            b"n,,n=",
            b"garbage",
            b"n,a=admin,n=,r=x",
            b"\xff",
        ] {
            assert!(
                ScramExchange::start(v.clone(), first, "s").is_err(),
                "{first:?}"
            );
        }
        let (ex, _) = ScramExchange::start(v.clone(), b"n,,n=,r=abc", "s").unwrap();
        assert_eq!(
            ex.finish(b"c=biws,r=abcs"),
            Err(ScramError::Malformed("no proof"))
        );
        let (ex, _) = ScramExchange::start(v, b"n,,n=,r=abc", "s").unwrap();
        assert_eq!(
            ex.finish(b"c=biws,r=other,p=AAAA"),
            Err(ScramError::Malformed("nonce mismatch"))
        );
    }
}
