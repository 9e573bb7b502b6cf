//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) for phigate's own logins to
//! PostgreSQL, without I/O. The salted password (PBKDF2 over the server's salt, 4,096 rounds
//! by default: nearly all the CPU of a login) is kept per server salt and iteration count in
//! a [`SaltCache`], so a connection storm derives it once instead of once per connection.

use std::sync::Mutex;

use crate::crypto::hmac_sha256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The most PBKDF2 rounds phigate accepts from a server (a hostile server could otherwise
/// make each login burn seconds of CPU).
const MAX_ITERATIONS: u32 = 100_000;

/// Why the exchange failed (never carries the password or a key).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScramFailure(pub &'static str);

/// A salted password and the server salt and iteration count it was derived for.
type Salted = (Vec<u8>, u32, Zeroizing<[u8; 32]>);

/// A salted password, for the one (salt, iterations) the server last used.
#[derive(Default)]
pub(crate) struct SaltCache(Mutex<Option<Salted>>);

impl SaltCache {
    /// The salted password for `salt` and `iterations`, derived only when the server's
    /// salt or count changed (a new password, another server).
    fn salted(&self, password: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
        let mut cached = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((s, i, salted)) = cached.as_ref()
            && s == salt
            && *i == iterations
        {
            return salted.clone();
        }
        let mut salted = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, salted.as_mut());
        *cached = Some((salt.to_vec(), iterations, salted.clone()));
        salted
    }
}

impl std::fmt::Debug for SaltCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaltCache")
    }
}

/// One client exchange.
pub(crate) struct ScramClient {
    password: Zeroizing<Vec<u8>>,
    nonce: String,
    /// after the client-final message: the ServerSignature the server must send back
    expected: Option<[u8; 32]>,
}

impl ScramClient {
    /// A new exchange for `password` (normalised with SASLprep, as PostgreSQL does).
    pub(crate) fn new(password: &str) -> Self {
        let password = match stringprep::saslprep(password) {
            Ok(p) => p.into_owned().into_bytes(),
            Err(_) => password.as_bytes().to_vec(),
        };
        let raw: [u8; 18] = rand::random();
        Self {
            password: Zeroizing::new(password),
            nonce: B64.encode(raw),
            expected: None,
        }
    }

    /// The client-first message (no channel binding, user name taken from the startup).
    pub(crate) fn first(&self) -> String {
        format!("n,,n=,r={}", self.nonce)
    }

    /// The client-final message answering `server_first`.
    pub(crate) fn respond(
        &mut self,
        server_first: &[u8],
        cache: &SaltCache,
    ) -> Result<String, ScramFailure> {
        let msg = std::str::from_utf8(server_first).map_err(|_| ScramFailure("not UTF-8"))?;
        let mut parts = msg.split(',');
        let (Some(r), Some(s), Some(i)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ScramFailure("malformed server-first message"));
        };
        let nonce = r.strip_prefix("r=").ok_or(ScramFailure("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramFailure("the server's nonce does not extend ours"));
        }
        let salt = s
            .strip_prefix("s=")
            .and_then(|s| B64.decode(s).ok())
            .ok_or(ScramFailure("no salt"))?;
        let iterations = i
            .strip_prefix("i=")
            .and_then(|i| i.parse::<u32>().ok())
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or(ScramFailure("no acceptable iteration count"))?;
        let salted = cache.salted(&self.password, &salt, iterations);
        let client_key = hmac_sha256(salted.as_ref(), b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("n=,r={},{msg},{without_proof}", self.nonce);
        let signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac_sha256(salted.as_ref(), b"Server Key");
        self.expected = Some(hmac_sha256(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server proves it knows the verifier.
    pub(crate) fn finish(&self, server_final: &[u8]) -> Result<(), ScramFailure> {
        let msg = std::str::from_utf8(server_final).map_err(|_| ScramFailure("not UTF-8"))?;
        if msg.starts_with("e=") {
            return Err(ScramFailure("the server refused the proof"));
        }
        let got = msg
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.split(',').next().unwrap_or_default()).ok())
            .ok_or(ScramFailure("malformed server-final message"))?;
        let expected = self
            .expected
            .ok_or(ScramFailure("server-final out of order"))?;
        match bool::from(got.ct_eq(&expected)) {
            true => Ok(()),
            false => Err(ScramFailure("the server's signature does not match")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ScramVerifier;
    // phigate's own server side, as an independent implementation to log in against
    use crate::server::scram::ScramExchange as exchange;

    fn verifier(password: &[u8]) -> ScramVerifier {
        postgres_protocol::password::scram_sha_256(password)
            .parse()
            .expect("verifier")
    }

    /// phigate's server side, started by `client`'s first message (password "s3cret").
    fn server_start(client: &ScramClient) -> (exchange, String) {
        exchange::start(
            verifier(b"s3cret"),
            client.first().as_bytes(),
            "xyz",
            crate::server::scram::Channel::Unavailable,
        )
        .expect("start")
    }

    #[test]
    fn logs_in_against_phigates_own_server_side_and_caches_the_salted_password() {
        let cache = SaltCache::default();
        for _ in 0..2 {
            let mut client = ScramClient::new("s3cret");
            let (server, server_first) = server_start(&client);
            let client_final = client
                .respond(server_first.as_bytes(), &cache)
                .expect("respond");
            let server_final = server
                .finish(client_final.as_bytes())
                .expect("proof accepted");
            client
                .finish(server_final.as_bytes())
                .expect("server verified");
        }
        assert!(cache.0.lock().expect("lock").is_some());
        // a wrong password is refused by the server; a forged server signature by the client
        let mut client = ScramClient::new("wrong");
        let (server, first) = server_start(&client);
        let client_final = client
            .respond(first.as_bytes(), &SaltCache::default())
            .expect("respond");
        assert!(server.finish(client_final.as_bytes()).is_err());
        assert!(client.finish(b"v=AAAA").is_err());
    }

    #[test]
    fn hostile_server_messages_are_refused() {
        let mut client = ScramClient::new("pw");
        let cache = SaltCache::default();
        for bad in [
            &b"r=other,s=c2FsdA==,i=4096"[..],
            b"r=,s=c2FsdA==,i=4096",
            b"garbage",
            b"\xff\xfe",
        ] {
            assert!(client.respond(bad, &cache).is_err(), "{bad:?}");
        }
        let too_many = format!("r={}x,s=c2FsdA==,i=100000000", client.nonce);
        assert!(client.respond(too_many.as_bytes(), &cache).is_err());
    }
}
