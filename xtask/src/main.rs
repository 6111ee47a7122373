//! `cargo xtask`: schema generation and drift check, ci, bench.

fn main() {}
