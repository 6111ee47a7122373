//! The `exec-server` binary.

fn main() {
    eprintln!("exec-server: serving is not implemented yet");
    std::process::exit(2);
}
