//! The subcommands of the `whorl` binary, one file each.

pub(crate) mod analyze;
pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod device;
pub(crate) mod info;
pub(crate) mod stop_signal;
pub(crate) mod synth;
pub(crate) mod train;
