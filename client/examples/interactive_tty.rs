//! An interactive terminal session (`bash` under a pseudo-terminal), through either backend:
//!
//! ```text
//! cargo run -p exec-server-client --example interactive_tty -- 'ws://127.0.0.1:41641/?token=…'
//! cargo run -p exec-server-client --example interactive_tty -- local
//! ```
//!
//! The local terminal goes into raw mode (every key goes to the remote terminal, Ctrl-C
//! and Ctrl-D included) and is restored when the shell exits. `exec-server run --tty`
//! is the complete version of this (window resizes, signals, reconnects).

use std::io::{Read, Write};
use std::sync::Arc;

use exec_server_client::{
    Client, ConnectOptions, ExecBackend, LocalBackend, ProcessEvent, RemoteBackend, StartOptions,
    TerminalSize,
};

/// Raw mode on stdin until dropped.
struct Raw(libc::termios);

impl Raw {
    fn enable() -> std::io::Result<Raw> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with termios structs we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSADRAIN, &raw);
            Ok(Raw(saved))
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enable`.
        unsafe {
            libc::tcsetattr(0, libc::TCSADRAIN, &self.0);
        }
    }
}

fn terminal_size() -> TerminalSize {
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
        TerminalSize {
            rows: ws.ws_row,
            cols: ws.ws_col,
        }
    } else {
        TerminalSize::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "local".to_owned());
    let backend: Arc<dyn ExecBackend> = if target == "local" {
        Arc::new(LocalBackend::new())
    } else {
        Arc::new(RemoteBackend::new(
            Client::connect(&target, ConnectOptions::default()).await?,
        ))
    };
    let mut options = StartOptions::new(["bash", "-i"])
        .tty(true)
        .size(terminal_size());
    if let Ok(term) = std::env::var("TERM") {
        options = options.env("TERM", term);
    }
    let shell = backend.start(options).await?;
    let mut events = shell.events()?;
    let raw = Raw::enable()?;

    // Keys: a thread reads stdin; a task writes them to the terminal in order.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::stdin().read(&mut buf) {
            if n == 0 || keys_tx.blocking_send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let writer = shell.clone();
    tokio::spawn(async move {
        while let Some(bytes) = keys.recv().await {
            if writer.write(&bytes).await.is_err() {
                return;
            }
        }
    });

    let mut exit_code = None;
    while let Some(event) = events.next().await {
        match event {
            ProcessEvent::Output { chunk, .. } => {
                let mut out = std::io::stdout().lock();
                out.write_all(&chunk)?;
                out.flush()?;
            }
            ProcessEvent::Exited {
                exit_code: code, ..
            } => exit_code = Some(code),
            _ => {}
        }
    }
    drop(raw);
    println!("\nshell exited with {}", exit_code.unwrap_or(-1));
    Ok(())
}
