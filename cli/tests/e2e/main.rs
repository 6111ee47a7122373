//! End-to-end tests of the real `exec-server` binary over real stdio pipes and real sockets.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod abuse_frames;
mod binary;
mod client;
mod close;
mod cp;
mod deploy;
mod failed_starts;
mod faults;
mod flow;
mod fs;
mod fs_modes;
mod ops;
mod process_options;
mod regressions;
mod retention;
mod run;
mod run_limits;
mod sandbox;
mod scenarios;
mod shutdown_faults;
mod stdio;
mod tls;
mod tty;
mod window_client;
mod ws;
