//! A raw JSON-RPC test client over the binary's stdio or a WebSocket, with a deadline on every wait.

use std::collections::VecDeque;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use exec_server_protocol::{ErrorCode, method, notification};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single wait in these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The binary under test: this build's, or the one `EXEC_SERVER_E2E_BIN` names (to run
/// the same tests against another build, e.g. to see a regression test fail on old code).
pub fn bin() -> String {
    std::env::var("EXEC_SERVER_E2E_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_exec-server").to_owned())
}

/// Awaits `fut`, failing the test with `what` if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Polls `cond` until it holds, failing after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Which transport a scenario runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stdio,
    Ws,
}

/// A running server process.
pub struct ServerProc {
    pub child: Child,
    /// The WebSocket URL it printed (with `?token=`), for ws servers.
    pub url: Option<String>,
    /// The stdio of a stdio server, taken by the first client.
    pub stdio: Option<(ChildStdin, ChildStdout)>,
    /// The stdout lines a ws server printed after its URL line, once it exits.
    pub stdout_rest: Option<tokio::task::JoinHandle<Vec<String>>>,
}

impl ServerProc {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Starts `exec-server serve --listen stdio` with `extra` flags.
    pub async fn stdio(extra: &[&str]) -> anyhow::Result<ServerProc> {
        ServerProc::launch(Kind::Stdio, serve_command(Kind::Stdio, extra)).await
    }

    /// Starts `exec-server serve --listen ws://127.0.0.1:0` with `extra` flags and reads
    /// the URL line it prints.
    pub async fn ws(extra: &[&str]) -> anyhow::Result<ServerProc> {
        ServerProc::ws_env(extra, &[]).await
    }

    /// [`ServerProc::ws`] with extra environment variables.
    pub async fn ws_env(extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<ServerProc> {
        ServerProc::start_env(Kind::Ws, extra, env).await
    }

    /// [`ServerProc::start`] with extra environment variables.
    pub async fn start_env(
        kind: Kind,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServerProc> {
        let mut command = serve_command(kind, extra);
        command.envs(env.iter().copied());
        ServerProc::launch(kind, command).await
    }

    /// Spawns `command` (from [`serve_command`]); a ws server's URL line is read, and
    /// whatever else appears on its stdout until it closes is kept (there must be nothing).
    pub async fn launch(kind: Kind, mut command: Command) -> anyhow::Result<ServerProc> {
        let mut child = command.spawn().context("spawn exec-server")?;
        let stdout = child.stdout.take().context("stdout")?;
        if kind == Kind::Stdio {
            let stdin = child.stdin.take().context("stdin")?;
            return Ok(ServerProc {
                child,
                url: None,
                stdio: Some((stdin, stdout)),
                stdout_rest: None,
            });
        }
        let mut lines = BufReader::new(stdout).lines();
        let url = within("the URL line", lines.next_line())
            .await?
            .context("the server printed no URL line")?;
        let rest = tokio::spawn(async move {
            let mut rest = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push(line);
            }
            rest
        });
        Ok(ServerProc {
            child,
            url: Some(url),
            stdout_rest: Some(rest),
            stdio: None,
        })
    }

    pub async fn start(kind: Kind, extra: &[&str]) -> anyhow::Result<ServerProc> {
        match kind {
            Kind::Stdio => ServerProc::stdio(extra).await,
            Kind::Ws => ServerProc::ws(extra).await,
        }
    }

    pub fn url(&self) -> &str {
        self.url.as_deref().unwrap_or("")
    }

    /// `host:port` of a ws server.
    pub fn addr(&self) -> String {
        let url = self.url();
        let rest = url.strip_prefix("ws://").unwrap_or(url);
        rest.split('/').next().unwrap_or("").to_owned()
    }

    /// The token in the printed URL.
    pub fn token(&self) -> String {
        self.url()
            .split_once("?token=")
            .map(|(_, t)| t.to_owned())
            .unwrap_or_default()
    }

    /// A client on this server: its stdio (once) or a new WebSocket connection.
    pub async fn client(&mut self) -> anyhow::Result<Client> {
        match self.stdio.take() {
            Some((stdin, stdout)) => Ok(Client::new(Transport::Stdio {
                stdin: Some(stdin),
                stdout: BufReader::with_capacity(1 << 20, stdout),
            })),
            None => Client::ws(self.url()).await,
        }
    }

    /// Waits for the server to exit and returns its exit code.
    pub async fn wait_exit(&mut self) -> anyhow::Result<i32> {
        let status = within("the server to exit", self.child.wait()).await?;
        status.code().context("the server was killed by a signal")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we spawned; no memory is involved.
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub enum Transport {
    Stdio {
        stdin: Option<ChildStdin>,
        stdout: BufReader<ChildStdout>,
    },
    Ws(Box<Ws>),
}

/// A JSON-RPC client that keeps notifications and out-of-order responses aside.
pub struct Client {
    pub transport: Transport,
    next_id: u64,
    notifications: VecDeque<Value>,
    responses: Vec<Value>,
    /// Every message in arrival order, for ordering assertions.
    pub log: Vec<Value>,
}

impl Client {
    pub fn new(transport: Transport) -> Client {
        Client {
            transport,
            next_id: 100,
            notifications: VecDeque::new(),
            responses: Vec::new(),
            log: Vec::new(),
        }
    }

    pub async fn ws(url: &str) -> anyhow::Result<Client> {
        let request = url.into_client_request()?;
        let (ws, _) = within(
            "the WebSocket handshake",
            tokio_tungstenite::connect_async(request),
        )
        .await
        .context("WebSocket connect")?;
        Ok(Client::new(Transport::Ws(Box::new(ws))))
    }

    /// Sends one raw message (a line over stdio, a text frame over ws).
    pub async fn send_raw(&mut self, text: &str) -> anyhow::Result<()> {
        match &mut self.transport {
            Transport::Stdio { stdin, .. } => {
                let stdin = stdin.as_mut().context("stdin closed")?;
                stdin.write_all(text.as_bytes()).await?;
                stdin.write_all(b"\n").await?;
                stdin.flush().await?;
            }
            Transport::Ws(ws) => ws.send(Message::text(text)).await?,
        }
        Ok(())
    }

    pub async fn send(&mut self, value: &Value) -> anyhow::Result<()> {
        self.send_raw(&value.to_string()).await
    }

    /// Sends raw bytes as one message: a line over stdio (a `\n` is added), a text
    /// frame over ws (the bytes need not be UTF-8).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match &mut self.transport {
            Transport::Stdio { stdin, .. } => {
                let stdin = stdin.as_mut().context("stdin closed")?;
                stdin.write_all(bytes).await?;
                stdin.write_all(b"\n").await?;
                stdin.flush().await?;
            }
            Transport::Ws(ws) => {
                use tokio_tungstenite::tungstenite::protocol::frame::Frame;
                use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
                let frame = Frame::message(bytes.to_vec(), OpCode::Data(Data::Text), true);
                ws.send(Message::Frame(frame)).await?;
            }
        }
        Ok(())
    }

    /// The notifications received while waiting for responses and not yet claimed.
    #[allow(dead_code)] // Used by the load test binary.
    pub fn take_notifications(&mut self) -> Vec<Value> {
        self.notifications.drain(..).collect()
    }

    /// The responses received while waiting for others and not yet claimed.
    pub fn take_stray(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.responses)
    }

    /// Closes stdin (stdio) or the socket (ws).
    pub async fn close(&mut self) -> anyhow::Result<()> {
        match &mut self.transport {
            Transport::Stdio { stdin, .. } => {
                drop(stdin.take());
            }
            Transport::Ws(ws) => {
                let _ = SinkExt::close(ws).await;
            }
        }
        Ok(())
    }

    /// The next raw message, or `None` when the server closed the transport.
    pub async fn recv_text(&mut self) -> anyhow::Result<Option<String>> {
        match &mut self.transport {
            Transport::Stdio { stdout, .. } => {
                let mut line = String::new();
                let n = stdout.read_line(&mut line).await?;
                if n == 0 {
                    return Ok(None);
                }
                assert!(line.ends_with('\n'), "a line without newline: {line}");
                line.pop();
                Ok(Some(line))
            }
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    None => return Ok(None),
                    Some(Err(e)) => {
                        use tokio_tungstenite::tungstenite::Error;
                        return match e {
                            Error::ConnectionClosed | Error::AlreadyClosed => Ok(None),
                            Error::Protocol(_) | Error::Io(_) => Ok(None),
                            e => Err(e.into()),
                        };
                    }
                    Some(Ok(Message::Text(t))) => return Ok(Some(t.to_string())),
                    Some(Ok(Message::Binary(b))) => return binary_output_as_json(&b).map(Some),
                    Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Ok(_)) => continue,
                }
            },
        }
    }

    /// The next message as JSON, within the deadline; panics when the transport closed.
    pub async fn recv(&mut self) -> Value {
        let text = within("a message", self.recv_text())
            .await
            .expect("receive")
            .expect("the server closed the connection");
        let value: Value = serde_json::from_str(&text).expect("the server sent invalid JSON");
        assert_eq!(value["jsonrpc"], "2.0", "{value}");
        self.log.push(value.clone());
        value
    }

    /// Waits for the response with this id, keeping everything else aside.
    pub async fn response(&mut self, id: &Value) -> Value {
        if let Some(i) = self.responses.iter().position(|r| &r["id"] == id) {
            return self.responses.remove(i);
        }
        loop {
            let msg = self.recv().await;
            if msg.get("method").is_some() && msg.get("id").is_none() {
                self.notifications.push_back(msg);
            } else if &msg["id"] == id {
                return msg;
            } else {
                self.responses.push(msg);
            }
        }
    }

    /// Sends a request and returns its id.
    pub async fn send_request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = json!(self.next_id);
        self.send(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
            .await
            .expect("send");
        id
    }

    /// A request's whole response object.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params).await;
        self.response(&id).await
    }

    /// A request's `result`; panics on an error response.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params).await;
        assert!(
            response.get("error").is_none(),
            "{method} failed: {response}"
        );
        response["result"].clone()
    }

    /// A request that must fail with `code`; returns the error object.
    pub async fn call_err(&mut self, method: &str, params: Value, code: ErrorCode) -> Value {
        let response = self.request(method, params).await;
        assert_eq!(
            response["error"]["code"],
            code.code(),
            "{method}: {response}"
        );
        response["error"].clone()
    }

    pub async fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc":"2.0","method":method,"params":params}))
            .await
            .expect("send");
    }

    /// `initialize` + `initialized`; returns the session id.
    pub async fn handshake(&mut self) -> String {
        let result = self
            .call(method::INITIALIZE, json!({"clientName":"e2e"}))
            .await;
        self.notify(notification::INITIALIZED, json!({})).await;
        result["sessionId"].as_str().expect("sessionId").to_owned()
    }

    /// The next notification.
    pub async fn notification(&mut self) -> Value {
        if let Some(n) = self.notifications.pop_front() {
            return n;
        }
        loop {
            let msg = self.recv().await;
            if msg.get("id").is_none() {
                return msg;
            }
            self.responses.push(msg);
        }
    }

    /// Notifications of `process_id` until (and including) its `process/closed`.
    pub async fn events_until_closed(&mut self, process_id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let n = self.notification().await;
            if n["params"]["processId"] != process_id {
                continue;
            }
            let closed = n["method"] == notification::PROCESS_CLOSED;
            events.push(n);
            if closed {
                return events;
            }
        }
    }

    /// Starts a process with sensible defaults overlaid by `extra`; returns the result.
    pub async fn start(&mut self, process_id: &str, argv: &[&str], extra: Value) -> Value {
        let mut params = json!({
            "processId": process_id,
            "argv": argv,
            "cwd": "/tmp",
            "env": {"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        });
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        self.call(method::PROCESS_START, params).await
    }
}

/// The member that marks a notification the server sent as a binary output frame
/// (SPEC section 11); the e2e client turns each such frame into the JSON notification
/// it stands for, plus this member set to `true`.
pub const BINARY_FRAME: &str = "binaryFrame";

/// A binary output frame as the `process/output` notification it stands for (chunk
/// in base64), marked with [`BINARY_FRAME`]. A frame that does not decode fails.
fn binary_output_as_json(frame: &[u8]) -> anyhow::Result<String> {
    let out = exec_server_protocol::decode_output_frame(frame)
        .map_err(|e| anyhow::anyhow!("an undecodable binary frame from the server: {e}"))?;
    let params = exec_server_protocol::ProcessOutputNotification {
        process_id: out.process_id.to_owned(),
        seq: out.seq,
        stream: out.stream,
        chunk: out.chunk.into(),
    };
    let value = json!({
        "jsonrpc": "2.0",
        "method": notification::PROCESS_OUTPUT,
        "params": params,
        BINARY_FRAME: true,
    });
    Ok(value.to_string())
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

/// The concatenated output bytes of these notifications.
pub fn output_of(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .filter(|e| e["method"] == notification::PROCESS_OUTPUT)
        .flat_map(|e| unb64(&e["params"]["chunk"]))
        .collect()
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// The fields of `/proc/PID/stat` after the parenthesised command name: state, ppid,
/// pgrp, session, …
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Stat field `index` of `pid` as a number (1 = ppid, 2 = pgrp).
fn stat_number(pid: u32, index: usize) -> Option<u32> {
    stat_fields(pid)?.get(index)?.parse().ok()
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| !matches!(f.first().map(String::as_str), Some("Z" | "X")))
}

/// Whether `pid` still has any /proc entry (a zombie counts: it was not reaped).
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The processes `ppid` started for its clients: its children except its guardian.
pub fn children_of(ppid: u32) -> Vec<u32> {
    all_children_of(ppid)
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).nth(1) != Some(b"guardian".as_slice())
        })
        .collect()
}

/// The pids whose parent is `ppid`.
pub fn all_children_of(ppid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| stat_number(*pid, 1) == Some(ppid))
        .collect()
}

/// Every live process whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| alive(*pid) && stat_number(*pid, 2) == Some(pgid))
        .collect()
}

/// Live processes whose command line holds `marker` as one argument.
pub fn processes_with_arg(marker: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|a| a == marker.as_bytes()) && alive(*pid)
        })
        .collect()
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A raw HTTP/1.1 GET with extra header lines; returns (status, body).
pub async fn http_get(addr: &str, path: &str, headers: &[&str]) -> anyhow::Result<(u16, String)> {
    let mut stream = within("an HTTP connection", TcpStream::connect(addr)).await?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    within("an HTTP response", stream.read_to_end(&mut response)).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// `exec-server serve` over `kind` with `extra` flags (logs on our stderr, no token from
/// our environment), not spawned yet.
fn serve_command(kind: Kind, extra: &[&str]) -> Command {
    let listen = match kind {
        Kind::Stdio => "stdio",
        Kind::Ws => "ws://127.0.0.1:0",
    };
    let mut command = Command::new(bin());
    command
        .args(["serve", "--listen", listen, "--log-level", "warn"])
        .args(extra)
        .env_remove("EXEC_SERVER_TOKEN")
        .stdin(if kind == Kind::Stdio {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// Starts the binary like [`ServerProc::start`], running `setup` in the child before exec.
pub async fn spawn_with(
    kind: Kind,
    extra: &[&str],
    setup: impl Fn() -> io::Result<()> + Send + Sync + 'static,
) -> anyhow::Result<ServerProc> {
    let mut command = serve_command(kind, extra);
    // SAFETY: `setup` only makes async-signal-safe system calls.
    unsafe { command.pre_exec(setup) };
    ServerProc::launch(kind, command).await
}

pub fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The uid and gid of `nobody`, when the system has that account.
pub fn nobody() -> Option<(libc::uid_t, libc::gid_t)> {
    // SAFETY: getpwnam returns null or a pointer valid until the next getpw* call; the
    // fields are copied out at once.
    unsafe {
        let pw = libc::getpwnam(c"nobody".as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A server of `kind` running as `nobody` (dropped in the child before exec); `None` when
/// this test does not run as root or the system has no `nobody` account.
pub async fn as_nobody(kind: Kind, extra: &[&str]) -> anyhow::Result<Option<ServerProc>> {
    if !is_root() {
        return Ok(None);
    }
    let Some((uid, gid)) = nobody() else {
        return Ok(None);
    };
    let server = spawn_with(kind, extra, move || {
        // SAFETY: plain system calls on integers, between fork and exec.
        unsafe {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
        }
        Ok(())
    })
    .await?;
    Ok(Some(server))
}

/// Clock ticks of CPU `pid` has used (user + system).
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0)
}

/// The largest VmRSS (KiB) of `pid` until it has used no CPU for a second (it has done
/// all it will do for now), within the test deadline.
pub async fn peak_rss_until_idle(pid: u32) -> u64 {
    let mut peak = 0;
    let mut ticks = cpu_ticks(pid);
    let mut idle_samples = 0;
    within("the server to go idle", async {
        while idle_samples < 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(rss_kib(pid));
            let now = cpu_ticks(pid);
            if now == ticks {
                idle_samples += 1;
            } else {
                idle_samples = 0;
                ticks = now;
            }
        }
    })
    .await;
    peak.max(rss_kib(pid))
}

/// A path under the system's temporary directory no other test (of this run) uses:
/// `exec-server-e2e-WHAT-PID-N`, removed first if a previous run left it.
pub fn temp_path(what: &str) -> std::path::PathBuf {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("exec-server-e2e-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    path
}

/// A fresh directory (mode 0o755) under the system's temporary directory, removed with its
/// content on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        use std::os::unix::fs::PermissionsExt as _;
        let path = temp_path(what);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(path)
    }

    pub fn join(&self, name: impl AsRef<std::path::Path>) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// The names in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
        names_in(&self.0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The names in a directory, sorted.
pub fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
