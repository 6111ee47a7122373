//! `exec-server cp` end to end: the real binary against a real server (WebSocket, or a
//! private stdio server with `--spawn`). Large random files both ways, byte for byte with
//! their mode; directory destinations; a message limit far below the chunk size; errors
//! with their errno name; arguments refused before any connection; modes (setuid,
//! read-only) kept on a server that starts no process; concurrent uploads side by side.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use exec_server_protocol::{ErrorCode, method};
use serde_json::json;
use tokio::process::Command;

use crate::client::{Kind, ServerProc, TempDir, as_nobody, bin, is_root, names_in, nobody};

/// A copy of 100 MiB in a debug build on a busy machine may take a while.
const COPY_DEADLINE: Duration = Duration::from_secs(180);

/// The result of one invocation of the binary.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `exec-server ARGS` (stdin empty, no EXEC_SERVER_* variables) and waits for it.
pub async fn exec_server(args: &[&str]) -> Ran {
    let child = Command::new(bin())
        .args(args)
        .env_remove("EXEC_SERVER_URL")
        .env_remove("EXEC_SERVER_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn exec-server");
    let output = match tokio::time::timeout(COPY_DEADLINE, child.wait_with_output()).await {
        Ok(output) => output.unwrap(),
        Err(_) => panic!("exec-server {args:?} took longer than {COPY_DEADLINE:?}"),
    };
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

type Dir = TempDir;

impl TempDir {
    fn s(&self, name: &str) -> String {
        self.join(name).display().to_string()
    }

    fn remote(&self, name: &str) -> String {
        format!("remote:{}", self.s(name))
    }
}

/// Writes `len` random bytes to `path` with `mode`.
fn random_file(path: &Path, len: u64, mode: u32) {
    use std::io::Read;
    let mut out = std::fs::File::create(path).unwrap();
    let copied = std::io::copy(
        &mut std::fs::File::open("/dev/urandom").unwrap().take(len),
        &mut out,
    )
    .unwrap();
    assert_eq!(copied, len);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Whether two files have the same bytes (compared in chunks, without holding either).
fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        let mut m = 0;
        while m < n {
            let got = b.read(&mut y[m..n]).unwrap();
            if got == 0 {
                return false;
            }
            m += got;
        }
        if x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
    }
}

fn assert_copied(ran: &Ran) {
    // Nothing on stderr: it is not a terminal, so no progress either.
    assert_eq!(
        (ran.code, ran.stdout.as_str(), ran.stderr.as_str()),
        (Some(0), "", ""),
        "{ran:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_goes_both_ways_byte_for_byte_with_its_mode() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let dir = Dir::new("cp");
    // 100 MiB and a bit: 26 chunks, the last one short.
    let source = dir.join("source.bin");
    random_file(&source, 100 * 1024 * 1024 + 12_345, 0o751);

    // Upload over an existing file with other content and another mode: both replaced.
    std::fs::write(dir.join("up.bin"), b"old content").unwrap();
    std::fs::set_permissions(dir.join("up.bin"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let ran = exec_server(&[
        "cp",
        "--connect",
        server.url(),
        &dir.s("source.bin"),
        &dir.remote("up.bin"),
    ])
    .await;
    assert_copied(&ran);
    assert!(same_bytes(&source, &dir.join("up.bin")), "upload differs");
    assert_eq!(mode_of(&dir.join("up.bin")), 0o751);

    // Download to a new file, and over an existing one of another mode.
    for name in ["down.bin", "over.bin"] {
        if name == "over.bin" {
            std::fs::write(dir.join(name), b"old").unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o640))
                .unwrap();
        }
        let ran = exec_server(&[
            "cp",
            "--connect",
            server.url(),
            &dir.remote("up.bin"),
            &dir.s(name),
        ])
        .await;
        assert_copied(&ran);
        assert!(
            same_bytes(&source, &dir.join(name)),
            "download to {name} differs"
        );
        assert_eq!(mode_of(&dir.join(name)), 0o751, "{name}");
    }
    // No temporary file is left behind.
    assert_eq!(
        dir.names(),
        ["down.bin", "over.bin", "source.bin", "up.bin"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_destination_gets_the_source_name() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let dir = Dir::new("cp");
    std::fs::create_dir(dir.join("remote-dir")).unwrap();
    std::fs::create_dir(dir.join("local-dir")).unwrap();
    random_file(&dir.join("f.bin"), 5 * 1024 * 1024 + 1, 0o640);

    // Upload into a directory, named with and without a trailing slash.
    for dst in [
        dir.remote("remote-dir"),
        format!("{}/", dir.remote("remote-dir")),
    ] {
        let _ = std::fs::remove_file(dir.join("remote-dir/f.bin"));
        let ran = exec_server(&["cp", "--connect", server.url(), &dir.s("f.bin"), &dst]).await;
        assert_copied(&ran);
        assert!(same_bytes(
            &dir.join("f.bin"),
            &dir.join("remote-dir/f.bin")
        ));
        assert_eq!(mode_of(&dir.join("remote-dir/f.bin")), 0o640);
    }
    // Download into a directory, by a relative local path.
    let ran = Command::new(bin())
        .current_dir(&dir.0)
        .args([
            "cp",
            "--connect",
            server.url(),
            &dir.remote("remote-dir/f.bin"),
            "local-dir",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{ran:?}");
    assert!(same_bytes(&dir.join("f.bin"), &dir.join("local-dir/f.bin")));
    assert_eq!(mode_of(&dir.join("local-dir/f.bin")), 0o640);

    // A trailing slash on something that is not a directory is refused.
    let ran = exec_server(&[
        "cp",
        "--connect",
        server.url(),
        &dir.s("f.bin"),
        &format!("{}/", dir.remote("missing-dir")),
    ])
    .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("is not a directory"), "{}", ran.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_files_are_errors_that_name_enoent() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let dir = Dir::new("cp");
    // A missing remote source: nothing is created locally.
    let ran = exec_server(&[
        "cp",
        "--connect",
        server.url(),
        &dir.remote("no-such-file"),
        &dir.s("copy"),
    ])
    .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.starts_with("exec-server: ") && ran.stderr.contains("ENOENT"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("no-such-file"), "{}", ran.stderr);
    // A remote destination in a missing directory.
    std::fs::write(dir.join("here"), b"x").unwrap();
    let ran = exec_server(&[
        "cp",
        "--connect",
        server.url(),
        &dir.s("here"),
        &dir.remote("no-dir/there"),
    ])
    .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("ENOENT"), "{}", ran.stderr);
    // A remote source that is a directory.
    let ran = exec_server(&[
        "cp",
        "--connect",
        server.url(),
        &format!("remote:{}", dir.0.display()),
        &dir.s("copy"),
    ])
    .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("is a directory"), "{}", ran.stderr);
    // A missing local source.
    let ran = exec_server(&[
        "cp",
        "--connect",
        server.url(),
        &dir.s("absent"),
        &dir.remote("x"),
    ])
    .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("cannot open"), "{}", ran.stderr);
    assert_eq!(dir.names(), ["here"]);
}

#[tokio::test]
async fn both_local_both_remote_or_a_relative_remote_path_is_refused() {
    // Refused before connecting: no server is needed (and none is named).
    let cases = [
        (["cp", "a", "b"], "both paths are local"),
        (["cp", "remote:/a", "remote:/b"], "both paths are remote"),
        (
            ["cp", "a", "remote:tmp/b"],
            "a remote path must be absolute",
        ),
        (
            ["cp", "remote:etc/hosts", "b"],
            "a remote path must be absolute",
        ),
    ];
    for (args, why) in cases {
        let ran = exec_server(&args).await;
        assert_eq!(ran.code, Some(1), "{args:?}: {ran:?}");
        assert!(
            ran.stderr.starts_with("exec-server: ") && ran.stderr.contains(why),
            "{args:?}: {}",
            ran.stderr
        );
    }
    // And no server at all: said clearly.
    let ran = exec_server(&["cp", "a", "remote:/tmp/b"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("--connect URL"), "{}", ran.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_shrink_to_fit_a_small_message_limit() {
    // 1 MiB messages: a 4 MiB chunk fits neither a write request nor a read response.
    let server = ServerProc::ws(&["--max-message-bytes", "1048576"])
        .await
        .unwrap();
    let dir = Dir::new("cp");
    random_file(&dir.join("f.bin"), 9 * 1024 * 1024 + 7, 0o755);
    let ran = exec_server(&[
        "cp",
        "--connect",
        server.url(),
        &dir.s("f.bin"),
        &dir.remote("up.bin"),
    ])
    .await;
    assert_copied(&ran);
    assert!(same_bytes(&dir.join("f.bin"), &dir.join("up.bin")));
    let ran = exec_server(&[
        "cp",
        "--connect",
        server.url(),
        &dir.remote("up.bin"),
        &dir.s("down.bin"),
    ])
    .await;
    assert_eq!((ran.code, ran.stdout.as_str()), (Some(0), ""), "{ran:?}");
    assert!(same_bytes(&dir.join("f.bin"), &dir.join("down.bin")));
    assert_eq!(mode_of(&dir.join("down.bin")), 0o755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_without_write_permission_and_empty_files_over_spawn() {
    let dir = Dir::new("cp");
    // Read-only (the file is created writable, then given its mode before the rename),
    // and an empty file (one empty write creates it).
    random_file(&dir.join("ro.bin"), 100_000, 0o444);
    random_file(&dir.join("empty"), 0, 0o600);
    for (name, mode) in [("ro.bin", 0o444), ("empty", 0o600)] {
        let copy = format!("{name}.up");
        let ran = exec_server(&["cp", "--spawn", &dir.s(name), &dir.remote(&copy)]).await;
        assert_copied(&ran);
        assert!(same_bytes(&dir.join(name), &dir.join(&copy)), "{name}");
        assert_eq!(mode_of(&dir.join(&copy)), mode, "{name}");
        let back = format!("{name}.down");
        let ran = exec_server(&["cp", "--spawn", &dir.remote(&copy), &dir.s(&back)]).await;
        assert_copied(&ran);
        assert!(same_bytes(&dir.join(name), &dir.join(&back)), "{name}");
        assert_eq!(mode_of(&dir.join(&back)), mode, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_leaves_no_temporary_file() {
    let server = ServerProc::ws(&[]).await.unwrap();
    let dir = Dir::new("cp");
    // The source is a FIFO the test holds open: the copy stays in the middle for as long
    // as the test wants, with one 4 MiB chunk written to the temporary file.
    let fifo = dir.join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir(dir.join("out")).unwrap();
    let child = Command::new(bin())
        .args([
            "cp",
            "--connect",
            server.url(),
            &dir.s("fifo"),
            &dir.remote("out/copy"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read-write, so opening never waits for the reader; written from a thread, since
    // the pipe holds only what `cp` has not read yet. Exactly one chunk: once it is in
    // the temporary file, `cp` has read all of it, so the feeder is done. The writer
    // stays open until the end: `cp` waits for more, never for an end of file.
    let writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let feeder = {
        let mut writer = writer.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            writer.write_all(&vec![b'x'; 4 * 1024 * 1024]).unwrap();
        })
    };
    let out = dir.join("out");
    crate::client::wait_until("the temporary file to hold the first chunk", || {
        names_in(&out).iter().any(|name| {
            name.ends_with(".cp-tmp")
                && std::fs::metadata(out.join(name)).is_ok_and(|m| m.len() == 4 * 1024 * 1024)
        })
    })
    .await;
    // SAFETY: kill(2) on the child this test spawned.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let output = crate::client::within("cp to stop", child.wait_with_output())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "exec-server: interrupted by SIGINT",
        "{stderr}"
    );
    assert_eq!(
        names_in(&out),
        Vec::<String>::new(),
        "nothing is left behind"
    );
    drop(writer);
    feeder.join().unwrap();
}

/// Copies `name` to `remote:dst` through `url`, asserting success.
async fn upload(url: &str, dir: &Dir, name: &str, dst: &str) {
    let ran = exec_server(&["cp", "--connect", url, &dir.s(name), &dir.remote(dst)]).await;
    assert_copied(&ran);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_are_kept_exactly_on_a_server_that_starts_no_process() {
    // How this proves that `cp` starts no process: the server refuses every
    // `process/start` (`--max-processes 0` answers -32001 before anything is spawned), and
    // its PATH holds no `chmod` either, so a copy that tried to start one could not set a
    // mode that way and would fail. The test first checks that premise itself.
    let dir = Dir::new("cp");
    std::fs::create_dir(dir.join("empty-path")).unwrap();
    let empty_path = dir.s("empty-path");
    let mut server = ServerProc::ws_env(&["--max-processes", "0"], &[("PATH", &empty_path)])
        .await
        .unwrap();
    let mut c = server.client().await.unwrap();
    c.handshake().await;
    let e = c
        .call_err(
            method::PROCESS_START,
            json!({"processId": "p", "argv": ["/bin/true"], "cwd": "/", "env": {}}),
            ErrorCode::LimitReached,
        )
        .await;
    assert!(e["message"].as_str().unwrap().contains("limit"), "{e}");

    // Read-only, setuid, setgid, sticky: each kept exactly, to a new file, over an existing
    // file of another mode (replaced atomically), and into a directory.
    std::fs::create_dir(dir.join("into")).unwrap();
    for (i, mode) in [0o444, 0o400, 0o4755, 0o2750, 0o1644, 0o6711, 0o000]
        .into_iter()
        .enumerate()
    {
        let name = format!("src-{i}");
        random_file(&dir.join(&name), 300_000 + i as u64, mode);
        let over = format!("over-{i}");
        std::fs::write(dir.join(&over), b"old").unwrap();
        std::fs::set_permissions(dir.join(&over), std::fs::Permissions::from_mode(0o666)).unwrap();
        let new = format!("new-{i}");
        for dst in [new.as_str(), over.as_str(), "into"] {
            upload(server.url(), &dir, &name, dst).await;
            let copy = if dst == "into" {
                dir.join("into").join(&name)
            } else {
                dir.join(dst)
            };
            assert!(same_bytes(&dir.join(&name), &copy), "{mode:o} to {dst}");
            assert_eq!(mode_of(&copy), mode, "{mode:o} to {dst}");
        }
    }
    // Nothing but the copies: no temporary file is left.
    for name in dir.names() {
        assert!(!name.ends_with(".cp-tmp"), "{name} was left behind");
    }
    assert!(
        names_in(&dir.join("into"))
            .iter()
            .all(|n| n.starts_with("src-")),
        "{:?}",
        names_in(&dir.join("into"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_into_a_locked_directory_the_mode_is_set_without_a_process() {
    // A directory the server may not create files in (root's, 0o755, for a server running
    // as `nobody`) holding a file the server owns: `cp` writes that file in place and sets
    // its mode through `fs/chmod`, still without starting a process.
    if !is_root() {
        eprintln!("skipped: needs root to run the server as `nobody`");
        return;
    }
    let Some(mut server) = as_nobody(Kind::Ws, &["--max-processes", "0"])
        .await
        .unwrap()
    else {
        eprintln!("skipped: there is no `nobody` account");
        return;
    };
    let (uid, gid) = nobody().unwrap();
    let dir = Dir::new("cp");
    random_file(&dir.join("src"), 200_000, 0o4750);
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    let target = locked.join("target");
    std::fs::write(&target, b"old").unwrap();
    std::os::unix::fs::chown(&target, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = server.client().await.unwrap();
    c.handshake().await;
    c.call_err(
        method::PROCESS_START,
        json!({"processId": "p", "argv": ["/bin/true"], "cwd": "/", "env": {}}),
        ErrorCode::LimitReached,
    )
    .await;

    upload(server.url(), &dir, "src", "locked/target").await;
    assert!(same_bytes(&dir.join("src"), &target));
    assert_eq!(mode_of(&target), 0o4750);
    assert_eq!(names_in(&locked), ["target"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_into_one_directory_never_clash() {
    // Eight copies at once into one directory: four to one name (the same size and mode,
    // different bytes), four to names of their own. Each creates its temporary file
    // exclusively, so none writes into another's; every copy succeeds, the shared name
    // holds exactly one of its sources, and no temporary file is left.
    let server = ServerProc::ws(&[]).await.unwrap();
    let dir = Dir::new("cp");
    std::fs::create_dir(dir.join("out")).unwrap();
    for i in 0..8 {
        random_file(&dir.join(format!("src-{i}")), 3 * 1024 * 1024 + 17, 0o640);
    }
    let copies: Vec<_> = (0..8)
        .map(|i| {
            let (url, src) = (server.url().to_owned(), dir.s(&format!("src-{i}")));
            let dst = if i < 4 {
                dir.remote("out/shared")
            } else {
                dir.remote(&format!("out/own-{i}"))
            };
            tokio::spawn(async move { exec_server(&["cp", "--connect", &url, &src, &dst]).await })
        })
        .collect();
    for copy in copies {
        assert_copied(&copy.await.unwrap());
    }
    let out = dir.join("out");
    assert_eq!(
        names_in(&out),
        ["own-4", "own-5", "own-6", "own-7", "shared"]
    );
    for i in 4..8 {
        let own = out.join(format!("own-{i}"));
        assert!(same_bytes(&dir.join(format!("src-{i}")), &own), "own-{i}");
        assert_eq!(mode_of(&own), 0o640);
    }
    assert!(
        (0..4).any(|i| same_bytes(&dir.join(format!("src-{i}")), &out.join("shared"))),
        "the shared destination holds none of its sources whole"
    );
    assert_eq!(mode_of(&out.join("shared")), 0o640);
}
