//! `exec-server run`: run one command through an exec-server, like `ssh host cmd` or
//! `kubectl exec -it`: local stdio forwarded, terminal size and signals passed on, the
//! exit status propagated, and a dropped WebSocket resumed without losing output. The
//! connection options (`--connect`, `--spawn`) and their code are shared with `cp`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use exec_server_client::{
    Client, ConnectOptions, Error, ErrorCode, ExecBackend, ExecProcess, ProcessEvent, ReadOptions,
    ReconnectPolicy, RemoteBackend, Signal, SpawnErrorData, SpawnStep, StartOptions, Stream,
    WriteStatus,
};

use crate::fdio::{self, FdWriter};
use crate::tty;

/// Where the server is (`run` and `cp`).
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's WebSocket URL, as `exec-server serve` prints it (token included).
    /// Default: the EXEC_SERVER_URL environment variable. A token not in the URL is
    /// taken from EXEC_SERVER_TOKEN.
    #[arg(long, value_name = "URL", conflicts_with = "spawn")]
    connect: Option<String>,

    /// Start a private server (`exec-server serve --listen stdio`, this same binary) for
    /// this invocation alone: nothing to set up. It ends with it.
    #[arg(long)]
    spawn: bool,
}

/// Options of `exec-server run`.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: the command's own, or 128+N when signal N ended it; 124 when --timeout \
ended it (as GNU timeout); 127 when the server cannot find the program, 126 when it \
cannot start it (not executable, no such working directory, the user cannot be \
switched); 255 when `run` itself fails (no server, lost connection).")]
pub struct RunArgs {
    #[command(flatten)]
    server: ServerArgs,

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

    /// End the command when it has run this long: SIGTERM to its process group, SIGKILL
    /// a second later if it is still there. `run` then notes it on stderr and exits 124.
    /// A number with a unit (`500ms`, `30s`, `5m`, `1h`) or a bare number of seconds
    /// (`2.5`); 0 means no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// Run the command as this user on the server (a name or a numeric uid): its uid,
    /// groups, HOME, USER, LOGNAME and SHELL. Needs a server running as root.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,

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

/// Parses a `--timeout`: a non-negative number with `ms`, `s`, `m` or `h`, or of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m or h, e.g. 500ms, 30s, 5m, 1h)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 30s, 5m, 1h, or 2.5)"))?;
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| format!("{s:?} is too long"))
}

/// A duration as `--timeout` takes it, in the largest unit that shows it exactly.
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => format!("{}us", d.as_micros()),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// The exit status when `run` itself fails (as ssh does).
const FAILURE: i32 = 255;

/// The exit status when `--timeout` ended the command (as GNU `timeout` gives it).
const TIMED_OUT: i32 = 124;

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

/// Connects as `args` say (`--connect URL`, EXEC_SERVER_URL, or `--spawn`); a
/// WebSocket is resumed on its own when it drops.
pub(crate) async fn connect(args: &ServerArgs, options: ConnectOptions) -> anyhow::Result<Client> {
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

/// The exit status for a program the server could not start, from the step and errno
/// the error carries (SPEC 3), as a shell gives it: 127 only when the program is not found,
/// 126 when it cannot be started (not executable, its working directory, its user, its
/// terminal).
fn spawn_failure_code(error: &Error) -> i32 {
    match error.spawn_data() {
        Some(SpawnErrorData {
            step: SpawnStep::Exec,
            errno: Some(errno),
        }) if errno == "ENOENT" => 127,
        _ => 126,
    }
}

/// Whether the server refused the start because of its working directory.
fn cwd_failed(error: &Error) -> bool {
    error.spawn_data().is_some_and(|d| d.step == SpawnStep::Cwd)
}

/// What `run` says when the working directory is why the command could not start.
fn cwd_message(error: &Error, cwd: &str) -> String {
    let reason = match error.spawn_data().and_then(|d| d.errno).as_deref() {
        Some("ENOENT") => "does not exist on the server".to_owned(),
        Some("ENOTDIR") => "is not a directory on the server".to_owned(),
        Some("EACCES") => "cannot be entered on the server (permission denied)".to_owned(),
        _ => match error {
            Error::Rpc { message, .. } => format!("cannot be entered on the server: {message}"),
            other => format!("cannot be entered on the server: {other}"),
        },
    };
    format!("the working directory {cwd:?} {reason}")
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
    if let Some(timeout) = args.timeout.filter(|t| !t.is_zero()) {
        options = options.timeout(timeout);
    }
    if let Some(user) = &args.user {
        options = options.user(user.clone());
    }
    let (cwd, fallback) = match &args.cwd {
        Some(cwd) => (cwd.clone(), false),
        None => match std::env::current_dir() {
            Ok(dir) => (dir.display().to_string(), true),
            Err(_) => ("/".to_owned(), false),
        },
    };
    let first = backend.start(options.clone().cwd(cwd.clone())).await;
    let (result, cwd) = match first {
        Err(e) if fallback && cwd_failed(&e) => {
            // The server has no such directory: run in its root instead.
            (backend.start(options.cwd("/")).await, "/".to_owned())
        }
        other => (other, cwd),
    };
    let command = &args.command[0];
    result.map_err(|e| {
        if e.code() != Some(ErrorCode::SpawnFailed) {
            return Failure {
                code: FAILURE,
                error: anyhow::Error::new(e).context(format!("cannot run {command:?}")),
            };
        }
        let code = spawn_failure_code(&e);
        let error = if cwd_failed(&e) {
            anyhow::anyhow!("cannot run {command:?}: {}", cwd_message(&e, &cwd))
        } else {
            anyhow::Error::new(e).context(format!("cannot run {command:?}"))
        };
        Failure { code, error }
    })
}

async fn run(args: RunArgs) -> Result<i32, Failure> {
    let signals = Signals::install()?;
    // Output is consumed by a task that never awaits a call on the connection, so a full
    // stream is pure backpressure: a slow local stdout never costs output.
    let options = ConnectOptions::default()
        .client_name("exec-server run")
        .unblock_stalled_calls(false);
    let client = connect(&args.server, options).await?;
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
    let mut outcome = pump_output(events, process.as_ref(), raw.is_some()).await;
    if let Ok(ended) = &mut outcome
        && !ended.timed_out
        && args.timeout.is_some()
    {
        // The command exited in time, but the deadline may have ended what it left
        // running (its output held open by a background job): `closed` says so, and a
        // read of the closed process carries it.
        if let Ok(read) = process.read(ReadOptions::after(u64::MAX)).await {
            ended.timed_out = read.timed_out;
        }
    }
    stdin.abort();
    signals.abort();
    drop(raw);
    client.close().await;
    match (outcome?, args.timeout) {
        (
            Ended {
                timed_out: true, ..
            },
            Some(timeout),
        ) => {
            eprintln!(
                "exec-server run: timed out after {}",
                show_duration(timeout)
            );
            Ok(TIMED_OUT)
        }
        (Ended { code, .. }, _) => Ok(code),
    }
}

/// How the process ended.
struct Ended {
    /// Its exit status (128 + n for signal n).
    code: i32,
    /// The server ended it because its timeout passed.
    timed_out: bool,
}

/// Writes the process's output to the local stdout and stderr until it closes; returns
/// how it ended.
async fn pump_output(
    mut events: exec_server_client::EventStream,
    process: &dyn ExecProcess,
    raw: bool,
) -> Result<Ended, Failure> {
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
            ProcessEvent::Exited {
                exit_code,
                timed_out,
                ..
            } => {
                exit = Some(Ended {
                    code: exit_code,
                    timed_out,
                });
            }
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
        return Ok(Ended {
            code: 128 + libc::SIGPIPE,
            timed_out: false,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_seconds() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("2", Duration::from_secs(2)),
            ("2.5", Duration::from_millis(2500)),
            ("0.25s", Duration::from_millis(250)),
            ("0", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "s", "-1", "1d", "1 s", "1.2.3", "ms5", "1e3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_show_in_the_largest_exact_unit() {
        let cases = [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_millis(2500), "2500ms"),
        ];
        for (d, want) in cases {
            assert_eq!(show_duration(d), want);
        }
    }
}
