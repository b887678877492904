//! Real-mode subcommands.

pub mod bench;
pub mod consume;
pub mod produce;
pub mod serve;
pub mod topics;
