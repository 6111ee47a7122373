//! Running it for real: `/livez` and `/readyz`, `/metrics` scraped while values move, JSON logs that never show the token (nor session ids at info), and a listening socket passed the way systemd passes it.

use std::os::fd::AsRawFd;
use std::time::Duration;

use exec_server_protocol::{ErrorCode, method};
use serde_json::{Value, json};

use crate::client::{Client, Kind, ServerProc, bin, check, http_get, output_of, within};
use crate::deploy::{Logs, launch, serve};

/// `host:port` of the server's printed `ws://` URL.
fn addr(server: &ServerProc) -> String {
    server.addr()
}

/// One scrape of `/metrics` with the server's token.
async fn scrape(server: &ServerProc) -> String {
    let auth = format!("Authorization: Bearer {}", server.token());
    let (status, body) = http_get(&addr(server), "/metrics", &[&auth]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample written exactly `series` (name and labels) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// [`sample`], failing when the series is missing.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The sum of every series of the family `name`, whatever their labels.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = rest.strip_prefix(' ').or_else(|| {
                let (_, after) = rest.strip_prefix('{')?.split_once("} ")?;
                Some(after)
            })?;
            rest.parse::<f64>().ok()
        })
        .sum()
}

/// Scrapes until `cond` holds, failing after the test deadline; returns that scrape.
async fn scrape_until(server: &ServerProc, what: &str, cond: impl Fn(&str) -> bool) -> String {
    within(what, async {
        loop {
            let text = scrape(server).await;
            if cond(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn livez_readyz_and_healthz_answer_without_a_token() -> anyhow::Result<()> {
    let (mut server, _logs) = launch(serve(
        &["--listen", "ws://127.0.0.1:0", "--max-connections", "1"],
        &[],
    ))
    .await?;
    let addr = addr(&server);
    for path in ["/livez", "/healthz"] {
        assert_eq!(http_get(&addr, path, &[]).await?, (200, "ok".to_owned()));
    }
    assert_eq!(http_get(&addr, "/readyz", &[]).await?.0, 200);

    // At the connection limit a new session cannot be had: not ready, still alive.
    let mut client = Client::ws(server.url()).await?;
    client.handshake().await;
    let (status, body) = http_get(&addr, "/readyz", &[]).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connection limit"), "{body}");
    assert_eq!(http_get(&addr, "/livez", &[]).await?.0, 200);

    // A process that ignores SIGTERM holds the shutdown for its grace period; from
    // SIGTERM on, the server is no longer ready (it stops listening).
    client
        .start(
            "stubborn",
            &["sh", "-c", "trap '' TERM; sleep 30"],
            json!({}),
        )
        .await;
    client.close().await?;
    within("ready again once the connection closed", async {
        while http_get(&addr, "/readyz", &[]).await.map(|r| r.0).ok() != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.signal(libc::SIGTERM);
    within("not ready after SIGTERM", async {
        while http_get(&addr, "/readyz", &[]).await.map(|r| r.0).ok() == Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(server.wait_exit().await?, 0);
    Ok(())
}

#[tokio::test]
async fn metrics_are_scraped_and_move_with_what_happens() -> anyhow::Result<()> {
    let (server, _logs) = launch(serve(
        &["--listen", "ws://127.0.0.1:0", "--retain-bytes", "1024"],
        &[],
    ))
    .await?;
    let addr = addr(&server);

    // Token-protected: the token as for a WebSocket.
    assert_eq!(http_get(&addr, "/metrics", &[]).await?.0, 401);
    let query = format!("/metrics?token={}", server.token());
    assert_eq!(http_get(&addr, &query, &[]).await?.0, 200);
    let idle = scrape(&server).await;
    assert_eq!(value(&idle, "exec_server_connections"), 0.0);
    assert_eq!(
        value(
            &idle,
            "exec_server_connections_refused_total{reason=\"auth\"}"
        ),
        1.0
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&idle, name).is_some(), "no {name}");
    }

    let mut c = Client::ws(server.url()).await?;
    let session = c.handshake().await;
    let pid_name = "metrics-proc-4b1d";
    c.start(
        pid_name,
        &["sh", "-c", "head -c 5000 /dev/zero; printf oops >&2"],
        json!({}),
    )
    .await;
    let events = c.events_until_closed(pid_name).await;
    assert_eq!(output_of(&events).len(), 5004);
    c.call_err(
        method::PROCESS_RESIZE,
        json!({"processId": "nobody-here", "rows": 24, "cols": 80}),
        ErrorCode::ProcessNotFound,
    )
    .await;
    c.call_err(
        method::PROCESS_START,
        json!({"processId": "missing", "argv": ["/nonexistent/program"], "cwd": "/",
            "env": {}}),
        ErrorCode::SpawnFailed,
    )
    .await;

    // A request is counted once its response is queued, which can be just after the
    // client has read it: wait for the last two.
    let text = scrape_until(
        &server,
        "the exit and the last requests to be counted",
        |t| {
            sample(t, "exec_server_processes_running") == Some(0.0)
                && sample(t, "exec_server_requests_total{method=\"process/start\"}") == Some(2.0)
                && sample(t, "exec_server_requests_total{method=\"process/resize\"}") == Some(1.0)
        },
    )
    .await;
    let want = [
        ("exec_server_connections", 1.0),
        ("exec_server_connections_opened_total", 1.0),
        ("exec_server_sessions{state=\"attached\"}", 1.0),
        ("exec_server_sessions{state=\"detached\"}", 0.0),
        ("exec_server_sessions_created_total", 1.0),
        ("exec_server_processes_started_total", 1.0),
        ("exec_server_processes_running", 0.0),
        ("exec_server_output_bytes_total{stream=\"stdout\"}", 5000.0),
        ("exec_server_output_bytes_total{stream=\"stderr\"}", 4.0),
        ("exec_server_requests_total{method=\"initialize\"}", 1.0),
        ("exec_server_requests_total{method=\"process/start\"}", 2.0),
        (
            "exec_server_request_errors_total{method=\"process/resize\",code=\"-32004\"}",
            1.0,
        ),
        (
            "exec_server_request_errors_total{method=\"process/start\",code=\"-32000\"}",
            1.0,
        ),
        (
            "exec_server_request_duration_seconds_count{method=\"process/start\"}",
            2.0,
        ),
    ];
    let got: Vec<(&str, Option<f64>)> = want.iter().map(|(s, _)| (*s, sample(&text, s))).collect();
    let expected: Vec<(&str, Option<f64>)> = want.iter().map(|(s, v)| (*s, Some(*v))).collect();
    assert_eq!(got, expected, "{text}");
    assert_eq!(
        sum(&text, "exec_server_spawn_failures_total"),
        1.0,
        "{text}"
    );
    // The failed step is named (SPEC 3's `data.step`): a missing program fails at exec.
    assert_eq!(
        sample(&text, "exec_server_spawn_failures_total{step=\"exec\"}"),
        Some(1.0),
        "{text}"
    );
    // 5004 bytes through a 1024-byte retention: the rest was evicted, and what is
    // retained is at most the bound plus one chunk.
    let retained = value(&text, "exec_server_retained_bytes");
    let evicted = value(&text, "exec_server_evicted_bytes_total");
    assert!(retained > 0.0 && retained <= 5004.0, "{retained}");
    assert_eq!(retained + evicted, 5004.0, "{text}");
    // Low cardinality: neither the session's id nor a process id is a label.
    assert!(!text.contains(&session), "the session id in the metrics");
    assert!(!text.contains(pid_name), "a process id in the metrics");

    // The connection goes: the session is detached, the gauge follows.
    c.close().await?;
    scrape_until(&server, "the session to be detached", |t| {
        sample(t, "exec_server_sessions{state=\"detached\"}") == Some(1.0)
            && sample(t, "exec_server_connections") == Some(0.0)
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_shows_as_backpressure() -> anyhow::Result<()> {
    let (server, _logs) = launch(serve(&["--listen", "ws://127.0.0.1:0"], &[])).await?;
    let before = value(
        &scrape(&server).await,
        "exec_server_backpressure_waits_total",
    );
    assert_eq!(before, 0.0);
    let mut c = Client::ws(server.url()).await?;
    c.handshake().await;
    // 64 MiB of output the client never reads: the outbound queue fills and pushes wait.
    c.start("flood", &["head", "-c", "67108864", "/dev/zero"], json!({}))
        .await;
    scrape_until(&server, "a wait for room in the outbound queue", |t| {
        sample(t, "exec_server_backpressure_waits_total").is_some_and(|v| v > 0.0)
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn metrics_public_serves_metrics_without_the_token_and_nothing_else() -> anyhow::Result<()> {
    let (server, _logs) = launch(serve(
        &["--listen", "ws://127.0.0.1:0", "--metrics-public"],
        &[],
    ))
    .await?;
    let addr = addr(&server);
    let (status, body) = http_get(&addr, "/metrics", &[]).await?;
    assert_eq!(status, 200);
    assert!(body.contains("exec_server_connections "), "{body}");
    // The WebSocket still needs the token.
    let bare = format!("ws://{addr}/");
    assert!(Client::ws(&bare).await.is_err());
    Ok(())
}

/// Everything that logs: a refused token, a session opened, a process, a detach, a
/// resume that takes the session over, and a shutdown. Returns the log lines and the
/// session id.
async fn exercise_logs(level: &str, token: &str) -> anyhow::Result<(Vec<String>, String)> {
    let (mut server, logs): (ServerProc, Logs) = launch(serve(
        &[
            "--listen",
            "ws://127.0.0.1:0",
            "--log-format",
            "json",
            "--log-level",
            level,
        ],
        &[("EXEC_SERVER_TOKEN", token)],
    ))
    .await?;
    let addr = addr(&server);
    assert_eq!(
        http_get(&addr, "/?token=wrong", &["Upgrade: websocket"])
            .await?
            .0,
        401
    );
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(http_get(&addr, "/metrics", &[&bearer]).await?.0, 200);
    let mut c = Client::ws(server.url()).await?;
    let session = c.handshake().await;
    c.start("logged", &["echo", "hi"], json!({})).await;
    c.events_until_closed("logged").await;
    c.close().await?;
    // The server sees the close in its own time: resume only once it has detached.
    within("the session to be detached", async {
        while !logs.contains("session detached") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut again = Client::ws(server.url()).await?;
    again
        .call(
            method::INITIALIZE,
            json!({"clientName": "e2e", "resumeSessionId": session}),
        )
        .await;
    let mut takeover = Client::ws(server.url()).await?;
    takeover
        .call(
            method::INITIALIZE,
            json!({"clientName": "e2e", "resumeSessionId": session}),
        )
        .await;
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().await?, 0);
    // The stderr reader has seen everything once the pipe closes.
    within("the end of stderr", async {
        while !logs.contains("shutting down") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    Ok((logs.lines(), session))
}

#[tokio::test]
async fn json_logs_never_show_the_token_nor_session_ids_at_info() -> anyhow::Result<()> {
    let token = "tok-4c0ffee-never-logged-9d1";
    let (lines, session) = exercise_logs("info", token).await?;
    assert!(!lines.is_empty());
    for line in &lines {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(entry["timestamp"].is_string(), "{line}");
        assert!(entry["level"].is_string(), "{line}");
        assert!(entry["message"].is_string(), "{line}");
        assert!(!line.contains(token), "the token in a log line: {line}");
        assert!(!line.contains(&session), "a session id at info: {line}");
    }
    let messages: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_owned))
        .collect();
    for expected in [
        "listening",
        "WebSocket connection opened",
        "session opened",
        "session detached",
        "session taken over",
        "shutting down",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "no {expected:?} in {messages:?}"
        );
    }

    // At the most verbose level the token still never appears; the session id does (at
    // debug), which shows the check above would see it.
    let (lines, session) = exercise_logs("trace", token).await?;
    assert!(
        lines.iter().all(|l| !l.contains(token)),
        "the token at trace"
    );
    assert!(lines.iter().any(|l| l.contains(&session)));
    Ok(())
}

#[tokio::test]
async fn a_listening_socket_passed_the_way_systemd_does_is_served() -> anyhow::Result<()> {
    // As systemd does for a socket unit: the socket is bound before the server starts,
    // handed over as fd 3, and announced by LISTEN_FDS=1 and LISTEN_PID=<server pid>.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let fd = listener.as_raw_fd();
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(
            "export LISTEN_PID=$$ LISTEN_FDS=1; \
             exec \"$0\" serve --listen ws://systemd --log-level warn",
        )
        .arg(bin())
        .env_remove("EXEC_SERVER_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if fd != 3 {
                check(libc::dup2(fd, 3).min(0))?;
            }
            check(libc::fcntl(3, libc::F_SETFD, 0))
        });
    }
    let mut server = ServerProc::launch(Kind::Ws, command).await?;
    drop(listener);
    assert!(
        server
            .url()
            .starts_with(&format!("ws://127.0.0.1:{port}/?token=")),
        "{}",
        server.url()
    );
    let mut c = server.client().await?;
    c.handshake().await;
    // The variables that announced the socket are not passed on to children.
    c.start(
        "env",
        &["sh", "-c", "echo ${LISTEN_FDS:-unset} ${LISTEN_PID:-unset}"],
        json!({"inheritEnv": true}),
    )
    .await;
    let events = c.events_until_closed("env").await;
    assert_eq!(output_of(&events), b"unset unset\n");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().await?, 0);

    // Without a socket from systemd the server says so and exits 1.
    let output = within(
        "the server to refuse",
        serve(&["--listen", "ws://systemd"], &[]).output(),
    )
    .await?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("expected exactly one socket"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn no_token_in_url_keeps_the_token_out_of_stdout() -> anyhow::Result<()> {
    let token = "tok-kept-out-of-stdout-5e2";
    let (server, _logs) = launch(serve(
        &["--listen", "ws://127.0.0.1:0", "--no-token-in-url"],
        &[("EXEC_SERVER_TOKEN", token)],
    ))
    .await?;
    let url = server.url().to_owned();
    assert_eq!(url, format!("ws://{}/", server.addr()));
    // Clients bring the token themselves.
    let mut c = Client::ws(&format!("{url}?token={token}")).await?;
    c.handshake().await;
    assert!(Client::ws(&url).await.is_err());

    // A generated token that is not printed could not be used: refused.
    let output = within(
        "the server to refuse",
        serve(&["--listen", "ws://127.0.0.1:0", "--no-token-in-url"], &[]).output(),
    )
    .await?;
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-token-in-url needs"));
    Ok(())
}

#[tokio::test]
async fn a_full_flow_control_window_shows_as_a_window_stall() -> anyhow::Result<()> {
    let (server, _logs) = launch(serve(&["--listen", "ws://127.0.0.1:0"], &[])).await?;
    let stalls = |t: &str| sample(t, "exec_server_window_stalls_total");
    assert_eq!(stalls(&scrape(&server).await), Some(0.0));
    let mut c = Client::ws(server.url()).await?;
    c.call(
        method::INITIALIZE,
        json!({"clientName": "e2e", "capabilities": {"outputWindowBytes": 65536}}),
    )
    .await;
    c.notify(exec_server_protocol::notification::INITIALIZED, json!({}))
        .await;
    // 1 MiB of output and no ack: the process's window fills at 64 KiB and its output
    // stops being read.
    c.start(
        "windowed",
        &["head", "-c", "1048576", "/dev/zero"],
        json!({}),
    )
    .await;
    scrape_until(&server, "a window stall", |t| {
        stalls(t).is_some_and(|v| v > 0.0)
    })
    .await;
    Ok(())
}
