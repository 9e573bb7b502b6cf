//! The subcommands of the `phigate` binary, one file each; `main.rs` parses the command
//! line and dispatches here.

pub mod audit;
pub mod check;
pub mod demo;
pub mod encrypt_existing;
pub mod init;
pub mod keys;
pub mod policies;
mod postgres;
mod scaffold;
pub mod serve;
pub mod synth;
pub mod user;
