//! Runs one command and prints its output and exit code, through either backend:
//!
//! ```text
//! cargo run -p exec-server-client --example run_command -- 'ws://127.0.0.1:41641/?token=…' sh -c 'echo hi; exit 3'
//! cargo run -p exec-server-client --example run_command -- local uname -a
//! ```
//!
//! The code after choosing the backend is the same for both: it only knows `ExecBackend`.

use std::sync::Arc;

use exec_server_client::{
    Client, ConnectOptions, ExecBackend, LocalBackend, ProcessEvent, RemoteBackend, StartOptions,
    Stream,
};
use std::io::Write;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(target), command) = (args.next(), args.collect::<Vec<_>>()) else {
        anyhow::bail!("usage: run_command (URL | local) CMD [ARGS...]");
    };
    anyhow::ensure!(
        !command.is_empty(),
        "usage: run_command (URL | local) CMD [ARGS...]"
    );
    let backend: Arc<dyn ExecBackend> = if target == "local" {
        Arc::new(LocalBackend::new())
    } else {
        let client = Client::connect(&target, ConnectOptions::default()).await?;
        Arc::new(RemoteBackend::new(client))
    };

    let process = backend.start(StartOptions::new(command)).await?;
    let mut events = process.events()?;
    let mut exit_code = None;
    while let Some(event) = events.next().await {
        match event {
            ProcessEvent::Output {
                stream: Stream::Stderr,
                chunk,
                ..
            } => {
                std::io::stderr().write_all(&chunk)?;
            }
            ProcessEvent::Output { chunk, .. } => std::io::stdout().write_all(&chunk)?,
            ProcessEvent::Exited {
                exit_code: code, ..
            } => exit_code = Some(code),
            ProcessEvent::Truncated {
                first_seq,
                last_seq,
            } => {
                eprintln!("[output lost: events {first_seq}..={last_seq}]");
            }
            ProcessEvent::Failure { reason } | ProcessEvent::Disconnected { reason } => {
                anyhow::bail!("lost the process: {reason}");
            }
            _ => {}
        }
    }
    std::io::stdout().flush()?;
    println!("exit code: {}", exit_code.unwrap_or(-1));
    Ok(())
}
