//! `exec-server run`: run one command through an exec-server, like `ssh host cmd` or
//! `kubectl exec -it`: local stdio forwarded, terminal size and signals passed on, the
//! exit status propagated, and a dropped WebSocket resumed without losing output.

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use exec_server_client::{
    Client, ConnectOptions, Error, ErrorCode, ExecBackend, ExecProcess, ProcessEvent,
    ReconnectPolicy, RemoteBackend, Signal, StartOptions, Stream, WriteStatus,
};

use crate::fdio::{self, FdWriter};
use crate::tty;

/// Options of `exec-server run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The server's WebSocket URL, as `exec-server serve` prints it (token included).
    /// Default: the EXEC_SERVER_URL environment variable.
    #[arg(long, value_name = "URL", conflicts_with = "spawn")]
    connect: Option<String>,

    /// Start a private server (`exec-server serve --listen stdio`, this same binary) for
    /// this command alone: nothing to set up. It ends with the command.
    #[arg(long)]
    spawn: bool,

    /// Run the command under a pseudo-terminal: the local terminal goes into raw mode
    /// (restored on exit), TERM and the window size are passed on, and resizes follow.
    #[arg(short = 't', long)]
    tty: bool,

    /// Working directory on the server. Default: the local current directory when the
    /// server has it, otherwise `/`.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,

    /// Set an environment variable for the command, on top of the server's own
    /// environment (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// The command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

/// The exit status when `run` itself fails (as ssh does).
const FAILURE: i32 = 255;

/// Runs the subcommand and returns the process's exit status.
pub fn main(args: RunArgs) -> i32 {
    tty::restore_on_panic();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("exec-server run: cannot start the runtime: {e}");
            return FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    tty::restore();
    // The stdin thread may still be blocked reading the terminal: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("exec-server run: {:#}", failure.error);
            failure.code
        }
    }
}

/// An error of `run` and the exit status it ends with.
struct Failure {
    error: anyhow::Error,
    code: i32,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            error: e.into(),
            code: FAILURE,
        }
    }
}

async fn connect(args: &RunArgs) -> anyhow::Result<Client> {
    // Output is consumed by a task that never awaits a call on the connection, so a full
    // stream is pure backpressure: a slow local stdout never costs output.
    let options = ConnectOptions::default()
        .client_name("exec-server run")
        .unblock_stalled_calls(false);
    if args.spawn {
        let exe = std::env::current_exe().context("cannot find this program to --spawn it")?;
        return Client::spawn(
            exe,
            ["serve", "--listen", "stdio", "--log-level", "error"],
            options,
        )
        .await
        .context("cannot start a private server");
    }
    let url = match &args.connect {
        Some(url) => url.clone(),
        None => match std::env::var("EXEC_SERVER_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => bail!("say where the server is: --connect URL, EXEC_SERVER_URL, or --spawn"),
        },
    };
    let mut options = options.reconnect(ReconnectPolicy::default());
    if let Ok(token) = std::env::var("EXEC_SERVER_TOKEN")
        && !url.contains("token=")
    {
        options = options.bearer_token(token.trim());
    }
    Client::connect(&url, options)
        .await
        .context("cannot connect to the server")
}

/// The exit status for a program the server could not start (as a shell gives it).
fn spawn_failure_code(error: &Error) -> i32 {
    match error {
        Error::Rpc { message, .. } if message.contains("os error 2)") => 127,
        Error::Rpc { .. } => 126,
        _ => FAILURE,
    }
}

async fn start(backend: &RemoteBackend, args: &RunArgs) -> Result<Arc<dyn ExecProcess>, Failure> {
    let mut options = StartOptions::new(args.command.iter().cloned())
        .tty(args.tty)
        .pipe_stdin(!args.tty);
    if args.tty {
        if let Ok(term) = std::env::var("TERM") {
            options = options.env("TERM", term);
        }
        if let Some(size) = tty::size(0).or_else(|| tty::size(1)) {
            options = options.size(size);
        }
    }
    for (k, v) in &args.env {
        options = options.env(k.clone(), v.clone());
    }
    let (cwd, fallback) = match &args.cwd {
        Some(cwd) => (cwd.clone(), false),
        None => match std::env::current_dir() {
            Ok(dir) => (dir.display().to_string(), true),
            Err(_) => ("/".to_owned(), false),
        },
    };
    let first = backend.start(options.clone().cwd(cwd.clone())).await;
    let result = match first {
        Err(e)
            if fallback
                && e.code() == Some(ErrorCode::SpawnFailed)
                && e.to_string().contains(&format!("cwd {cwd:?}")) =>
        {
            // The server has no such directory: run in its root instead.
            backend.start(options.cwd("/")).await
        }
        other => other,
    };
    result.map_err(|e| Failure {
        code: if e.code() == Some(ErrorCode::SpawnFailed) {
            spawn_failure_code(&e)
        } else {
            FAILURE
        },
        error: anyhow::Error::new(e).context(format!("cannot run {:?}", args.command[0])),
    })
}

async fn run(args: RunArgs) -> Result<i32, Failure> {
    let signals = Signals::install()?;
    let client = connect(&args).await?;
    let backend = RemoteBackend::new(client.clone());
    let process = start(&backend, &args).await?;
    let raw = if args.tty && tty::is_tty(0) {
        Some(tty::RawMode::enable(0).context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    let events = process.events()?;
    let stdin = tokio::spawn(forward_stdin(process.clone()));
    let signals = tokio::spawn(forward_signals(signals, process.clone(), args.tty));
    let outcome = pump_output(events, process.as_ref(), raw.is_some()).await;
    stdin.abort();
    signals.abort();
    drop(raw);
    client.close().await;
    outcome
}

/// Writes the process's output to the local stdout and stderr until it closes; returns
/// its exit status.
async fn pump_output(
    mut events: exec_server_client::EventStream,
    process: &dyn ExecProcess,
    raw: bool,
) -> Result<i32, Failure> {
    let stdout = FdWriter::spawn(1, "stdout").context("cannot start the stdout writer")?;
    let stderr = FdWriter::spawn(2, "stderr").context("cannot start the stderr writer")?;
    let newline = if raw { "\r\n" } else { "\n" };
    let mut exit = None;
    let mut broken_pipe = false;
    let mut failure = None;
    while let Some(event) = events.next().await {
        match event {
            ProcessEvent::Output { stream, chunk, .. } => {
                let writer = if stream == Stream::Stderr {
                    &stderr
                } else {
                    &stdout
                };
                if writer.write(chunk).await.is_err() {
                    // The local reader went away (`| head`): stop the command, as a
                    // SIGPIPE would stop a local one.
                    // (The stream goes first, so its unread events hold up nothing.)
                    broken_pipe = true;
                    drop(events);
                    let _ = process.terminate(exec_server_client::DEFAULT_GRACE).await;
                    break;
                }
            }
            ProcessEvent::Exited { exit_code, .. } => exit = Some(exit_code),
            ProcessEvent::Closed { .. } => break,
            ProcessEvent::Truncated {
                first_seq,
                last_seq,
            } => {
                let note = format!(
                    "exec-server run: output lost while disconnected (events {first_seq} to {last_seq} were no longer retained){newline}"
                );
                let _ = stderr.write(note.into()).await;
            }
            ProcessEvent::Disconnected { reason } | ProcessEvent::Failure { reason } => {
                failure = Some(reason);
                break;
            }
            _ => {}
        }
    }
    let out = stdout.finish();
    let _ = stderr.finish();
    if let Some(reason) = failure {
        return Err(Failure {
            error: anyhow::anyhow!("lost the server: {reason}"),
            code: FAILURE,
        });
    }
    if broken_pipe
        || out
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    {
        return Ok(128 + libc::SIGPIPE);
    }
    out.context("cannot write to stdout")?;
    exit.ok_or_else(|| Failure {
        error: anyhow::anyhow!("the process closed without an exit status"),
        code: FAILURE,
    })
}

/// Local stdin to the process; its end-of-file becomes `closeStdin`.
async fn forward_stdin(process: Arc<dyn ExecProcess>) {
    let Ok(mut chunks) = fdio::spawn_reader(0, "stdin") else {
        let _ = process.close_stdin().await;
        return;
    };
    while let Some(chunk) = chunks.recv().await {
        match process.write(&chunk).await {
            Ok(WriteStatus::Accepted) => {}
            // The process no longer reads its stdin, or the server is gone for good.
            Ok(_) | Err(_) => return,
        }
    }
    let _ = process.close_stdin().await;
}

/// The signals `run` passes on, registered before the process starts (so none of them
/// can end `run` itself in between).
struct Signals(Vec<(tokio::signal::unix::Signal, Option<Signal>)>);

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            (SignalKind::interrupt(), Some(Signal::Int)),
            (SignalKind::terminate(), Some(Signal::Term)),
            (SignalKind::hangup(), Some(Signal::Hup)),
            (SignalKind::quit(), Some(Signal::Quit)),
            (SignalKind::window_change(), None),
        ];
        let mut streams = Vec::new();
        for (kind, forward) in kinds {
            streams.push((signal(kind).context("cannot handle signals")?, forward));
        }
        Ok(Signals(streams))
    }
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to `run` go to the process (Ctrl-C without
/// a tty); SIGWINCH becomes a resize under `--tty`.
async fn forward_signals(signals: Signals, process: Arc<dyn ExecProcess>, tty: bool) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Signal>>(16);
    let mut tasks = Vec::new();
    for (mut stream, forward) in signals.0 {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(forward).await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    while let Some(received) = rx.recv().await {
        match received {
            Some(sig) => {
                let _ = process.signal(sig).await;
            }
            None if tty => {
                if let Some(size) = tty::size(0).or_else(|| tty::size(1)) {
                    let _ = process.resize(size).await;
                }
            }
            None => {}
        }
    }
}
