//! Load: 64 WebSocket connections × 8 processes each streaming 4 MiB of random bytes: every byte reaches the right client in order (checksums), and no session can touch another's processes.
//!
//! A test binary of its own, so that it does not compete for the CPU with the
//! end-to-end tests and their deadlines.

// Test helpers fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The end-to-end tests' client; this binary uses part of it.
#[allow(dead_code)]
#[path = "e2e/client.rs"]
mod client;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use exec_server_protocol::{ErrorCode, method, notification};
use serde::Deserialize;
use serde_json::json;

use crate::client::{Client, ServerProc, within};

const CONNECTIONS: usize = 64;
const PROCESSES: usize = 8;
const BYTES: usize = 4 * 1024 * 1024;

/// The CRC of POSIX `cksum` (CRC-32, polynomial 0x04C11DB7, MSB first, over the data
/// and then its length), built bytewise from a table.
struct Cksum {
    table: [u32; 256],
}

impl Cksum {
    fn new() -> Self {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut c = (i as u32) << 24;
            for _ in 0..8 {
                c = if c & 0x8000_0000 != 0 {
                    (c << 1) ^ 0x04C1_1DB7
                } else {
                    c << 1
                };
            }
            *entry = c;
        }
        Cksum { table }
    }

    fn update(&self, mut crc: u32, bytes: &[u8]) -> u32 {
        for &b in bytes {
            crc = (crc << 8) ^ self.table[((crc >> 24) as u8 ^ b) as usize];
        }
        crc
    }

    fn finish(&self, mut crc: u32, mut len: u64) -> u32 {
        while len > 0 {
            crc = self.update(crc, &[len as u8]);
            len >>= 8;
        }
        !crc
    }
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(borrow)]
    method: &'a str,
    #[serde(borrow)]
    params: PushParams<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushParams<'a> {
    #[serde(borrow)]
    process_id: &'a str,
    seq: u64,
    #[serde(borrow, default)]
    stream: Option<&'a str>,
    #[serde(borrow, default)]
    chunk: Option<&'a str>,
}

/// What one process delivered.
#[derive(Default)]
struct Received {
    next_seq: u64,
    crc: u32,
    len: u64,
    stderr: Vec<u8>,
    closed: bool,
}

/// Another session's process ids are unknown to this one, whatever the method.
async fn cannot_touch(c: &mut Client, other: &str) {
    c.call_err(
        method::PROCESS_READ,
        json!({"processId": other}),
        ErrorCode::ProcessNotFound,
    )
    .await;
    c.call_err(
        method::PROCESS_RESIZE,
        json!({"processId": other, "rows": 10, "cols": 10}),
        ErrorCode::ProcessNotFound,
    )
    .await;
    let write = c
        .call(
            method::PROCESS_WRITE,
            json!({"processId": other, "chunk": "eA=="}),
        )
        .await;
    assert_eq!(write, json!({"status": "unknownProcess"}));
    let close = c
        .call(method::PROCESS_CLOSE_STDIN, json!({"processId": other}))
        .await;
    assert_eq!(close, json!({"status": "unknownProcess"}));
    let signal = c
        .call(
            method::PROCESS_SIGNAL,
            json!({"processId": other, "signal": "SIGKILL"}),
        )
        .await;
    assert_eq!(signal, json!({"delivered": false}));
    let terminate = c
        .call(
            method::PROCESS_TERMINATE,
            json!({"processId": other, "graceMs": 0}),
        )
        .await;
    assert_eq!(terminate, json!({"running": false}));
}

async fn one_client(k: usize, url: String, barrier: Arc<tokio::sync::Barrier>, crc: Arc<Cksum>) {
    let mut c = Client::ws(&url).await.expect("connect");
    c.handshake().await;
    let script = format!("exec 3>&1; head -c {BYTES} /dev/urandom | tee /dev/fd/3 | cksum >&2");
    let mut ids = Vec::new();
    for i in 0..PROCESSES {
        let params = json!({"processId": format!("c{k}p{i}"), "argv": ["sh", "-c", &script],
                            "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}});
        ids.push(c.send_request(method::PROCESS_START, params).await);
    }
    for id in &ids {
        let r = c.response(id).await;
        assert!(r.get("error").is_none(), "{r}");
    }
    // Every session has started its processes: now try the neighbour's.
    barrier.wait().await;
    let other = format!("c{}p0", (k + 1) % CONNECTIONS);
    cannot_touch(&mut c, &other).await;
    let list = c.call(method::PROCESS_LIST, json!({})).await;
    let mut listed: Vec<String> = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["processId"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut own: Vec<String> = (0..PROCESSES).map(|i| format!("c{k}p{i}")).collect();
    own.sort();
    assert_eq!(
        listed, own,
        "connection {k} lists another session's processes: {list}"
    );

    // Everything pushed: in order, to this client only, every byte.
    let engine = base64::engine::general_purpose::STANDARD;
    let mut received: HashMap<String, Received> = HashMap::new();
    // Pushes that arrived while the calls above waited for their responses.
    let mut pending: Vec<String> = c
        .take_notifications()
        .iter()
        .map(|v| v.to_string())
        .collect();
    pending.reverse();
    let mut closed = 0;
    let mut bytes = Vec::new();
    while closed < PROCESSES {
        let text = match pending.pop() {
            Some(text) => text,
            None => within("a push", c.recv_text())
                .await
                .expect("receive")
                .expect("the connection stayed open"),
        };
        let push: Push<'_> = serde_json::from_str(&text).expect("a notification");
        let p = push.params;
        assert!(
            p.process_id.starts_with(&format!("c{k}p")),
            "connection {k} got an event of {}",
            p.process_id
        );
        let r = received.entry(p.process_id.to_owned()).or_default();
        assert_eq!(p.seq, r.next_seq + 1, "seq gap for {}", p.process_id);
        r.next_seq = p.seq;
        if push.method == notification::PROCESS_CLOSED {
            r.closed = true;
            closed += 1;
            continue;
        }
        if push.method != notification::PROCESS_OUTPUT {
            continue;
        }
        bytes.clear();
        engine
            .decode_vec(p.chunk.unwrap_or(""), &mut bytes)
            .expect("base64");
        if p.stream == Some("stderr") {
            r.stderr.extend_from_slice(&bytes);
        } else {
            r.crc = crc.update(r.crc, &bytes);
            r.len += bytes.len() as u64;
        }
    }
    for (id, r) in &received {
        assert!(r.closed, "{id}");
        assert_eq!(r.len, BYTES as u64, "{id}: bytes delivered");
        let expected = String::from_utf8_lossy(&r.stderr).into_owned();
        let got = format!("{} {}", crc.finish(r.crc, r.len), r.len);
        assert_eq!(expected.trim(), got, "{id}: checksum");
    }
    assert_eq!(received.len(), PROCESSES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_streaming_get_every_byte_and_only_their_own() -> anyhow::Result<()> {
    let crc = Arc::new(Cksum::new());
    // The CRC matches cksum(1) on a known input.
    assert_eq!(crc.finish(crc.update(0, b"hello\n"), 6), 3_015_617_425);
    // Closed processes stay listed for the whole test, however long it takes.
    let server = ServerProc::ws(&["--retain-closed-ms", "600000"]).await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|k| {
            tokio::spawn(one_client(
                k,
                server.url().to_owned(),
                barrier.clone(),
                crc.clone(),
            ))
        })
        .collect();
    for client in clients {
        // Generous: all of them stream concurrently on a small machine.
        tokio::time::timeout(std::time::Duration::from_secs(240), client)
            .await
            .expect("a client finished in time")
            .expect("a client succeeded");
    }
    Ok(())
}
