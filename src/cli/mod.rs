//! The subcommands of the `phigate` binary that need more than a few lines, one file each.

pub mod demo;
pub mod init;
mod postgres;
mod scaffold;
pub mod synth;
