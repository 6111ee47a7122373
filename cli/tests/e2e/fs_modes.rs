//! `fs/chmod` and `fs/write`'s `exclusive` (SPEC section 12) through the real binary, over
//! stdio and WebSocket: every permission bit set exactly, symlinks followed, errno names
//! (EPERM as an unprivileged server), and creation that never touches an existing path.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use exec_server_protocol::{ErrorCode, method};
use serde_json::json;

use crate::client::{Kind, ServerProc, TempDir, as_nobody, b64, is_root};
use crate::fs::{both_transports, file_error, s};

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

pub async fn chmod(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs-chmod");
    let file = dir.join("file");
    std::fs::write(&file, b"x")?;
    let sub = dir.join("sub");
    std::fs::create_dir(&sub)?;
    let link = dir.join("link");
    symlink("file", &link)?;
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;

    // Each mode exactly, setuid, setgid and sticky included; fs/stat reports it back.
    for (path, mode) in [
        (&file, 0o4755),
        (&file, 0o2711),
        (&file, 0o7777),
        (&file, 0o000),
        (&file, 0o444),
        (&sub, 0o1777),
        (&sub, 0o2750),
    ] {
        let r = c
            .call(method::FS_CHMOD, json!({"path": s(path), "mode": mode}))
            .await;
        assert_eq!(r, json!({}));
        assert_eq!(mode_of(path), mode, "{mode:o}");
        let st = c.call(method::FS_STAT, json!({"path": s(path)})).await;
        assert_eq!(st["mode"], mode, "{mode:o}");
    }
    // Through a symlink: the target's mode changes, the link stays.
    c.call(method::FS_CHMOD, json!({"path": s(&link), "mode": 0o4750}))
        .await;
    assert_eq!(mode_of(&file), 0o4750);
    assert!(std::fs::symlink_metadata(&link)?.file_type().is_symlink());

    // OS failures name the errno and the path.
    let missing = dir.join("missing");
    file_error(
        &mut c,
        method::FS_CHMOD,
        json!({"path": s(&missing), "mode": 0o644}),
        "ENOENT",
        &missing,
    )
    .await;
    let under_file = file.join("child");
    file_error(
        &mut c,
        method::FS_CHMOD,
        json!({"path": s(&under_file), "mode": 0o644}),
        "ENOTDIR",
        &under_file,
    )
    .await;
    // Invalid params change nothing.
    for params in [
        json!({"path": s(&file), "mode": 0o10000}),
        json!({"path": s(&file), "mode": 4_294_967_296u64}),
        json!({"path": s(&file), "mode": -1}),
        json!({"path": s(&file), "mode": "755"}),
        json!({"path": s(&file)}),
        json!({"path": "file", "mode": 0o644}),
    ] {
        let e = c
            .call_err(method::FS_CHMOD, params.clone(), ErrorCode::InvalidParams)
            .await;
        assert!(e.get("data").is_none(), "{params}: {e}");
    }
    assert_eq!(mode_of(&file), 0o4750);
    assert_eq!(dir.names(), ["file", "link", "sub"]);

    // A file the server does not own: EPERM.
    let mut other = match as_nobody(kind, &[]).await? {
        Some(server) => server,
        None if is_root() => {
            eprintln!("skipped EPERM: running as root and there is no `nobody` account");
            return Ok(());
        }
        None => ServerProc::start(kind, &[]).await?,
    };
    // Root's file, for a server running as nobody; `/` for one that is not root.
    let foreign = if is_root() { file.clone() } else { "/".into() };
    let mut c = other.client().await?;
    c.handshake().await;
    file_error(
        &mut c,
        method::FS_CHMOD,
        json!({"path": s(&foreign), "mode": 0o777}),
        "EPERM",
        &foreign,
    )
    .await;
    assert_eq!(mode_of(&file), 0o4750);
    Ok(())
}

pub async fn exclusive(kind: Kind) -> anyhow::Result<()> {
    let dir = TempDir::new("fs-exclusive");
    let path = dir.join("new");
    let mut server = ServerProc::start(kind, &[]).await?;
    let mut c = server.client().await?;
    c.handshake().await;

    // A new file: created with the data and exactly `mode`.
    let r = c
        .call(
            method::FS_WRITE,
            json!({"path": s(&path), "data": b64(b"first"), "exclusive": true, "mode": 0o640}),
        )
        .await;
    assert_eq!(r, json!({"bytesWritten": 5}));
    assert_eq!(std::fs::read(&path)?, b"first");
    assert_eq!(mode_of(&path), 0o640);
    // Again: EEXIST, and the file is as it was.
    file_error(
        &mut c,
        method::FS_WRITE,
        json!({"path": s(&path), "data": b64(b"second"), "exclusive": true, "mode": 0o666}),
        "EEXIST",
        &path,
    )
    .await;
    assert_eq!(std::fs::read(&path)?, b"first");
    assert_eq!(mode_of(&path), 0o640);
    // A dangling symlink exists too, and its target is not created.
    let dangling = dir.join("dangling");
    symlink("target", &dangling)?;
    file_error(
        &mut c,
        method::FS_WRITE,
        json!({"path": s(&dangling), "data": b64(b"x"), "exclusive": true}),
        "EEXIST",
        &dangling,
    )
    .await;
    // Not with atomic, nor with create false.
    let refused = dir.join("refused");
    for params in [
        json!({"path": s(&refused), "data": b64(b"x"), "exclusive": true, "atomic": true}),
        json!({"path": s(&refused), "data": b64(b"x"), "exclusive": true, "create": false}),
    ] {
        c.call_err(method::FS_WRITE, params, ErrorCode::InvalidParams)
            .await;
    }
    assert_eq!(dir.names(), ["dangling", "new"]);
    Ok(())
}

both_transports!(chmod, exclusive);
