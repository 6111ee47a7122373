//! The `fs/*` methods (SPEC section 12) through the real binary, over stdio and WebSocket:
//! large binary files in chunks, errno names (EACCES as an unprivileged user), atomic writes,
//! recursive removal next to symlinks, stat, list, mkdir and rename.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use exec_server_protocol::{ErrorCode, method};
use serde_json::{Value, json};

use crate::client::{
    Client, Kind, ServerProc, TempDir, b64, check, is_root, nobody, rss_kib, spawn_with, unb64,
};

pub fn s(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// Deterministic, non-repeating test bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A -32020 error: checks `data.errno` and that the message names `path`.
pub async fn file_error(c: &mut Client, method: &str, params: Value, errno: &str, path: &Path) {
    let e = c.call_err(method, params, ErrorCode::FileError).await;
    assert_eq!(e["data"], json!({"errno": errno}), "{method}: {e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(&s(path)), "{method}: {message:?}");
}

pub async fn big_binary_file_in_chunks(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs");
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let path = dir.join("big.bin");
    let bytes = pattern(20 * 1024 * 1024, 7);

    // Written in 3 MiB chunks: the first creates and truncates, the rest go at their offsets.
    const WRITE_CHUNK: usize = 3 * 1024 * 1024;
    for (i, chunk) in bytes.chunks(WRITE_CHUNK).enumerate() {
        let mut params = json!({"path": s(&path), "data": b64(chunk)});
        if i > 0 {
            params["offset"] = json!(i * WRITE_CHUNK);
        }
        let r = c.call(method::FS_WRITE, params).await;
        assert_eq!(r, json!({"bytesWritten": chunk.len()}));
    }
    assert!(std::fs::read(&path)? == bytes, "the file on disk differs");

    // Read back in chunks of the default (and largest) size.
    let mut back = Vec::with_capacity(bytes.len());
    loop {
        let r = c
            .call(
                method::FS_READ,
                json!({"path": s(&path), "offset": back.len()}),
            )
            .await;
        let data = unb64(&r["data"]);
        assert!(data.len() <= 4 << 20);
        back.extend_from_slice(&data);
        assert_eq!(r["size"], bytes.len());
        if r["eof"] == true {
            break;
        }
        assert_eq!(data.len(), 4 << 20, "a short read before the end");
    }
    assert!(back == bytes, "the bytes read back differ");
    Ok(())
}

pub async fn recursive_remove_keeps_what_symlinks_point_to(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs");
    let outside = dir.join("outside");
    std::fs::create_dir_all(outside.join("sub"))?;
    std::fs::write(outside.join("keep"), b"keep")?;
    std::fs::write(outside.join("sub/keep"), b"keep")?;
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("a/b"))?;
    std::fs::write(tree.join("a/b/file"), b"x")?;
    symlink(&outside, tree.join("to-outside"))?;
    symlink(&outside, tree.join("a/b/deep-link"))?;
    symlink(outside.join("keep"), tree.join("a/file-link"))?;

    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    // Without `recursive`, a non-empty directory stays.
    file_error(
        &mut c,
        method::FS_REMOVE,
        json!({"path": s(&tree)}),
        "ENOTEMPTY",
        &tree,
    )
    .await;
    assert_eq!(
        c.call(
            method::FS_REMOVE,
            json!({"path": s(&tree), "recursive": true})
        )
        .await,
        json!({})
    );
    assert!(!tree.exists());
    assert_eq!(std::fs::read(outside.join("keep"))?, b"keep");
    assert_eq!(std::fs::read(outside.join("sub/keep"))?, b"keep");
    // A symlink to a directory is removed itself.
    let link = dir.join("link");
    symlink(&outside, &link)?;
    c.call(
        method::FS_REMOVE,
        json!({"path": s(&link), "recursive": true}),
    )
    .await;
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert_eq!(std::fs::read(outside.join("sub/keep"))?, b"keep");
    assert_eq!(dir.names(), ["outside"]);
    Ok(())
}

pub async fn errors(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs");
    let file = dir.join("file");
    std::fs::write(&file, b"x")?;
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;

    // Like process/*, fs/* needs the handshake.
    let e = c
        .call_err(
            method::FS_STAT,
            json!({"path": s(&file)}),
            ErrorCode::InvalidRequest,
        )
        .await;
    assert!(e["message"].as_str().unwrap().contains(method::INITIALIZE));
    c.handshake().await;

    // A relative path is invalid params, for every method.
    let relative = [
        (method::FS_READ, json!({"path": "tmp/x"})),
        (method::FS_WRITE, json!({"path": "x", "data": ""})),
        (method::FS_STAT, json!({"path": "./x"})),
        (method::FS_LIST, json!({"path": ""})),
        (method::FS_MKDIR, json!({"path": "~/x", "parents": true})),
        (method::FS_REMOVE, json!({"path": "x", "recursive": true})),
        (method::FS_RENAME, json!({"from": s(&file), "to": "x"})),
        (method::FS_CHMOD, json!({"path": "x", "mode": 0o644})),
    ];
    for (name, params) in relative {
        let e = c.call_err(name, params, ErrorCode::InvalidParams).await;
        assert!(e.get("data").is_none(), "{e}");
    }
    // Bad combinations, a bad mode, bad base64.
    for params in [
        json!({"path": s(&file), "data": "", "offset": 0, "append": true}),
        json!({"path": s(&file), "data": "", "atomic": true, "offset": 1}),
        json!({"path": s(&file), "data": "", "atomic": true, "append": true}),
        json!({"path": s(&file), "data": "", "mode": 0o10000}),
        json!({"path": s(&file), "data": "not base64!"}),
    ] {
        c.call_err(method::FS_WRITE, params, ErrorCode::InvalidParams)
            .await;
    }
    assert_eq!(
        std::fs::read(&file)?,
        b"x",
        "a refused write changed the file"
    );

    // OS failures: -32020 with the errno's name and the path in the message.
    let missing = dir.join("missing");
    file_error(
        &mut c,
        method::FS_READ,
        json!({"path": s(&missing)}),
        "ENOENT",
        &missing,
    )
    .await;
    file_error(
        &mut c,
        method::FS_STAT,
        json!({"path": s(&missing)}),
        "ENOENT",
        &missing,
    )
    .await;
    let under_file = file.join("child");
    file_error(
        &mut c,
        method::FS_READ,
        json!({"path": s(&under_file)}),
        "ENOTDIR",
        &under_file,
    )
    .await;
    file_error(
        &mut c,
        method::FS_LIST,
        json!({"path": s(&file)}),
        "ENOTDIR",
        &file,
    )
    .await;
    file_error(
        &mut c,
        method::FS_READ,
        json!({"path": s(&dir.0)}),
        "EISDIR",
        &dir.0,
    )
    .await;
    file_error(
        &mut c,
        method::FS_MKDIR,
        json!({"path": s(&file)}),
        "EEXIST",
        &file,
    )
    .await;
    Ok(())
}

pub async fn eacces(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs");
    let secret = dir.join("secret");
    std::fs::write(&secret, b"secret")?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let locked = dir.join("locked");
    std::fs::create_dir(&locked)?;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700))?;

    let mut server = if is_root() {
        let Some((uid, gid)) = nobody() else {
            eprintln!("skipped: running as root and there is no `nobody` account to drop to");
            return Ok(());
        };
        // The server runs as `nobody`: root's 0o600 file and 0o700 directory are closed to it.
        spawn_with(kind, &[], move || {
            // SAFETY: plain system calls on integers, between fork and exec.
            unsafe {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            Ok(())
        })
        .await?
    } else {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000))?;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000))?;
        ServerProc::start(kind, &[]).await?
    };
    let mut c = server.client().await?;
    c.handshake().await;
    file_error(
        &mut c,
        method::FS_READ,
        json!({"path": s(&secret)}),
        "EACCES",
        &secret,
    )
    .await;
    file_error(
        &mut c,
        method::FS_LIST,
        json!({"path": s(&locked)}),
        "EACCES",
        &locked,
    )
    .await;
    let inside = locked.join("new");
    file_error(
        &mut c,
        method::FS_WRITE,
        json!({"path": s(&inside), "data": b64(b"x")}),
        "EACCES",
        &inside,
    )
    .await;
    // An atomic write where the server may not create its temporary file.
    file_error(
        &mut c,
        method::FS_WRITE,
        json!({"path": s(&dir.join("new")), "data": b64(b"x"), "atomic": true}),
        "EACCES",
        &dir.0,
    )
    .await;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700))?;
    assert_eq!(dir.names(), ["locked", "secret"]);
    Ok(())
}

pub async fn atomic_writes(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs");
    let path = dir.join("swap");
    const LEN: usize = 256 * 1024;
    let a = vec![b'a'; LEN];
    let b = vec![b'b'; LEN];
    std::fs::write(&path, &a)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))?;
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;

    // Writes and reads in flight together (the server runs them concurrently): every read
    // sees all of the old content or all of the new.
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for round in 0..40 {
        let data = if round % 2 == 0 { &b } else { &a };
        writes.push(
            c.send_request(
                method::FS_WRITE,
                json!({"path": s(&path), "data": b64(data), "atomic": true}),
            )
            .await,
        );
        reads.push(
            c.send_request(method::FS_READ, json!({"path": s(&path)}))
                .await,
        );
    }
    for id in writes {
        let r = c.response(&id).await;
        assert_eq!(r["result"], json!({"bytesWritten": LEN}), "{r}");
    }
    for id in reads {
        let r = c.response(&id).await;
        let data = unb64(&r["result"]["data"]);
        assert_eq!(data.len(), LEN, "a partial file was read");
        assert!(
            data.iter().all(|&x| x == data[0]),
            "a read saw old and new content mixed"
        );
    }
    // The file kept its mode, and no temporary file remains.
    assert_eq!(
        std::fs::metadata(&path)?.permissions().mode() & 0o7777,
        0o640
    );
    assert_eq!(dir.names(), ["swap"]);
    Ok(())
}

pub async fn a_failed_atomic_write_leaves_the_file_and_no_temporary(
    kind: Kind,
) -> anyhow::Result<()> {
    let dir = TempDir::new("fs");
    let path = dir.join("config");
    std::fs::write(&path, b"old content")?;
    // The server may write files of at most 1 MiB (EFBIG past that, SIGXFSZ ignored).
    let mut server = spawn_with(kind, &[], || {
        let limit = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        // SAFETY: plain system calls between fork and exec; limit outlives the call.
        unsafe {
            check(libc::setrlimit(libc::RLIMIT_FSIZE, &limit))?;
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let big = pattern(2 << 20, 3);
    let e = c
        .call_err(
            method::FS_WRITE,
            json!({"path": s(&path), "data": b64(&big), "atomic": true}),
            ErrorCode::FileError,
        )
        .await;
    assert_eq!(e["data"], json!({"errno": "EFBIG"}), "{e}");
    assert_eq!(std::fs::read(&path)?, b"old content");
    assert_eq!(dir.names(), ["config"]);
    // Within the limit the same write works.
    c.call(
        method::FS_WRITE,
        json!({"path": s(&path), "data": b64(b"new"), "atomic": true}),
    )
    .await;
    assert_eq!(std::fs::read(&path)?, b"new");
    assert_eq!(dir.names(), ["config"]);
    Ok(())
}

pub async fn stat_list_mkdir_rename(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs");
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;

    // mkdir with parents and an exact mode; then files, a symlink and a non-UTF-8 name.
    let deep = dir.join("a/b/c");
    c.call(
        method::FS_MKDIR,
        json!({"path": s(&deep), "parents": true, "mode": 0o750}),
    )
    .await;
    assert_eq!(
        std::fs::metadata(&deep)?.permissions().mode() & 0o7777,
        0o750
    );
    c.call(method::FS_MKDIR, json!({"path": s(&deep), "parents": true}))
        .await;
    let file = dir.join("a/file.txt");
    c.call(
        method::FS_WRITE,
        json!({"path": s(&file), "data": b64(b"hello"), "mode": 0o600}),
    )
    .await;
    let link = dir.join("a/link");
    symlink("file.txt", &link)?;
    std::fs::write(dir.0.join(OsStr::from_bytes(b"a/\xff-latin")), b"")?;

    let st = c
        .call(
            method::FS_STAT,
            json!({"path": s(&link), "followSymlinks": false}),
        )
        .await;
    assert_eq!(st["kind"], "symlink");
    assert_eq!(st["target"], "file.txt");
    assert_eq!(st["size"], 8);
    let st = c.call(method::FS_STAT, json!({"path": s(&link)})).await;
    let mtime = st["mtimeMs"].as_u64().unwrap();
    assert!(mtime > 1_600_000_000_000, "{st}");
    assert_eq!(
        st,
        json!({"kind": "file", "size": 5, "mode": 0o600, "mtimeMs": mtime, "target": null})
    );

    let listed = c
        .call(method::FS_LIST, json!({"path": s(&dir.join("a"))}))
        .await;
    assert_eq!(
        listed,
        json!({"entries": [
            {"name": "b", "kind": "dir", "lossy": false},
            {"name": "file.txt", "kind": "file", "lossy": false},
            {"name": "link", "kind": "symlink", "lossy": false},
            {"name": "\u{fffd}-latin", "kind": "file", "lossy": true},
        ]})
    );

    // rename a file over another, and a directory.
    let other = dir.join("a/other");
    std::fs::write(&other, b"other")?;
    c.call(
        method::FS_RENAME,
        json!({"from": s(&file), "to": s(&other)}),
    )
    .await;
    assert_eq!(std::fs::read(&other)?, b"hello");
    assert!(!file.exists());
    c.call(
        method::FS_RENAME,
        json!({"from": s(&dir.join("a/b")), "to": s(&dir.join("moved"))}),
    )
    .await;
    assert!(dir.join("moved/c").is_dir());
    file_error(
        &mut c,
        method::FS_RENAME,
        json!({"from": s(&file), "to": s(&other)}),
        "ENOENT",
        &file,
    )
    .await;
    Ok(())
}

pub async fn an_oversized_read_is_a_limit_error(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs");
    let path = dir.join("f");
    std::fs::write(&path, pattern(100_000, 5))?;
    let mut server = ServerProc::start(kind, &["--max-message-bytes", "65536"]).await?;
    let mut c = server.client().await?;
    c.handshake().await;
    let e = c
        .call_err(
            method::FS_READ,
            json!({"path": s(&path)}),
            ErrorCode::LimitReached,
        )
        .await;
    assert!(e["message"].as_str().unwrap().contains("maxBytes"), "{e}");
    // A smaller maxBytes fits.
    let r = c
        .call(
            method::FS_READ,
            json!({"path": s(&path), "maxBytes": 32768}),
        )
        .await;
    assert_eq!(unb64(&r["data"]).len(), 32768);
    Ok(())
}

/// The peak resident size of `pid` in KiB (VmHWM).
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub async fn a_4_mib_read_holds_a_small_multiple_of_4_mib(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs");
    let path = dir.join("f");
    std::fs::write(&path, pattern(4 << 20, 9))?;
    let mut server = ServerProc::start(kind, &[]).await?;
    let pid = server.pid();
    let mut c = server.client().await?;
    c.handshake().await;
    c.call(method::FS_STAT, json!({"path": s(&path)})).await;
    let before = peak_kib(pid);
    // One read at a time: what one read costs the server at its peak.
    for _ in 0..5 {
        let r = c.call(method::FS_READ, json!({"path": s(&path)})).await;
        assert_eq!(r["eof"], true);
    }
    let after = peak_kib(pid);
    let grown = after.saturating_sub(before);
    eprintln!(
        "server VmHWM {before} KiB before and {after} KiB after five 4 MiB reads (+{grown} KiB); VmRSS now {} KiB",
        rss_kib(pid)
    );
    assert!(before > 0 && after > 0);
    // The file bytes (4 MiB), their base64 JSON (~5.6 MiB) and the transport's copy of it.
    assert!(
        grown < 32 * 1024,
        "a 4 MiB read grew the peak by {grown} KiB"
    );
    Ok(())
}

macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {
        mod stdio {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(crate::client::Kind::Stdio).await
                }
            )*
        }
        mod ws {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(crate::client::Kind::Ws).await
                }
            )*
        }
    };
}

pub(crate) use both_transports;

both_transports!(
    big_binary_file_in_chunks,
    recursive_remove_keeps_what_symlinks_point_to,
    errors,
    eacces,
    atomic_writes,
    a_failed_atomic_write_leaves_the_file_and_no_temporary,
    stat_list_mkdir_rename,
    an_oversized_read_is_a_limit_error,
    a_4_mib_read_holds_a_small_multiple_of_4_mib,
);
