//! The `exec-server` binary: serve the exec-server protocol over stdio or WebSocket, run
//! one command through a server (`exec-server run`), or copy a file (`exec-server cp`).

mod alloc;
mod cp;
mod fdio;
mod run;
mod tty;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use exec_server_core::{RetentionPool, SessionConfig};
use exec_server_rpc::{RpcConfig, Server};
use exec_server_ws::{Auth, Tls, TlsFiles, WsConfig, WsServer};

/// Run programs for a remote client and stream their output (JSON-RPC 2.0).
#[derive(Debug, Parser)]
#[command(name = "exec-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the protocol until stdin ends (stdio) or SIGTERM/SIGINT; every child is
    /// terminated and reaped before exiting 0.
    Serve(Box<ServeArgs>),
    /// Run one command through a server, like `ssh host cmd`: local stdin, stdout and
    /// stderr forwarded, the exit status propagated (128+n for signal n), Ctrl-C and
    /// window sizes passed on, and a dropped WebSocket resumed without losing output.
    Run(Box<run::RunArgs>),
    /// Copy one file to or from the server's host: `cp ./a remote:/tmp/a` or
    /// `cp remote:/etc/hosts ./hosts`. Chunked, keeps the mode, replaces the destination
    /// atomically; exit status 0 when copied, 1 otherwise.
    Cp(Box<cp::CpArgs>),
    /// The server's guardian (started by `serve` itself): kills every process group the
    /// server started if the server dies without cleaning up.
    #[command(hide = true)]
    Guardian,
}

/// Options of `exec-server serve`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Where to serve: `stdio` (newline-delimited JSON on stdin/stdout),
    /// `ws://HOST:PORT` (port 0 = any free port), or `wss://HOST:PORT` (TLS: needs
    /// --tls-cert and --tls-key). `ws://systemd` and `wss://systemd` serve on the
    /// listening socket systemd passes (socket activation, LISTEN_FDS). With WebSocket
    /// the server prints one line on stdout: the URL to connect to, token included. The
    /// default suits someone trying it out: a loopback-only WebSocket on a free port,
    /// authenticated by a fresh token; programs that spawn the server as a child use
    /// `--listen stdio`.
    #[arg(
        long,
        default_value = "ws://127.0.0.1:0",
        value_name = "stdio|ws://HOST:PORT|wss://HOST:PORT"
    )]
    listen: String,

    /// The TLS certificate chain (PEM, leaf first) for `wss://`. Read again, with the
    /// key and client CAs, on SIGHUP: new connections get the new certificate, open ones
    /// are kept.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) for `wss://`.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require clients to present a certificate issued by one of these CAs (PEM bundle),
    /// on top of the token.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// Serve `/metrics` without the token (for a scraper on a trusted network).
    #[arg(long)]
    metrics_public: bool,

    /// Read the WebSocket token from this file (surrounding whitespace is trimmed).
    /// Otherwise the EXEC_SERVER_TOKEN environment variable is used, or a random
    /// 128-bit token is generated and printed in the URL.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,

    /// Allow WebSocket upgrades carrying this `Origin` header (repeatable); requests
    /// with any other Origin are refused with 403.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,

    /// Serve WebSocket without a token. Refused unless the address is loopback.
    #[arg(long, conflicts_with = "token_file")]
    insecure_no_auth: bool,

    /// Print the URL without `?token=…`: for a service whose stdout goes to a log
    /// (systemd's journal, `docker logs`, a pod's log), where the token must not appear.
    /// Needs --token-file or EXEC_SERVER_TOKEN (clients then bring the token).
    #[arg(long, conflicts_with = "insecure_no_auth")]
    no_token_in_url: bool,

    /// Largest message accepted or sent, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    max_message_bytes: usize,

    /// Maximum simultaneous WebSocket connections.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_connections: usize,

    /// Maximum TCP connections not yet upgraded to WebSocket (sending their request
    /// headers, /healthz, refused requests); more are closed at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_pending_connections: usize,

    /// Maximum processes retained per session.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_processes: usize,

    /// Output retained per process for `process/read`, in bytes.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    retain_bytes: usize,

    /// Output retained by all processes of all sessions together, in bytes (each event
    /// counted with 64 bytes of bookkeeping); past it the oldest events are evicted,
    /// from closed processes first.
    #[arg(long, default_value_t = exec_server_core::DEFAULT_MAX_RETAINED_BYTES, value_name = "BYTES")]
    max_retained_bytes: usize,

    /// How long a closed process stays retained, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    retain_closed_ms: u64,

    /// How long a detached session lives before its processes are terminated, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    session_ttl_ms: u64,

    /// Ceiling of `waitMs` of `process/read`, in milliseconds (at most 300000).
    #[arg(long, default_value_t = exec_server_protocol::MAX_WAIT_MS, value_name = "MS")]
    max_wait_ms: u64,

    /// Stdin bytes queued but not yet written, per process.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    max_pending_stdin_bytes: usize,

    /// Messages queued per connection before the server stops reading process output
    /// for it (backpressure); each holds at most one 64 KiB output chunk.
    #[arg(long, default_value_t = exec_server_rpc::DEFAULT_OUTBOUND_QUEUE, value_name = "N")]
    outbound_queue: usize,

    /// Bytes queued per connection before the server stops reading process output and
    /// holds responses back for it (a single larger message still passes, alone).
    #[arg(long, default_value_t = exec_server_rpc::DEFAULT_OUTBOUND_QUEUE_BYTES, value_name = "BYTES")]
    outbound_queue_bytes: usize,

    /// Requests read but not yet answered per connection; past it the server stops
    /// reading that connection until a response is written.
    #[arg(long, default_value_t = exec_server_rpc::DEFAULT_MAX_IN_FLIGHT, value_name = "N")]
    max_in_flight: usize,

    /// Interval between WebSocket pings, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    ping_interval_ms: u64,

    /// Drop a WebSocket peer heard nothing from (not even a pong) for this long, in milliseconds.
    #[arg(long, default_value_t = 90_000, value_name = "MS")]
    idle_timeout_ms: u64,

    /// Log level or filter for the logs on stderr (e.g. `info`, `debug`, `exec_server_ws=debug`).
    #[arg(long, default_value = "info", value_name = "FILTER")]
    log_level: String,

    /// Log format on stderr: `text` (one line per event) or `json` (one JSON object per
    /// line, for log shippers).
    #[arg(long, default_value = "text", value_name = "text|json")]
    log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where `serve` listens.
#[derive(Debug)]
enum Listen {
    Stdio,
    /// A WebSocket on `addr`; `host` as written (printed in a `wss://` URL, where it must
    /// match the certificate).
    Ws {
        addr: SocketAddr,
        host: String,
        tls: bool,
    },
    /// A WebSocket on the socket systemd passed.
    Inherited {
        tls: bool,
    },
}

fn parse_listen(s: &str) -> anyhow::Result<Listen> {
    if s == "stdio" {
        return Ok(Listen::Stdio);
    }
    let (rest, tls) = if let Some(rest) = s.strip_prefix("ws://") {
        (rest, false)
    } else if let Some(rest) = s.strip_prefix("wss://") {
        (rest, true)
    } else {
        bail!("--listen must be `stdio`, `ws://HOST:PORT` or `wss://HOST:PORT`, not {s:?}");
    };
    let hostport = rest.trim_end_matches('/');
    if hostport == "systemd" {
        return Ok(Listen::Inherited { tls });
    }
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("--listen {s:?}: cannot resolve {hostport:?}"))?
        .next()
        .with_context(|| format!("--listen {s:?}: {hostport:?} resolves to no address"))?;
    let host = match hostport.rsplit_once(':') {
        Some((host, _port)) => host.to_owned(),
        None => hostport.to_owned(),
    };
    Ok(Listen::Ws { addr, host, tls })
}

/// Takes the listening socket systemd passed (`LISTEN_FDS`, `LISTEN_PID`; the variables
/// are removed, so children do not see them). Call it before any thread exists.
fn inherited_listener() -> anyhow::Result<std::net::TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() != 1 {
        bail!(
            "--listen ws://systemd: expected exactly one socket from systemd (LISTEN_FDS, \
             LISTEN_PID of this process), found {}",
            fds.len()
        );
    }
    fds.take_tcp_listener(0)
        .context("--listen ws://systemd: the inherited socket")?
        .context("--listen ws://systemd: the inherited socket was already taken")
}

/// The TLS configuration the flags ask for, checked against the scheme of `--listen`.
fn tls(args: &ServeArgs, wants_tls: bool) -> anyhow::Result<Option<std::sync::Arc<Tls>>> {
    match (&args.tls_cert, &args.tls_key, wants_tls) {
        (Some(cert), Some(key), true) => Ok(Some(Tls::load(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        })?)),
        (_, _, true) => bail!("--listen wss://… needs --tls-cert and --tls-key"),
        (None, None, false) => Ok(None),
        (_, _, false) => bail!("--tls-cert and --tls-key need --listen wss://HOST:PORT"),
    }
}

/// Reads the TLS files again on each SIGHUP (a renewed certificate); a failure is logged
/// and the configuration in use kept.
fn reload_on_sighup(tls: std::sync::Arc<Tls>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded for new connections"),
                Err(e) => tracing::error!("SIGHUP: TLS reload failed, keeping the old one: {e}"),
            }
        }
    });
    Ok(())
}

/// The WebSocket authentication: `--token-file`, else `env_token` (EXEC_SERVER_TOKEN, taken
/// out of the environment at start-up), else a fresh token.
fn auth(args: &ServeArgs, env_token: Option<&str>) -> anyhow::Result<Auth> {
    if args.insecure_no_auth {
        return Ok(Auth::Disabled);
    }
    let token = if let Some(path) = &args.token_file {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --token-file {}", path.display()))?
            .trim()
            .to_owned()
    } else if let Some(token) = env_token {
        token.trim().to_owned()
    } else if args.no_token_in_url {
        bail!(
            "--no-token-in-url needs --token-file or {}: a generated token that is not \
             printed could not be used by anyone",
            exec_server_core::TOKEN_ENV
        );
    } else {
        exec_server_rpc::random_hex(16).context("cannot generate a token from /dev/urandom")?
    };
    if token.is_empty() {
        bail!("the token is empty (check --token-file or EXEC_SERVER_TOKEN)");
    }
    Ok(Auth::Token(token))
}

/// Installs the SIGTERM and SIGINT handlers at once (before the server announces itself)
/// and returns a future that resolves on the first of them.
fn termination() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

async fn serve(
    args: ServeArgs,
    listen: Listen,
    inherited: Option<std::net::TcpListener>,
    env_token: Option<String>,
) -> anyhow::Result<()> {
    // Orphans the children leave behind are adopted (see `subreaper` in `main`) and reaped here.
    tokio::spawn(exec_server_core::reap_orphans());
    alloc::give_back_free_memory();
    let rpc_config = RpcConfig {
        session: SessionConfig {
            retain_bytes: args.retain_bytes,
            retain_closed: Duration::from_millis(args.retain_closed_ms),
            max_processes: args.max_processes,
            max_pending_stdin_bytes: args.max_pending_stdin_bytes,
            retention: RetentionPool::new(args.max_retained_bytes),
        },
        session_ttl: Duration::from_millis(args.session_ttl_ms),
        max_message_bytes: args.max_message_bytes,
        outbound_queue: args.outbound_queue,
        outbound_queue_bytes: args.outbound_queue_bytes,
        max_in_flight: args.max_in_flight,
        max_wait: Duration::from_millis(args.max_wait_ms.min(exec_server_protocol::MAX_WAIT_MS)),
    };
    let rpc = Server::new(rpc_config).context("cannot build the dispatch")?;
    let shutdown = termination()?;
    match listen {
        Listen::Stdio => {
            exec_server_stdio::serve_stdio(rpc, shutdown).await?;
        }
        Listen::Ws { .. } | Listen::Inherited { .. } => {
            let (addr, url_host, wants_tls) = match &listen {
                Listen::Ws { addr, host, tls } => (*addr, tls.then(|| host.clone()), *tls),
                _ => (
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    None,
                    matches!(listen, Listen::Inherited { tls: true }),
                ),
            };
            let mut config = WsConfig::new(addr, auth(&args, env_token.as_deref())?);
            config.allowed_origins = args.allow_origin.clone();
            config.max_connections = args.max_connections;
            config.max_pending_connections = args.max_pending_connections;
            config.ping_interval = Duration::from_millis(args.ping_interval_ms.max(1));
            config.idle_timeout = Duration::from_millis(args.idle_timeout_ms.max(1));
            config.metrics_public = args.metrics_public;
            config.url_host = url_host;
            config.tls = tls(&args, wants_tls)?;
            if let Some(tls) = &config.tls {
                reload_on_sighup(tls.clone())?;
            }
            let server = match inherited {
                Some(listener) => WsServer::from_listener(listener, config, rpc)?,
                None => WsServer::bind(config, rpc).await?,
            };
            {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                let url = server.url();
                let url = match url.split_once("?token=") {
                    Some((bare, _)) if args.no_token_in_url => bare.to_owned(),
                    _ => url,
                };
                writeln!(stdout, "{url}").context("cannot write the URL to stdout")?;
                stdout.flush().context("cannot write the URL to stdout")?;
            }
            tracing::info!(addr = %server.local_addr(), "listening");
            server.run(shutdown).await;
        }
    }
    Ok(())
}

fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad --log-level {filter:?}"))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => logs.init(),
        // One object per line: timestamp, level, target, the event's fields (its
        // message among them) and the spans it is in.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    Ok(())
}

/// Starts the guardian (before any thread exists): if the server dies without cleaning
/// up, it kills every process group the server started. Without it the server still
/// runs, with a warning.
fn start_guardian() -> Option<exec_server_core::Guardian> {
    let started = std::env::current_exe()
        .and_then(|exe| exec_server_core::Guardian::start(&exe, ["guardian"]));
    match started {
        Ok(guardian) => Some(guardian),
        Err(e) => {
            eprintln!(
                "exec-server: warning: cannot start the guardian ({e}); children would outlive a killed server"
            );
            None
        }
    }
}

fn main() {
    alloc::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Guardian => std::process::exit(exec_server_core::guardian_main()),
        Command::Serve(args) => {
            // First, while no other thread exists and before the guardian or any child is
            // started: the token leaves the environment, and its bytes are overwritten
            // where /proc/PID/environ shows them.
            // SAFETY: no thread has been started yet.
            let env_token =
                unsafe { exec_server_core::take_env_secret(exec_server_core::TOKEN_ENV) };
            serve_main(*args, env_token)
        }
        Command::Run(args) => std::process::exit(run::main(*args)),
        Command::Cp(args) => cp::main(*args),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("exec-server: {e:#}");
            std::process::exit(1);
        }
    }
}

/// `exec-server serve`: logging, the guardian, subreaper mode and the open-files limit
/// (all before the runtime's threads exist), then the server until it has shut down.
fn serve_main(args: ServeArgs, env_token: Option<String>) -> anyhow::Result<()> {
    init_logging(&args.log_level, args.log_format).and_then(|()| {
        let listen = parse_listen(&args.listen)?;
        // Before any thread or child exists: the socket is marked close-on-exec and
        // the variables that announced it are removed.
        let inherited = match listen {
            Listen::Inherited { .. } => Some(inherited_listener()?),
            _ => None,
        };
        let guardian = start_guardian();
        // Adopt what the children leave behind: every member of a group the server
        // started stays its descendant (cheap "is the group empty?" checks), and an
        // orphan never escapes to init.
        if let Err(e) = exec_server_core::become_subreaper() {
            tracing::warn!("cannot become a child subreaper: {e}");
        }
        exec_server_core::raise_fd_limit();
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime")
            .and_then(|runtime| {
                // `serve` returns only once the server has shut down: every request
                // read was answered (stdio), every process terminated and reaped.
                let result = runtime.block_on(serve(args, listen, inherited, env_token));
                // What is left are tasks of connections already closed. Stdin is
                // read by a detached thread, not the runtime's blocking pool, so
                // nothing here can wait on a pending read; the timeout is a bound.
                runtime.shutdown_timeout(Duration::from_secs(1));
                if let Some(guardian) = guardian {
                    guardian.stop();
                }
                result
            })
    })
}
