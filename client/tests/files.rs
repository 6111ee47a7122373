//! The remote file API at the edge of the server's message size limit: a request the
//! server refuses as too large (its id unread, so the error has `id: null`) fails that
//! call with -32001 instead of leaving it waiting, while calls in flight beside it get
//! their own answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, within};
use exec_server_client::{
    Client, ConnectOptions, ErrorCode, ExecBackend, RemoteBackend, WriteOptions,
};
use exec_server_rpc::RpcConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_write_fails_alone_and_the_connection_goes_on() {
    let limit = 256 * 1024;
    let server = TestServer::with_config(RpcConfig {
        max_message_bytes: limit,
        ..RpcConfig::default()
    })
    .await;
    let client = Client::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    let backend = RemoteBackend::new(client);
    let files = backend.files();
    let dir = std::env::temp_dir().join(format!("exec-server-client-limit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();

    // Two refused writes (one far over the limit, one just over: base64 makes 3 bytes 4)
    // among calls that fit, all in flight at once.
    let big = vec![7u8; 1024 * 1024];
    let just_over = vec![8u8; limit * 3 / 4 + 1024];
    let fits = vec![9u8; 64 * 1024];
    let (big_path, over_path, small_path) = (path("big"), path("over"), path("small"));
    let dir_path = dir.display().to_string();
    let (big_write, stat, over_write, small_write) = within("every call to be answered", async {
        tokio::join!(
            files.write(&big_path, big.as_slice().into(), WriteOptions::default()),
            files.stat(&dir_path, true),
            files.write(
                &over_path,
                just_over.as_slice().into(),
                WriteOptions::default()
            ),
            files.write(&small_path, fits.as_slice().into(), WriteOptions::default()),
        )
    })
    .await;
    for refused in [big_write, over_write] {
        let err = refused.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::LimitReached), "{err}");
        assert!(err.to_string().contains("maximum message size"), "{err}");
    }
    assert!(stat.unwrap().size > 0);
    assert_eq!(small_write.unwrap(), fits.len() as u64);

    // The connection still works, and nothing was written by the refused calls.
    let read = within("a read after", files.read(&small_path, 0, None))
        .await
        .unwrap();
    assert!(read.data.as_bytes() == fits.as_slice());
    for name in ["big", "over"] {
        let err = files.stat(&path(name), true).await.unwrap_err();
        assert_eq!(err.errno().as_deref(), Some("ENOENT"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
