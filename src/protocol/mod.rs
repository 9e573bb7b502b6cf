//! PostgreSQL wire protocol (v3) glue: framing, checked decoding of the messages phigate
//! inspects, and encoding of the messages phigate itself sends.
//!
//! Everything here is pure: bytes in, values or bytes out. Sockets live in [`crate::server`] and
//! [`crate::upstream`].
//!
//! pgwire encodes the messages phigate produces. Untrusted input is decoded with our own
//! bounds-checked `reader::Reader`: pgwire 0.42's decoders index without length checks and
//! panic on truncated bodies, which a proxy facing the network cannot afford.

pub mod backend;
pub(crate) mod build;
pub mod copy;
pub(crate) mod copy_binary;
mod datestyle;
mod datetime;
pub(crate) mod encoding;
pub mod frame;
pub mod message;
mod reader;
pub mod startup;
pub mod value;
pub mod zone;

use thiserror::Error;

/// A violation of the wire protocol by a peer. Always answered with SQLSTATE 08P01 and the
/// end of the connection.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The length field announces more than the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// announced length
        len: usize,
        /// configured limit
        limit: usize,
    },
    /// The length field is smaller than the length field itself.
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// A body ended before its fields did, or a field holds an impossible value.
    #[error("malformed {what} message")]
    Malformed {
        /// the message kind
        what: &'static str,
    },
    /// A message type the protocol does not define in this direction or state.
    #[error("unexpected message type '{}' (0x{:02x})", char::from(*.0), .0)]
    UnexpectedType(u8),
}
