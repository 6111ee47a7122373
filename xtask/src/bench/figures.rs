//! Each figure of the benchmark: what it runs against the server, and its baseline.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use exec_server_protocol::{ProcessWriteResult, WriteStatus};

use super::client::{Client, Incoming, within};
use super::server::{Server, cpu_time};
use super::{Row, Sizes, Target, baseline, median, percentile};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn multi_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn step(what: &str) {
    eprintln!("bench: {what}");
}

/// The groups of figures, in table order; `--only NAME` runs one.
pub const GROUPS: [&str; 5] = ["stream", "echo", "spawn", "live", "connections"];

/// Every figure of the groups `only` selects (all when `None`), in table order.
pub fn all(bin: &Path, sizes: Sizes, only: Option<&str>) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let rt = current_thread()?;
    let selected = |group: &str| only.is_none_or(|o| o == group);
    if selected("stream") {
        rows.append(&mut stream_rows(bin, sizes, &rt)?);
    }
    if selected("echo") {
        rows.append(&mut echo_rows(bin, sizes, &rt)?);
    }
    if selected("spawn") {
        rows.append(&mut spawn_rows(bin, sizes, &rt)?);
    }
    if selected("live") {
        rows.append(&mut live_rows(bin, sizes, &rt)?);
    }
    drop(rt);
    if selected("connections") {
        rows.append(&mut connection_rows(bin, sizes)?);
    }
    Ok(rows)
}

/// The streamed figures: label, transport, throughput target (ratio to the raw pipe),
/// server CPU target (seconds per GiB).
const STREAMS: [(&str, Transport, f64, Option<f64>); 4] = [
    ("ws, JSON/base64", Transport::WsJson, 0.5, Some(1.0)),
    ("ws, binary output", Transport::WsBinary, 0.75, Some(0.5)),
    (
        "ws, binary output, 4 MiB window acked, beside a stalled process",
        Transport::WsBinaryWindow,
        0.75,
        Some(0.5),
    ),
    ("stdio, JSON/base64", Transport::Stdio, 0.5, None),
];

/// The window of the windowed stream (SPEC section 13); it acks each quarter.
const STREAM_WINDOW: u64 = 4 << 20;

/// The process that stalls beside the windowed stream: its window is never acked.
const STALLED: &str = "stalled";

/// The raw pipe and each transport in turn, `stream_reps` rounds, so that load from
/// elsewhere on the machine falls on the baseline and the figures alike; medians.
fn stream_rows(bin: &Path, sizes: Sizes, rt: &tokio::runtime::Runtime) -> Result<Vec<Row>> {
    step("stream: the raw pipe and each transport, interleaved");
    let mut streams = Vec::new();
    for (_, transport, _, _) in STREAMS {
        let mut server = rt.block_on(async {
            match transport {
                Transport::Stdio => Server::stdio(bin, "stream-stdio", &[]).await,
                Transport::WsJson => Server::ws(bin, "stream-ws-json", &[]).await,
                Transport::WsBinary => Server::ws(bin, "stream-ws-binary", &[]).await,
                Transport::WsBinaryWindow => Server::ws(bin, "stream-ws-window", &[]).await,
            }
        })?;
        let client = rt.block_on(async {
            if transport != Transport::WsBinaryWindow {
                return server.client(transport == Transport::WsBinary).await;
            }
            // Another process of the same connection whose consumer never acks: its
            // window fills and it stalls, and must not slow the measured stream.
            let mut client = server.windowed_client(STREAM_WINDOW).await?;
            client.start(STALLED, &["yes"], false).await?;
            Ok(client)
        })?;
        streams.push((server, client));
    }
    let bytes = sizes.stream_bytes;
    let mut raw = Vec::new();
    let mut rates = vec![Vec::new(); STREAMS.len()];
    let mut cpus = vec![Vec::new(); STREAMS.len()];
    let mut client_cpus = vec![Vec::new(); STREAMS.len()];
    let mut chunks = vec![Vec::new(); STREAMS.len()];
    let me = std::process::id();
    for rep in 0..sizes.stream_reps {
        raw.push(mb_per_s(bytes, baseline::pipe(bytes)?));
        for (i, (server, client)) in streams.iter_mut().enumerate() {
            let cpu_before = server.cpu()?;
            let client_before = cpu_time(me)?;
            let (elapsed, events) = rt.block_on(stream(client, &format!("s{rep}"), bytes))?;
            chunks[i].push(bytes as f64 / 1024.0 / events.max(1) as f64);
            let cpu = server.cpu()?.saturating_sub(cpu_before);
            let client_cpu = cpu_time(me)?.saturating_sub(client_before);
            client_cpus[i].push(client_cpu.as_secs_f64() * GIB / bytes as f64);
            rates[i].push(mb_per_s(bytes, elapsed));
            cpus[i].push(cpu.as_secs_f64() * GIB / bytes as f64);
        }
    }
    for (server, client) in streams {
        rt.block_on(async {
            client.close().await;
            server.stop().await
        })?;
    }
    let size = format!("{} MiB", bytes >> 20);
    let mut rows = Vec::new();
    for (i, (label, _, target, _)) in STREAMS.iter().enumerate() {
        let mut ratios: Vec<f64> = rates[i].iter().zip(&raw).map(|(r, b)| r / b).collect();
        rows.push(Row {
            name: format!("stream {size} over {label} (decoded, vs raw pipe)"),
            unit: "MB/s",
            value: median(&mut rates[i]),
            baseline: Some(median(&mut raw.clone())),
            target: Target::RatioAtLeast(*target),
            paired: Some(median(&mut ratios)),
        });
    }
    for (i, (label, _, _, cpu_target)) in STREAMS.iter().enumerate() {
        rows.push(Row {
            name: format!("server CPU per GiB streamed, {label}"),
            unit: "s",
            value: median(&mut cpus[i]),
            baseline: None,
            target: cpu_target.map_or(Target::None, Target::AtMost),
            paired: None,
        });
    }
    for (i, (label, _, _, _)) in STREAMS.iter().enumerate() {
        rows.push(Row {
            name: format!("mean output chunk, {label} (for reference)"),
            unit: "KiB",
            value: median(&mut chunks[i]),
            baseline: None,
            target: Target::None,
            paired: None,
        });
    }
    for (i, (label, _, _, _)) in STREAMS.iter().enumerate() {
        rows.push(Row {
            name: format!("bench client CPU per GiB received, {label} (for reference)"),
            unit: "s",
            value: median(&mut client_cpus[i]),
            baseline: None,
            target: Target::None,
            paired: None,
        });
    }
    Ok(rows)
}

/// Rounds in which the baseline and the server take turns (latency figures).
const ROUNDS: usize = 10;

fn echo_rows(bin: &Path, sizes: Sizes, rt: &tokio::runtime::Runtime) -> Result<Vec<Row>> {
    step("pty echo: raw pty + cat and the server, interleaved");
    let mut raw = baseline::RawPty::open()?;
    let mut echo = rt.block_on(Echo::open(bin))?;
    let mut raw_times = Vec::new();
    let mut times = Vec::new();
    for _ in 0..sizes.echo_warmup {
        raw.round_trip()?;
    }
    rt.block_on(echo.round_trips(sizes.echo_warmup, &mut Vec::new()))?;
    let per_round = sizes.echo_count.div_ceil(ROUNDS);
    let mut cpu = Duration::ZERO;
    for _ in 0..ROUNDS {
        for _ in 0..per_round {
            raw_times.push(raw.round_trip()?.as_secs_f64() * 1e6);
        }
        let cpu_before = echo.server.cpu()?;
        rt.block_on(echo.round_trips(per_round, &mut times))?;
        cpu += echo.server.cpu()?.saturating_sub(cpu_before);
    }
    raw.close();
    rt.block_on(echo.close())?;
    let cpu_per_trip = cpu.as_secs_f64() * 1e6 / times.len() as f64;
    Ok(vec![
        Row {
            name: "pty echo of 1 byte over ws, p50 (vs raw pty + cat)".into(),
            unit: "us",
            value: percentile(&mut times, 0.5),
            baseline: Some(percentile(&mut raw_times, 0.5)),
            target: Target::AtMost(100.0),
            paired: None,
        },
        Row {
            name: "pty echo of 1 byte over ws, p99 (vs raw pty + cat)".into(),
            unit: "us",
            value: percentile(&mut times, 0.99),
            baseline: Some(percentile(&mut raw_times, 0.99)),
            target: Target::AtMost(300.0),
            paired: None,
        },
        Row {
            name: "server CPU per pty echo round trip".into(),
            unit: "us",
            value: cpu_per_trip,
            baseline: None,
            target: Target::None,
            paired: None,
        },
    ])
}

fn spawn_rows(bin: &Path, sizes: Sizes, rt: &tokio::runtime::Runtime) -> Result<Vec<Row>> {
    step("spawn: fork/exec/wait and the server, interleaved");
    let max = (sizes.spawn_warmup + sizes.spawn_count + ROUNDS + 16).to_string();
    let (server, mut client) = rt.block_on(async {
        let mut server = Server::ws(bin, "spawn", &["--max-processes", &max]).await?;
        let client = server.client(false).await?;
        anyhow::Ok((server, client))
    })?;
    let mut next = 0;
    let mut discard = Vec::new();
    baseline::fork_exec_wait(sizes.spawn_warmup, &mut discard)?;
    rt.block_on(spawns(
        &mut client,
        &mut next,
        sizes.spawn_warmup,
        &mut discard,
    ))?;
    let per_round = sizes.spawn_count.div_ceil(ROUNDS);
    let mut raw = Vec::new();
    let mut times = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..ROUNDS {
        let mut raw_round = Vec::new();
        let mut round = Vec::new();
        baseline::fork_exec_wait(per_round, &mut raw_round)?;
        rt.block_on(spawns(&mut client, &mut next, per_round, &mut round))?;
        ratios.push(median(&mut round) / median(&mut raw_round));
        raw.append(&mut raw_round);
        times.append(&mut round);
    }
    rt.block_on(async {
        client.close().await;
        server.stop().await
    })?;
    Ok(vec![Row {
        name: "spawn /bin/true to `closed` over ws, p50 (vs fork/exec/wait)".into(),
        unit: "ms",
        value: median(&mut times),
        baseline: Some(median(&mut raw)),
        target: Target::RatioAtMost(1.5),
        paired: Some(median(&mut ratios)),
    }])
}

fn live_rows(bin: &Path, sizes: Sizes, rt: &tokio::runtime::Runtime) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    step("live processes");
    let (threads, rss) = rt.block_on(live_figure(bin, sizes))?;
    rows.push(Row {
        name: format!(
            "{} live processes, each printed once: server threads",
            sizes.live_processes
        ),
        unit: "",
        value: threads as f64,
        baseline: None,
        target: Target::AtMost(16.0),
        paired: None,
    });
    rows.push(Row {
        name: format!(
            "{} live processes, each printed once: server RSS",
            sizes.live_processes
        ),
        unit: "MiB",
        value: rss as f64 / MIB,
        baseline: None,
        target: Target::AtMost(64.0),
        paired: None,
    });
    Ok(rows)
}

fn connection_rows(bin: &Path, sizes: Sizes) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    step("connections");
    let rt = multi_thread()?;
    let fair = rt.block_on(connections_figure(bin, sizes))?;
    rows.push(Row {
        name: format!(
            "{} connections streaming {} MiB each at once: aggregate (vs one connection)",
            sizes.connections,
            sizes.per_connection_bytes >> 20
        ),
        unit: "MB/s",
        value: fair.aggregate,
        baseline: Some(fair.single),
        target: Target::RatioAtLeast(0.8),
        paired: None,
    });
    rows.push(Row {
        name: format!(
            "{} connections at once: slowest connection (vs mean)",
            sizes.connections
        ),
        unit: "MB/s",
        value: fair.slowest,
        baseline: Some(fair.mean),
        target: Target::RatioAtLeast(0.5),
        paired: None,
    });
    Ok(rows)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    WsJson,
    WsBinary,
    WsBinaryWindow,
    Stdio,
}

/// Starts `head -c BYTES /dev/zero` as `name` and receives every event until `closed`,
/// checking seq order and the decoded byte count; returns the wall time and the number
/// of output events.
async fn stream(client: &mut Client, name: &str, bytes: u64) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let id = client
        .start(
            name,
            &["head", "-c", &bytes.to_string(), "/dev/zero"],
            false,
        )
        .await?;
    let mut run = Run::new(name);
    let mut unacked = 0;
    while !run.closed {
        let incoming = within("output", client.recv()).await??;
        if incoming.process_id() == Some(STALLED) {
            continue;
        }
        if let (Some(window), Incoming::Output { seq, len, .. }) = (client.window, &incoming) {
            unacked += *len as u64;
            if unacked >= window / 4 {
                let seq = *seq;
                client.ack(name, seq).await?;
                unacked = 0;
            }
        }
        run.take(incoming, Some(id))?;
    }
    let elapsed = start.elapsed();
    ensure!(run.started, "no start response for {name}");
    ensure!(
        run.bytes == bytes,
        "{name}: decoded {} of {bytes} bytes",
        run.bytes
    );
    ensure!(
        run.exit_code == Some(0),
        "{name} exited with {:?}",
        run.exit_code
    );
    Ok((elapsed, run.outputs))
}

/// The events of one process as they arrive, checked.
struct Run {
    name: String,
    next_seq: u64,
    bytes: u64,
    outputs: u64,
    started: bool,
    exit_code: Option<i32>,
    closed: bool,
}

impl Run {
    fn new(name: &str) -> Run {
        Run {
            name: name.to_owned(),
            next_seq: 1,
            bytes: 0,
            outputs: 0,
            started: false,
            exit_code: None,
            closed: false,
        }
    }

    fn event(&mut self, process_id: &str, seq: u64) -> Result<()> {
        ensure!(
            process_id == self.name,
            "an event of {process_id} while running {}",
            self.name
        );
        ensure!(
            self.started,
            "{process_id}: an event before the start response"
        );
        ensure!(
            seq == self.next_seq,
            "{process_id}: seq {seq}, expected {}",
            self.next_seq
        );
        self.next_seq += 1;
        Ok(())
    }

    fn take(&mut self, incoming: Incoming, start_id: Option<u64>) -> Result<()> {
        match incoming {
            Incoming::Output {
                process_id,
                seq,
                len,
            } => {
                self.event(&process_id, seq)?;
                self.bytes += len as u64;
                self.outputs += 1;
            }
            Incoming::Exited(e) => {
                self.event(&e.process_id, e.seq)?;
                self.exit_code = Some(e.exit_code);
            }
            Incoming::Closed(c) => {
                self.event(&c.process_id, c.seq)?;
                self.closed = true;
            }
            Incoming::Response { id, error, .. } => {
                if let Some(error) = error {
                    bail!("{}: request {id:?} failed: {error}", self.name);
                }
                if id.is_some() && id == start_id {
                    self.started = true;
                }
            }
        }
        Ok(())
    }
}

/// A server with `cat` behind a pty in raw mode, for one-byte round trips.
struct Echo {
    server: Server,
    client: Client,
    run: Run,
}

impl Echo {
    const NAME: &str = "echo";

    async fn open(bin: &Path) -> Result<Echo> {
        let mut server = Server::ws(bin, "echo", &[]).await?;
        let mut client = server.client(false).await?;
        let start_id = client
            .start(Echo::NAME, &["sh", "-c", baseline::ECHO_SCRIPT], true)
            .await?;
        let mut run = Run::new(Echo::NAME);
        // Wait for the script's "R": the terminal is in raw mode and `cat` is running.
        loop {
            let incoming = within("the echo script", client.recv()).await??;
            let output = matches!(incoming, Incoming::Output { .. });
            run.take(incoming, Some(start_id))?;
            if output {
                ensure!(
                    client.chunk() == b"R",
                    "unexpected output {:?}",
                    client.chunk()
                );
                break;
            }
        }
        Ok(Echo {
            server,
            client,
            run,
        })
    }

    /// `count` round trips of one byte, pushing each one's latency in µs to `times`.
    async fn round_trips(&mut self, count: usize, times: &mut Vec<f64>) -> Result<()> {
        for _ in 0..count {
            let begin = Instant::now();
            self.client.write(Echo::NAME, b"x").await?;
            loop {
                match within("an echo", self.client.recv()).await?? {
                    Incoming::Output {
                        process_id,
                        seq,
                        len,
                    } => {
                        self.run.event(&process_id, seq)?;
                        ensure!(
                            len == 1 && self.client.chunk() == b"x",
                            "echoed {:?}",
                            self.client.chunk()
                        );
                        break;
                    }
                    Incoming::Response { result, error, .. } => {
                        if let Some(error) = error {
                            bail!("process/write failed: {error}");
                        }
                        let result: ProcessWriteResult =
                            serde_json::from_value(result.context("no result")?)?;
                        ensure!(result.status == WriteStatus::Accepted, "write {result:?}");
                    }
                    other => bail!("unexpected {other:?} during the echo"),
                }
            }
            times.push(begin.elapsed().as_secs_f64() * 1e6);
        }
        Ok(())
    }

    async fn close(self) -> Result<()> {
        self.client.close().await;
        self.server.stop().await
    }
}

/// `count` spawns of `/bin/true`, each from sending `process/start` to its
/// `process/closed`, in milliseconds.
async fn spawns(
    client: &mut Client,
    next: &mut usize,
    count: usize,
    times: &mut Vec<f64>,
) -> Result<()> {
    for _ in 0..count {
        let name = format!("t{next}");
        *next += 1;
        let begin = Instant::now();
        let id = client.start(&name, &["/bin/true"], false).await?;
        let mut run = Run::new(&name);
        while !run.closed {
            let incoming = within("a spawn", client.recv()).await??;
            run.take(incoming, Some(id))?;
        }
        let elapsed = begin.elapsed();
        ensure!(
            run.exit_code == Some(0),
            "/bin/true exited {:?}",
            run.exit_code
        );
        times.push(elapsed.as_secs_f64() * 1e3);
    }
    Ok(())
}

/// Starts `live_processes` processes that print once and stay alive (at most 32 starts in
/// flight); once every one has printed, returns the server's threads and RSS.
async fn live_figure(bin: &Path, sizes: Sizes) -> Result<(u64, u64)> {
    const WINDOW: usize = 32;
    let max = (sizes.live_processes + 16).to_string();
    let mut server = Server::ws(bin, "live", &["--max-processes", &max]).await?;
    let mut client = server.client(false).await?;
    let script = "echo ready; exec sleep 600";
    let mut sent = 0;
    let mut answered = 0;
    let mut printed = 0;
    let mut pending: HashMap<u64, String> = HashMap::new();
    while printed < sizes.live_processes || answered < sizes.live_processes {
        if sent < sizes.live_processes && pending.len() < WINDOW {
            let name = format!("live{sent}");
            let id = client.start(&name, &["sh", "-c", script], false).await?;
            pending.insert(id, name);
            sent += 1;
            continue;
        }
        match within("live processes", client.recv()).await?? {
            Incoming::Response { id, error, .. } => {
                let name = id.and_then(|id| pending.remove(&id));
                if let Some(error) = error {
                    bail!("process/start {name:?} failed: {error}");
                }
                ensure!(name.is_some(), "an unexpected response {id:?}");
                answered += 1;
            }
            Incoming::Output { .. } => {
                ensure!(client.chunk() == b"ready\n", "printed {:?}", client.chunk());
                printed += 1;
            }
            other => bail!("unexpected {other:?}: a live process ended"),
        }
    }
    let threads = server.threads()?;
    let rss = server.rss()?;
    client.close().await;
    server.stop().await?;
    Ok((threads, rss))
}

struct Fairness {
    single: f64,
    aggregate: f64,
    slowest: f64,
    mean: f64,
}

/// One connection streaming `connections × per_connection_bytes`, then `connections`
/// connections streaming `per_connection_bytes` each at once.
async fn connections_figure(bin: &Path, sizes: Sizes) -> Result<Fairness> {
    let mut server = Server::ws(bin, "connections", &[]).await?;
    let total = sizes.per_connection_bytes * sizes.connections as u64;
    let mut one = server.client(false).await?;
    let single = mb_per_s(total, stream(&mut one, "single", total).await?.0);
    one.close().await;

    let mut clients = Vec::new();
    for _ in 0..sizes.connections {
        clients.push(server.client(false).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let bytes = sizes.per_connection_bytes;
        tasks.push(tokio::spawn(async move {
            let result = stream(&mut client, &format!("c{i}"), bytes).await;
            client.close().await;
            result.map(|_| start.elapsed())
        }));
    }
    let mut rates = Vec::new();
    let mut last = Duration::ZERO;
    for task in tasks {
        let done = task.await??;
        last = last.max(done);
        rates.push(mb_per_s(sizes.per_connection_bytes, done));
    }
    server.stop().await?;
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(Fairness {
        single,
        aggregate: mb_per_s(total, last),
        slowest,
        mean,
    })
}
