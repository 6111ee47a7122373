//! The memory figure: the server's resident memory idle after start-up, at the peak of many connections streaming from many processes at once, and after every process was forgotten, with the time it took to give the memory back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::client::{Client, within};
use super::figures::{Run, multi_thread, step};
use super::server::Server;
use super::{Row, Sizes, Target};

const MIB: f64 = 1024.0 * 1024.0;

/// SPEC 7.3's defaults: what one process, and all of them together, retain at most.
const RETAIN_BYTES: u64 = 1 << 20;
const MAX_RETAINED_BYTES: u64 = 256 << 20;

/// SPEC 7.3: back within this much of the idle server's RSS …
const RETURN_MARGIN: f64 = 64.0 * MIB;
/// … within this long once every process is forgotten.
const RETURN_WITHIN: Duration = Duration::from_secs(10);
/// How long a detached session lives in this figure (the server's `--session-ttl-ms`):
/// closing the connections forgets every process this long after.
const SESSION_TTL: Duration = Duration::from_secs(1);
/// How often RSS is sampled while memory is given back.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// RSS that moved less than this for [`SETTLED_FOR`] has settled.
const SETTLED_SLACK: f64 = 1.0 * MIB;
const SETTLED_FOR: Duration = Duration::from_secs(1);

/// What the run measured, in bytes and seconds.
struct Memory {
    idle: f64,
    peak: f64,
    retained: f64,
    at_rest: f64,
    returned_after: Option<Duration>,
}

pub fn rows(bin: &Path, sizes: Sizes) -> Result<Vec<Row>> {
    step("memory: idle, many processes streaming at once, everything forgotten");
    let rt = multi_thread()?;
    let m = rt.block_on(measure(bin, sizes))?;
    let load = format!(
        "{} connections x {} processes x {} MiB",
        sizes.memory_connections,
        sizes.memory_processes,
        sizes.memory_bytes >> 20
    );
    let processes = (sizes.memory_connections * sizes.memory_processes) as u64;
    // What retention holds once every process has printed everything (SPEC defaults).
    let retained = (processes * sizes.memory_bytes.min(RETAIN_BYTES)).min(MAX_RETAINED_BYTES);
    let retained_mib = retained as f64 / MIB;
    let returned = match m.returned_after {
        Some(after) => after.as_secs_f64(),
        None => f64::INFINITY,
    };
    Ok(vec![
        Row {
            name: "memory: server RSS idle after start-up".into(),
            unit: "MiB",
            value: m.idle / MIB,
            baseline: None,
            target: Target::None,
            paired: None,
        },
        Row {
            name: format!(
                "memory: {load}, server peak RSS (VmHWM; baseline: output retained at most)"
            ),
            unit: "MiB",
            value: m.peak / MIB,
            baseline: Some(retained_mib),
            target: Target::AtMost(1.3 * retained_mib + 32.0),
            paired: None,
        },
        Row {
            name: format!("memory: {load}, RSS once every process closed (for reference)"),
            unit: "MiB",
            value: m.retained / MIB,
            baseline: None,
            target: Target::None,
            paired: None,
        },
        Row {
            name: "memory: RSS at rest after every process was forgotten (vs idle)".into(),
            unit: "MiB",
            value: m.at_rest / MIB,
            baseline: Some(m.idle / MIB),
            target: Target::AtMost((m.idle + RETURN_MARGIN) / MIB),
            paired: None,
        },
        Row {
            name: format!(
                "memory: time until RSS is within 64 MiB of idle, from closing the connections ({} s of session TTL included)",
                SESSION_TTL.as_secs()
            ),
            unit: "s",
            value: returned,
            baseline: None,
            target: Target::AtMost((RETURN_WITHIN + SESSION_TTL).as_secs_f64()),
            paired: None,
        },
    ])
}

async fn measure(bin: &Path, sizes: Sizes) -> Result<Memory> {
    let ttl = SESSION_TTL.as_millis().to_string();
    let mut server = Server::ws(bin, "memory", &["--session-ttl-ms", &ttl]).await?;
    let idle = server.rss()? as f64;
    let mut clients = Vec::new();
    for _ in 0..sizes.memory_connections {
        clients.push(server.client(false).await?);
    }
    // Every client streams until each of its processes closed, then waits for the others,
    // so that every process is retained at once; then they all close their connections.
    let all_closed = Arc::new(tokio::sync::Barrier::new(sizes.memory_connections + 1));
    let disconnect = Arc::new(tokio::sync::Barrier::new(sizes.memory_connections + 1));
    let mut tasks = Vec::new();
    for (k, client) in clients.into_iter().enumerate() {
        let all_closed = all_closed.clone();
        let disconnect = disconnect.clone();
        tasks.push(tokio::spawn(async move {
            let result = stream_all(client, k, sizes).await;
            all_closed.wait().await;
            disconnect.wait().await;
            let client = result?;
            client.close().await;
            anyhow::Ok(())
        }));
    }
    within(
        "every process of the memory figure to close",
        all_closed.wait(),
    )
    .await?;
    let retained = server.rss()? as f64;
    disconnect.wait().await;
    for task in tasks {
        within("a client of the memory figure", task).await???;
    }
    let closed_at = Instant::now();
    let peak = server.peak_rss()? as f64;

    // Sessions expire after their TTL and forget their processes; the server then has
    // RETURN_WITHIN to give the memory back.
    let deadline = closed_at + SESSION_TTL + RETURN_WITHIN;
    let mut returned_after = None;
    let mut settled_since = (Instant::now(), server.rss()? as f64);
    let mut at_rest;
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let now = Instant::now();
        at_rest = server.rss()? as f64;
        if returned_after.is_none() && at_rest <= idle + RETURN_MARGIN {
            returned_after = Some(now - closed_at);
        }
        if (at_rest - settled_since.1).abs() > SETTLED_SLACK {
            settled_since = (now, at_rest);
        }
        let settled = now - settled_since.0 >= SETTLED_FOR;
        if (returned_after.is_some() && settled) || now >= deadline {
            break;
        }
    }
    server.stop().await?;
    Ok(Memory {
        idle,
        peak,
        retained,
        at_rest,
        returned_after,
    })
}

/// Starts every process of connection `k` at once and receives all their events until
/// each one closed, checking seqs and byte counts.
async fn stream_all(mut client: Client, k: usize, sizes: Sizes) -> Result<Client> {
    let bytes = sizes.memory_bytes.to_string();
    let mut runs: HashMap<String, Run> = HashMap::new();
    let mut starts: HashMap<u64, String> = HashMap::new();
    for i in 0..sizes.memory_processes {
        let name = format!("m{k}p{i}");
        let id = client
            .start(&name, &["head", "-c", &bytes, "/dev/zero"], false)
            .await?;
        starts.insert(id, name.clone());
        runs.insert(name.clone(), Run::new(&name));
    }
    let mut closed = 0;
    while closed < sizes.memory_processes {
        let incoming = within("output of the memory figure", client.recv()).await??;
        let (name, start_id) = match &incoming {
            super::client::Incoming::Output { process_id, .. } => (process_id.clone(), None),
            super::client::Incoming::Exited(e) => (e.process_id.clone(), None),
            super::client::Incoming::Closed(c) => (c.process_id.clone(), None),
            super::client::Incoming::Response { id, .. } => {
                let name = id
                    .and_then(|id| starts.get(&id).cloned())
                    .context("a response to no start")?;
                (name, *id)
            }
        };
        let Some(run) = runs.get_mut(&name) else {
            bail!("an event of {name}, which connection {k} did not start");
        };
        let was_closed = run.closed;
        run.take(incoming, start_id)?;
        if run.closed && !was_closed {
            closed += 1;
        }
    }
    for (name, run) in &runs {
        ensure!(
            run.bytes == sizes.memory_bytes && run.exit_code == Some(0),
            "{name}: {} of {} bytes, exit {:?}",
            run.bytes,
            sizes.memory_bytes,
            run.exit_code
        );
    }
    Ok(client)
}
