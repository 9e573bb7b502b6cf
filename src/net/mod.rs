//! Sockets and TLS shared by the proxy's listener and phigate's upstream connections.

pub mod stream;
pub mod tls;
