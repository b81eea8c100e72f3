//! Test support: start the real daemons as child processes on loopback ports,
//! wait for them, kill them with SIGKILL, and (in [`proxy`]) inject network
//! faults between them. Used by `tests/` and the benchmarks; never by the daemons.

pub mod events;
pub mod ledgerd;
pub mod loris;
pub mod powercut;
pub mod process;
pub mod proxy;
pub mod spoold;
pub mod tls;
pub mod tmpfs;

pub use process::{bin_path, find_bin, free_port, wait_http_ok, wait_http_ok_with, DaemonProcess};
