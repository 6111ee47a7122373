//! `--max-retained-bytes` over the real binary: the sessions of two connections share one limit, and past it the oldest output of closed processes is evicted before that of running ones, reported by `process/read` as any eviction.

use exec_server_protocol::{method, notification};
use serde_json::{Value, json};

use crate::client::{Client, ServerProc};

/// Every process prints exactly this many bytes, in one write.
const OUT: usize = 1000;

/// Starts `id` printing OUT bytes (and then running on when `runs`) and waits for its
/// output, and its close when it does not run on.
async fn run(c: &mut Client, id: &str, runs: bool) {
    let script = if runs {
        format!("head -c {OUT} /dev/zero; exec sleep 600")
    } else {
        format!("head -c {OUT} /dev/zero")
    };
    c.start(id, &["sh", "-c", &script], json!({})).await;
    let mut printed = 0;
    loop {
        let n = c.notification().await;
        if n["params"]["processId"] != id {
            continue;
        }
        if n["method"] == notification::PROCESS_OUTPUT {
            printed += crate::client::unb64(&n["params"]["chunk"]).len();
            if runs && printed == OUT {
                return;
            }
        }
        if n["method"] == notification::PROCESS_CLOSED {
            assert_eq!(printed, OUT, "{id}");
            return;
        }
    }
}

/// (bytes retained, truncated, evictedBytes) of a read of `id` from `after_seq`.
async fn kept(c: &mut Client, id: &str, after_seq: u64) -> (usize, Value, Value) {
    let r = c
        .call(
            method::PROCESS_READ,
            json!({"processId": id, "afterSeq": after_seq}),
        )
        .await;
    let bytes = r["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| crate::client::unb64(&c["chunk"]).len())
        .sum();
    (bytes, r["truncated"].clone(), r["evictedBytes"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_wide_limit_evicts_closed_output_first_and_reports_it() {
    // Room for three events of OUT bytes (each counted with 64 bytes of bookkeeping).
    let limit = (3 * (OUT + exec_server_core::EVENT_OVERHEAD)).to_string();
    let mut server = ServerProc::ws(&["--max-retained-bytes", &limit])
        .await
        .unwrap();
    let mut a = server.client().await.unwrap();
    a.handshake().await;
    let mut b = server.client().await.unwrap();
    b.handshake().await;
    let intact = (OUT, json!(false), json!(0));
    let evicted = (0, json!(true), json!(OUT));

    run(&mut a, "old", false).await;
    run(&mut b, "run", true).await;
    run(&mut a, "new", false).await;
    assert_eq!(kept(&mut a, "old", 0).await, intact);

    // Over the limit: the oldest event of a closed process goes.
    run(&mut b, "last", false).await;
    assert_eq!(kept(&mut a, "old", 0).await, evicted);
    // A cursor past it has lost nothing.
    assert_eq!(kept(&mut a, "old", 1).await, (0, json!(false), json!(OUT)));

    // `run` holds an older event than `new`, but it is still running.
    run(&mut b, "more", false).await;
    assert_eq!(kept(&mut a, "new", 0).await, evicted);
    assert_eq!(kept(&mut b, "run", 0).await, intact);
    assert_eq!(kept(&mut b, "last", 0).await, intact);
    assert_eq!(kept(&mut b, "more", 0).await, intact);
    b.call(
        method::PROCESS_TERMINATE,
        json!({"processId": "run", "graceMs": 0}),
    )
    .await;
    b.events_until_closed("run").await;
}
