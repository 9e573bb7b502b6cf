//! phigate: an encrypting, policy-enforcing, auditing PostgreSQL proxy for healthcare data.
//!
//! Where things happen, by module:
//! - [`protocol`]: wire-protocol framing, checked decoding, encoding (pure)
//! - [`session`]: the per-connection state machine between client and server (pure): where
//!   bound parameters are encrypted and result rows (and COPY data) decrypted
//! - [`sql`]: statement analysis and rewriting (pure): where literals are encrypted and
//!   what phigate cannot run correctly on ciphertext is refused
//! - [`crypto`]: keyring, value envelope, randomized and deterministic column encryption (pure)
//! - [`migrate`]: `encrypt-existing`, converting live plaintext columns in batches
//! - [`server`]: the proxy: listener, client authentication, session I/O, cancel
//! - [`upstream`]: phigate's own connections to PostgreSQL (login, service sessions,
//!   live schema, native row security), used by the proxy, the migration and the CLI
//! - `net` (internal): sockets and TLS shared by both
//! - [`policy`]: the users and roles declared under `policies/`
//! - [`config`]: `phigate.toml` and `PHIGATE_*` overrides
//! - [`metrics`]: the Prometheus registry and the admin HTTP endpoint

#![warn(missing_docs)]

pub mod audit;
pub mod config;
pub mod crypto;
pub mod encryption;
pub mod metrics;
pub mod migrate;
mod net;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod session;
pub mod sql;
pub mod synth;
pub mod upstream;
