//! phigate's own connections to PostgreSQL: the login a client session's upstream
//! connection makes, and the sessions phigate opens for itself (schema reads, native row
//! security, migrations, the CLI). Used by the proxy, the migration and the CLI alike; it
//! depends on no part of the proxy.

mod connect;
mod pool;
mod row_security;
mod schema;
mod scram;
mod service;
mod target;
pub mod url;

pub use connect::{Connected, UpstreamError, UpstreamTarget, connect, open_stream};
pub use pool::Pool;
pub use row_security::{apply, verify};
pub use schema::{ColumnStatus, LiveSchema};
pub use service::ServiceSession;
pub(crate) use target::service_target;
