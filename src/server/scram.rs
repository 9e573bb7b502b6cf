//! The server side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677, channel
//! binding `tls-server-end-point` of RFC 5929) as PostgreSQL speaks them, without I/O.

use crate::crypto::hmac_sha256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
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

/// Channel binding, as the server offered it.
#[derive(Debug, Clone, Copy)]
pub enum Channel<'a> {
    /// not offered (a connection without TLS): clients send `n` or `y`
    Unavailable,
    /// offered (TLS): the `tls-server-end-point` data, and whether the client chose
    /// SCRAM-SHA-256-PLUS
    Offered {
        /// the hash of the server's certificate
        data: &'a [u8],
        /// the client chose the -PLUS mechanism
        plus: bool,
    },
}

/// The bytes the client's `c=` attribute must carry: the GS2 header, and with binding
/// the channel's data.
fn expected_binding(cb_flag: &str, channel: Channel<'_>) -> Result<Vec<u8>, ScramError> {
    let header = format!("{cb_flag},,").into_bytes();
    match (cb_flag, channel) {
        ("n", Channel::Unavailable | Channel::Offered { plus: false, .. }) => Ok(header),
        ("y", Channel::Unavailable) => Ok(header),
        // the client can bind and the server offered it: a man in the middle removed
        // the offer
        ("y", Channel::Offered { plus: false, .. }) => Err(ScramError::Malformed(
            "channel binding downgrade (y with the offer made)",
        )),
        ("p=tls-server-end-point", Channel::Offered { data, plus: true }) => {
            Ok([header.as_slice(), data].concat())
        }
        (_, Channel::Offered { plus: true, .. }) => Err(ScramError::Malformed(
            "SCRAM-SHA-256-PLUS needs channel binding type tls-server-end-point",
        )),
        _ => Err(ScramError::Malformed("channel binding was not offered")),
    }
}

/// An exchange after the server-first message.
pub struct ScramExchange {
    verifier: ScramVerifier,
    /// what the client's `c=` attribute must decode to
    binding: Vec<u8>,
    nonce: String,
    /// client-first-bare "," server-first
    auth_prefix: String,
}

impl ScramExchange {
    /// Handles client-first-message; returns the exchange and the server-first-message.
    /// `server_nonce` must be fresh, random and printable (no commas).
    pub fn start(
        verifier: ScramVerifier,
        client_first: &[u8],
        server_nonce: &str,
        channel: Channel<'_>,
    ) -> Result<(Self, String), ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (cb_flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let binding = expected_binding(cb_flag, channel)?;
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
            binding,
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
        if B64.decode(binding).ok().as_deref() != Some(self.binding.as_slice()) {
            return Err(ScramError::Malformed(
                "channel binding does not match the GS2 header and the channel",
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
        let client_signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
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
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// A verifier for a user that does not exist: the exchange runs as for a real user (same
/// salt every time, so probing cannot tell) and always fails with [`ScramError::BadProof`].
pub(crate) fn decoy_verifier(instance_secret: &[u8], user: &str) -> ScramVerifier {
    let salt = hmac_sha256(instance_secret, user.as_bytes())[..16].to_vec();
    ScramVerifier {
        iterations: 4096,
        salt,
        stored_key: hmac_sha256(instance_secret, b"decoy stored key"),
        server_key: hmac_sha256(instance_secret, b"decoy server key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(password: &[u8], verifier: &ScramVerifier) -> Result<(), ScramError> {
        bound(
            password,
            verifier,
            ChannelBinding::unrequested(),
            Channel::Unavailable,
        )
    }

    /// One exchange with postgres-protocol's client binding `client`, the server
    /// offering `channel`.
    fn bound(
        password: &[u8],
        verifier: &ScramVerifier,
        client: ChannelBinding,
        channel: Channel<'_>,
    ) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password, client);
        let (exchange, server_first) =
            ScramExchange::start(verifier.clone(), client.message(), "snonce", channel)?;
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
    fn channel_binding_holds_only_on_the_same_channel() {
        let v: ScramVerifier = postgres_protocol::password::scram_sha_256(b"pw")
            .parse()
            .unwrap();
        let data = [7u8; 32];
        let plus = Channel::Offered {
            data: &data,
            plus: true,
        };
        let end_point = |d: &[u8]| ChannelBinding::tls_server_end_point(d.to_vec());
        assert_eq!(bound(b"pw", &v, end_point(&data), plus), Ok(()));
        // a man in the middle terminating TLS: the client saw another certificate
        assert!(bound(b"pw", &v, end_point(&[8u8; 32]), plus).is_err());
        // SCRAM-SHA-256 on TLS: `n` (cannot bind) is fine, `y` (could have) is a downgrade
        let offered = Channel::Offered {
            data: &data,
            plus: false,
        };
        assert_eq!(
            bound(b"pw", &v, ChannelBinding::unsupported(), offered),
            Ok(())
        );
        assert!(bound(b"pw", &v, ChannelBinding::unrequested(), offered).is_err());
        // -PLUS chosen without binding, or binding without -PLUS
        assert!(bound(b"pw", &v, ChannelBinding::unsupported(), plus).is_err());
        assert!(bound(b"pw", &v, end_point(&data), offered).is_err());
        assert!(bound(b"pw", &v, end_point(&data), Channel::Unavailable).is_err());
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
                ScramExchange::start(v.clone(), first, "s", Channel::Unavailable).is_err(),
                "{first:?}"
            );
        }
        let (ex, _) =
            ScramExchange::start(v.clone(), b"n,,n=,r=abc", "s", Channel::Unavailable).unwrap();
        assert_eq!(
            ex.finish(b"c=biws,r=abcs"),
            Err(ScramError::Malformed("no proof"))
        );
        let (ex, _) = ScramExchange::start(v, b"n,,n=,r=abc", "s", Channel::Unavailable).unwrap();
        assert_eq!(
            ex.finish(b"c=biws,r=other,p=AAAA"),
            Err(ScramError::Malformed("nonce mismatch"))
        );
    }
}
