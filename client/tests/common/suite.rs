//! The behavioural suite every [`ExecBackend`] must pass, written against the trait only.
//! `tests/backends.rs` runs it against the local backend and a remote one.

use std::sync::Arc;
use std::time::Duration;

use exec_server_client::{
    Error, ErrorCode, ExecBackend, ExecFiles, ExecProcess, FileKind, FsEntry, ProcessEvent,
    ReadOptions, Signal, StartOptions, Stream, TerminalSize, WriteOptions, WriteStatus,
};

use super::within;

fn sh(script: &str) -> StartOptions {
    StartOptions::new(["sh", "-c", script])
}

/// Reads events until `Closed`, checking that seqs run 1, 2, 3, … without a gap.
async fn events_in_order(process: &dyn ExecProcess) -> Vec<ProcessEvent> {
    let mut stream = process.events().expect("events");
    let mut events = Vec::new();
    within("the process to close", async {
        while let Some(event) = stream.next().await {
            events.push(event);
        }
    })
    .await;
    for (expected, event) in (1u64..).zip(events.iter()) {
        let seq = match event {
            ProcessEvent::Output { seq, .. }
            | ProcessEvent::Exited { seq, .. }
            | ProcessEvent::Closed { seq } => *seq,
            other => panic!("unexpected event {other:?}"),
        };
        assert_eq!(seq, expected, "events out of order: {events:?}");
    }
    assert!(
        matches!(events.last(), Some(ProcessEvent::Closed { .. })),
        "the last event is Closed: {events:?}"
    );
    events
}

fn stdout_of(events: &[ProcessEvent], which: Stream) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if let ProcessEvent::Output { stream, chunk, .. } = e
            && *stream == which
        {
            out.extend_from_slice(chunk);
        }
    }
    out
}

fn exit_of(events: &[ProcessEvent]) -> (i32, Option<String>) {
    events
        .iter()
        .find_map(|e| match e {
            ProcessEvent::Exited {
                exit_code, signal, ..
            } => Some((*exit_code, signal.clone())),
            _ => None,
        })
        .expect("an Exited event")
}

/// stdout, stderr and the exit status arrive, in seq order, ending with `Closed`.
pub async fn output_and_exit_status(backend: Arc<dyn ExecBackend>) {
    let p = backend
        .start(sh("echo out; echo err >&2; exit 7"))
        .await
        .unwrap();
    assert!(p.pid() > 0);
    let events = events_in_order(p.as_ref()).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(stdout_of(&events, Stream::Stdout), b"out\n");
    assert_eq!(stdout_of(&events, Stream::Stderr), b"err\n");
    assert_eq!(exit_of(&events), (7, None));
}

/// Options reach the process: cwd, env laid over the server's own, arg0, a chosen id.
pub async fn start_options_reach_the_process(backend: Arc<dyn ExecBackend>) {
    let p = backend
        .start(
            StartOptions::new([
                "sh",
                "-c",
                "pwd; echo \"$GREETING\"; echo \"$0\"; test -n \"$PATH\"",
            ])
            .cwd("/tmp")
            .env("GREETING", "hello there")
            .arg0("my-shell")
            .process_id("named-process"),
        )
        .await
        .unwrap();
    assert_eq!(p.id(), "named-process");
    let out = p.events().unwrap().collect().await;
    assert_eq!(
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.exit_code
        ),
        ("/tmp\nhello there\nmy-shell\n".to_owned(), Some(0))
    );
    // Without inheritance the child gets exactly `env`.
    let p = backend
        .start(
            sh("echo \"[$HOME]\"")
                .inherit_env(false)
                .env("PATH", "/usr/bin:/bin"),
        )
        .await
        .unwrap();
    let out = p.events().unwrap().collect().await;
    assert_eq!(out.stdout, b"[]\n");
}

/// Bytes written to stdin reach the child in order; closing stdin gives it EOF.
pub async fn stdin_is_forwarded_and_closed(backend: Arc<dyn ExecBackend>) {
    let p = backend
        .start(StartOptions::new(["cat"]).pipe_stdin(true))
        .await
        .unwrap();
    let events = p.events().unwrap();
    for part in ["hello ", "from ", "stdin\n"] {
        assert_eq!(
            p.write(part.as_bytes()).await.unwrap(),
            WriteStatus::Accepted
        );
    }
    let big = vec![b'x'; 3 * 1024 * 1024];
    assert_eq!(p.write(&big).await.unwrap(), WriteStatus::Accepted);
    assert_eq!(p.close_stdin().await.unwrap(), WriteStatus::Accepted);
    let out = within("cat to finish", events.collect()).await;
    assert_eq!(out.exit_code, Some(0));
    let mut expected = b"hello from stdin\n".to_vec();
    expected.extend_from_slice(&big);
    assert!(
        out.stdout == expected,
        "stdout differs ({} bytes)",
        out.stdout.len()
    );
    // After the close, stdin is closed.
    assert_eq!(p.write(b"more").await.unwrap(), WriteStatus::StdinClosed);
    // A process without a stdin pipe refuses writes.
    let q = backend.start(sh("exit 0")).await.unwrap();
    assert_eq!(q.write(b"x").await.unwrap(), WriteStatus::StdinClosed);
}

/// A tty process sees its size, follows a resize, and its output comes as `pty`.
pub async fn tty_size_and_resize(backend: Arc<dyn ExecBackend>) {
    let p = backend
        .start(
            sh("stty size; read line; stty size")
                .tty(true)
                .size(TerminalSize {
                    rows: 30,
                    cols: 100,
                }),
        )
        .await
        .unwrap();
    let mut events = p.events().unwrap();
    let mut screen = Vec::new();
    within("the first size", async {
        while !String::from_utf8_lossy(&screen).contains("30 100") {
            match events.next().await.expect("an event") {
                ProcessEvent::Output { stream, chunk, .. } => {
                    assert_eq!(stream, Stream::Pty);
                    screen.extend_from_slice(&chunk);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    p.resize(TerminalSize {
        rows: 40,
        cols: 120,
    })
    .await
    .unwrap();
    p.write(b"\n").await.unwrap();
    let rest = within("the process to end", events.collect()).await;
    assert!(
        String::from_utf8_lossy(&rest.stdout).contains("40 120"),
        "{:?}",
        String::from_utf8_lossy(&rest.stdout)
    );
    assert_eq!(rest.exit_code, Some(0));
    // Resizing a process without a tty is refused with -32600.
    let q = backend
        .start(StartOptions::new(["cat"]).pipe_stdin(true))
        .await
        .unwrap();
    let err = q
        .resize(TerminalSize { rows: 5, cols: 5 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    q.close_stdin().await.unwrap();
}

/// A signal reaches the process group; the exit says which signal (128 + n).
pub async fn signal_and_terminate(backend: Arc<dyn ExecBackend>) {
    let p = backend
        .start(StartOptions::new(["sleep", "100"]))
        .await
        .unwrap();
    let events = p.events().unwrap();
    assert!(p.signal(Signal::Term).await.unwrap());
    let out = within("sleep to die", events.collect()).await;
    assert_eq!(
        (out.exit_code, out.signal.as_deref()),
        (Some(143), Some("SIGTERM"))
    );
    assert!(
        !p.signal(Signal::Term).await.unwrap(),
        "an exited process is not signalled"
    );

    // terminate: SIGTERM ignored, so SIGKILL after the grace.
    let p = backend
        .start(sh("trap '' TERM; echo ready; while :; do sleep 1; done"))
        .await
        .unwrap();
    let mut events = p.events().unwrap();
    match within("ready", events.next()).await {
        Some(ProcessEvent::Output { chunk, .. }) => assert_eq!(&chunk[..], b"ready\n"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(p.terminate(Duration::from_millis(100)).await.unwrap());
    let out = within("the kill", events.collect()).await;
    assert_eq!(
        (out.exit_code, out.signal.as_deref()),
        (Some(137), Some("SIGKILL"))
    );
    assert!(!p.terminate(Duration::ZERO).await.unwrap());
}

/// A timeout ends the process as `terminate` would, and the exit says so.
pub async fn a_timeout_ends_the_process(backend: Arc<dyn ExecBackend>) {
    let p = backend
        .start(StartOptions::new(["sleep", "100"]).timeout(Duration::from_millis(200)))
        .await
        .unwrap();
    let out = within("the timeout", p.events().unwrap().collect()).await;
    assert_eq!(
        (out.exit_code, out.signal.as_deref(), out.timed_out),
        (Some(143), Some("SIGTERM"), true)
    );
    let p = backend
        .start(sh("exit 0").timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    let out = within("a quick exit", p.events().unwrap().collect()).await;
    assert_eq!((out.exit_code, out.timed_out), (Some(0), false));
}

/// A process that ignores SIGTERM is killed once the grace after its timeout has passed,
/// and its exit still says it timed out.
pub async fn a_timeout_kills_what_ignores_sigterm(backend: Arc<dyn ExecBackend>) {
    // SIG_IGN survives exec: both the shell and its `sleep` ignore SIGTERM. The timeout
    // leaves the shell ample time to set its trap first.
    let p = backend
        .start(sh("trap '' TERM; sleep 100").timeout(Duration::from_millis(1500)))
        .await
        .unwrap();
    let out = within("the timeout and the kill", p.events().unwrap().collect()).await;
    assert_eq!(
        (out.exit_code, out.signal.as_deref(), out.timed_out),
        (Some(137), Some("SIGKILL"), true)
    );
}

/// `user` runs the child as that user (a server running as root can switch).
pub async fn a_user_runs_the_process(backend: Arc<dyn ExecBackend>) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching users needs root, and these tests do not run as root");
        return;
    }
    let p = backend
        .start(StartOptions::new(["id", "-u"]).user("nobody"))
        .await
        .unwrap();
    let out = within("id -u as nobody", p.events().unwrap().collect()).await;
    assert_eq!(
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.exit_code
        ),
        ("65534\n".to_owned(), Some(0))
    );
    // A numeric uid too; an unknown user is a spawn failure.
    let p = backend
        .start(StartOptions::new(["id", "-u"]).user("65534"))
        .await
        .unwrap();
    let out = within("id -u as 65534", p.events().unwrap().collect()).await;
    assert_eq!(out.stdout, b"65534\n");
    let err = backend
        .start(StartOptions::new(["true"]).user("no-such-user-here"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SpawnFailed), "{err}");
}

/// `read` returns retained output from a cursor, long-polls, and reports the exit.
pub async fn read_from_a_cursor(backend: Arc<dyn ExecBackend>) {
    let p = backend
        .start(sh("read x; echo \"got $x\"; exit 3").pipe_stdin(true))
        .await
        .unwrap();
    drop(p.events().unwrap()); // reads only
    let poll = {
        let p = p.clone();
        tokio::spawn(async move {
            p.read(ReadOptions::after(0).wait(Duration::from_secs(30)))
                .await
        })
    };
    p.write(b"it\n").await.unwrap();
    let first = within("the long poll", poll).await.unwrap().unwrap();
    assert_eq!(first.failure, None);
    let mut bytes: Vec<u8> = first.chunks.iter().flat_map(|c| c.chunk.to_vec()).collect();
    let mut after = first.next_seq - 1;
    let last = within("the close", async {
        loop {
            let r = p
                .read(ReadOptions::after(after).wait(Duration::from_secs(10)))
                .await
                .unwrap();
            bytes.extend(r.chunks.iter().flat_map(|c| c.chunk.to_vec()));
            after = r.next_seq - 1;
            if r.closed {
                return r;
            }
        }
    })
    .await;
    assert_eq!(bytes, b"got it\n");
    assert_eq!(
        (last.exited, last.exit_code, last.truncated),
        (true, Some(3), false)
    );
    // From the start again: everything is still retained.
    let again = p.read(ReadOptions::after(0)).await.unwrap();
    assert_eq!(again.chunks.len(), 1);
    assert_eq!(again.chunks[0].chunk.as_bytes(), b"got it\n");
    assert_eq!(again.next_seq, 4);
}

/// Errors carry the SPEC code.
pub async fn errors_carry_the_spec_code(backend: Arc<dyn ExecBackend>) {
    let err = backend
        .start(StartOptions::new(["/nonexistent/program"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SpawnFailed), "{err}");
    let err = backend
        .start(StartOptions::new(["true"]).cwd("relative"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidParams), "{err}");
    let err = backend
        .start(StartOptions::new(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidParams), "{err}");
    let p = backend
        .start(
            StartOptions::new(["cat"])
                .pipe_stdin(true)
                .process_id("dup"),
        )
        .await
        .unwrap();
    let err = backend
        .start(StartOptions::new(["true"]).process_id("dup"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    // The events can be taken once.
    let _events = p.events().unwrap();
    assert!(matches!(p.events(), Err(Error::EventsTaken(_))));
    p.close_stdin().await.unwrap();
}

/// A lot of output through a slow consumer arrives whole: nothing dropped, nothing
/// truncated (retention is 1 MiB, the output 8 MiB, so this needs backpressure).
pub async fn slow_consumer_loses_nothing(backend: Arc<dyn ExecBackend>) {
    let total = 8 * 1024 * 1024;
    let p = backend
        .start(StartOptions::new([
            "head",
            "-c",
            &total.to_string(),
            "/dev/zero",
        ]))
        .await
        .unwrap();
    let mut events = p.events().unwrap();
    let mut bytes = 0usize;
    let mut n = 0u64;
    within("8 MiB", async {
        while let Some(event) = events.next().await {
            match event {
                ProcessEvent::Output { chunk, .. } => {
                    bytes += chunk.len();
                    n += 1;
                    if n.is_multiple_of(4) {
                        // The consumer lags far behind the producer. (Not a round trip on
                        // the same connection: that would wait behind this full stream.)
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                ProcessEvent::Exited { exit_code, .. } => assert_eq!(exit_code, 0),
                ProcessEvent::Closed { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(bytes, total);
}

/// Events that arrive before the stream is taken are kept; when more arrive than the
/// stream holds, nothing waits on the missing consumer, and what retention lost is
/// reported as `Truncated`.
pub async fn events_before_the_stream_is_taken(backend: Arc<dyn ExecBackend>) {
    // Small: everything is kept.
    let p = backend.start(sh("echo early; exit 4")).await.unwrap();
    wait_closed(p.as_ref()).await;
    let out = p.events().unwrap().collect().await;
    assert_eq!(
        (out.stdout, out.exit_code, out.truncated),
        (b"early\n".to_vec(), Some(4), false)
    );

    // Large (6 MiB, over the stream's bound and retention): the process is not held up,
    // other calls keep working, and the stream reports the loss.
    let total = 6 * 1024 * 1024;
    let p = backend
        .start(StartOptions::new([
            "head",
            "-c",
            &total.to_string(),
            "/dev/zero",
        ]))
        .await
        .unwrap();
    wait_closed(p.as_ref()).await;
    let out = within("the late stream", p.events().unwrap().collect()).await;
    assert_eq!(
        (out.exit_code, out.closed, out.failure),
        (Some(0), true, None)
    );
    assert!(out.truncated, "6 MiB cannot all be kept");
    assert!(
        out.stdout.len() < total && out.stdout.len() >= 1024 * 1024,
        "{}",
        out.stdout.len()
    );
}

async fn wait_closed(p: &dyn ExecProcess) {
    within("the process to close", async {
        let mut after = 0;
        loop {
            let r = p
                .read(
                    ReadOptions::after(after)
                        .wait(Duration::from_secs(10))
                        .max_bytes(1),
                )
                .await
                .unwrap();
            after = r.next_seq - 1;
            if r.closed {
                return;
            }
        }
    })
    .await;
}

/// A dropped handle's events never block the others.
pub async fn dropped_handles_block_nothing(backend: Arc<dyn ExecBackend>) {
    let chatty = backend
        .start(StartOptions::new(["head", "-c", "16777216", "/dev/zero"]))
        .await
        .unwrap();
    drop(chatty);
    let taken = backend
        .start(StartOptions::new(["head", "-c", "16777216", "/dev/zero"]))
        .await
        .unwrap();
    drop(taken.events().unwrap());
    drop(taken);
    for i in 0..3 {
        let p = backend.start(sh(&format!("echo {i}"))).await.unwrap();
        let out = within("a later process", p.events().unwrap().collect()).await;
        assert_eq!(out.stdout, format!("{i}\n").into_bytes());
    }
}

/// `list` shows the processes the session retains.
pub async fn list_shows_processes(backend: Arc<dyn ExecBackend>) {
    let p = backend
        .start(
            StartOptions::new(["cat"])
                .pipe_stdin(true)
                .process_id("listed"),
        )
        .await
        .unwrap();
    let info = backend
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.process_id == "listed")
        .expect("listed");
    assert_eq!(
        (info.pid, info.exited, info.argv),
        (p.pid(), false, vec!["cat".to_owned()])
    );
    let events = p.events().unwrap();
    p.close_stdin().await.unwrap();
    within("cat", events.collect()).await;
    let info = backend
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.process_id == "listed")
        .expect("listed");
    assert_eq!(
        (info.exited, info.exit_code, info.closed),
        (true, Some(0), true)
    );
}

/// Many processes at once, each with its own stream.
pub async fn concurrent_processes_keep_their_own_streams(backend: Arc<dyn ExecBackend>) {
    let mut handles = Vec::new();
    for i in 0..20 {
        let p = backend
            .start(sh(&format!(
                "i=0; while [ $i -lt 200 ]; do echo {i}; i=$((i+1)); done"
            )))
            .await
            .unwrap();
        handles.push((i, p));
    }
    let mut tasks = Vec::new();
    for (i, p) in handles {
        tasks.push(tokio::spawn(async move {
            let out = p.events().unwrap().collect().await;
            (i, out)
        }));
    }
    for task in tasks {
        let (i, out) = within("a process", task).await.unwrap();
        assert_eq!(out.stdout, format!("{i}\n").repeat(200).into_bytes());
        assert_eq!(out.exit_code, Some(0));
    }
}

// ---------------------------------------------------------------- files

/// A fresh, empty directory on the backend's host (made through the file API itself),
/// removed with everything in it by [`Scratch::remove`].
struct Scratch {
    path: String,
}

impl Scratch {
    async fn new(files: &dyn ExecFiles) -> Scratch {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = format!(
            "{}/exec-server-files-{}-{}-{nanos}",
            std::env::temp_dir().display(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        files.mkdir(&path, false, Some(0o700)).await.unwrap();
        Scratch { path }
    }

    fn join(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }

    async fn remove(self, files: &dyn ExecFiles) {
        files.remove(&self.path, true).await.unwrap();
    }
}

/// Bytes that are not text and do not repeat in short cycles (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Reads a whole file in calls of at most `max` bytes, checking `eof` and `size` on each.
async fn read_all(files: &dyn ExecFiles, path: &str, max: u64) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let got = files
            .read(path, data.len() as u64, Some(max))
            .await
            .unwrap();
        assert!(got.data.len() as u64 <= max, "{} > {max}", got.data.len());
        data.extend_from_slice(&got.data);
        let end = data.len() as u64 == got.size;
        assert_eq!(got.eof, end, "eof at {} of {}", data.len(), got.size);
        if got.eof {
            return data;
        }
        assert!(
            !got.data.is_empty(),
            "a read before the end returned nothing"
        );
    }
}

/// A binary file bigger than one call moves both ways in chunks, byte for byte; the mode
/// of a new file is exactly what was asked; appends, offsets and atomic replaces work.
pub async fn files_round_trip_in_chunks(backend: Arc<dyn ExecBackend>) {
    let files = backend.files();
    let dir = Scratch::new(files).await;
    let path = dir.join("blob.bin");
    // 9 MiB + 12345 bytes: three 4 MiB reads, the last one short.
    let content = noise(9 * 1024 * 1024 + 12345, 42);
    let chunk = 3 * 1024 * 1024 + 17;
    for (i, piece) in content.chunks(chunk).enumerate() {
        let options = if i == 0 {
            WriteOptions::default().mode(0o751)
        } else {
            WriteOptions::at((i * chunk) as u64)
        };
        let wrote = files.write(&path, piece.into(), options).await.unwrap();
        assert_eq!(wrote, piece.len() as u64);
    }
    let stat = files.stat(&path, true).await.unwrap();
    assert_eq!(
        (stat.kind, stat.size, stat.mode),
        (FileKind::File, content.len() as u64, 0o751)
    );
    // Default reads (4 MiB at most), and odd-sized ones.
    let back = read_all(files, &path, 4 * 1024 * 1024).await;
    assert!(back == content, "the file read back differs");
    let back = read_all(files, &path, 1_000_003).await;
    assert!(back == content, "the file read back in odd chunks differs");
    // A read past the end is empty and at eof.
    let past = files
        .read(&path, content.len() as u64 + 10, None)
        .await
        .unwrap();
    assert_eq!((past.data.len(), past.eof), (0, true));

    // Append, then overwrite in the middle without truncating.
    let small = dir.join("small.txt");
    files
        .write(&small, b"hello".into(), WriteOptions::default())
        .await
        .unwrap();
    files
        .write(&small, b", world".into(), WriteOptions::append())
        .await
        .unwrap();
    files
        .write(&small, b"J".into(), WriteOptions::at(0))
        .await
        .unwrap();
    let got = files.read(&small, 0, None).await.unwrap();
    assert_eq!(
        (got.data.as_bytes(), got.eof, got.size),
        (&b"Jello, world"[..], true, 12)
    );
    // An atomic replace swaps the whole content and keeps the existing file's mode.
    files
        .write(
            &path,
            b"replaced".into(),
            WriteOptions::atomic().mode(0o600),
        )
        .await
        .unwrap();
    let stat = files.stat(&path, true).await.unwrap();
    assert_eq!((stat.size, stat.mode), (8, 0o751));
    assert_eq!(
        files.read(&path, 0, None).await.unwrap().data.as_bytes(),
        b"replaced"
    );
    // Without `create`, a missing file is not made.
    let err = files
        .write(
            &dir.join("absent"),
            b"x".into(),
            WriteOptions::default().create(false),
        )
        .await
        .unwrap_err();
    assert_eq!(err.errno().as_deref(), Some("ENOENT"), "{err}");
    dir.remove(files).await;
}

fn entry(name: &str, kind: FileKind) -> FsEntry {
    FsEntry {
        name: name.to_owned(),
        kind,
        lossy: false,
    }
}

/// mkdir (with and without parents), list (sorted, with kinds), stat of a directory and
/// of a symlink not followed, rename, remove (refused for a non-empty directory unless
/// recursive).
pub async fn files_tree_operations(backend: Arc<dyn ExecBackend>) {
    let files = backend.files();
    let dir = Scratch::new(files).await;
    let deep = dir.join("a/b/c");
    files.mkdir(&deep, true, Some(0o750)).await.unwrap();
    // `parents` accepts an existing directory; without it, EEXIST.
    files.mkdir(&deep, true, None).await.unwrap();
    let err = files.mkdir(&deep, false, None).await.unwrap_err();
    assert_eq!(err.errno().as_deref(), Some("EEXIST"), "{err}");
    let stat = files.stat(&deep, true).await.unwrap();
    assert_eq!((stat.kind, stat.mode), (FileKind::Dir, 0o750));
    assert_eq!(files.stat(&dir.join("a"), true).await.unwrap().mode, 0o755);

    files
        .write(&dir.join("z.txt"), b"z".into(), WriteOptions::default())
        .await
        .unwrap();
    files
        .write(&dir.join("m.txt"), b"m".into(), WriteOptions::default())
        .await
        .unwrap();
    // The file API makes no symlinks; every backend under test runs on this machine.
    std::os::unix::fs::symlink("z.txt", dir.join("link")).unwrap();
    assert_eq!(
        files.list(&dir.path).await.unwrap(),
        vec![
            entry("a", FileKind::Dir),
            entry("link", FileKind::Symlink),
            entry("m.txt", FileKind::File),
            entry("z.txt", FileKind::File),
        ]
    );
    let link = files.stat(&dir.join("link"), false).await.unwrap();
    assert_eq!(
        (link.kind, link.target.as_deref()),
        (FileKind::Symlink, Some("z.txt"))
    );
    assert_eq!(
        files.stat(&dir.join("link"), true).await.unwrap().kind,
        FileKind::File
    );

    // Rename replaces an existing target, as rename(2) does.
    files
        .rename(&dir.join("m.txt"), &dir.join("z.txt"))
        .await
        .unwrap();
    assert_eq!(
        files
            .read(&dir.join("z.txt"), 0, None)
            .await
            .unwrap()
            .data
            .as_bytes(),
        b"m"
    );
    let err = files.stat(&dir.join("m.txt"), true).await.unwrap_err();
    assert_eq!(err.errno().as_deref(), Some("ENOENT"), "{err}");

    // Removing a symlink leaves its target; a non-empty directory needs `recursive`.
    files.remove(&dir.join("link"), false).await.unwrap();
    assert!(files.stat(&dir.join("z.txt"), true).await.is_ok());
    let err = files.remove(&dir.join("a"), false).await.unwrap_err();
    assert_eq!(err.errno().as_deref(), Some("ENOTEMPTY"), "{err}");
    files.remove(&dir.join("a"), true).await.unwrap();
    assert_eq!(
        files.list(&dir.path).await.unwrap(),
        vec![entry("z.txt", FileKind::File)]
    );
    dir.remove(files).await;
}

/// OS failures are -32020 with the errno's name; a relative path is -32602.
pub async fn file_errors_name_their_errno(backend: Arc<dyn ExecBackend>) {
    let files = backend.files();
    let dir = Scratch::new(files).await;
    let missing = dir.join("missing");
    let err = files.read(&missing, 0, None).await.unwrap_err();
    assert_eq!(
        (err.code(), err.errno().as_deref()),
        (Some(ErrorCode::FileError), Some("ENOENT")),
        "{err}"
    );
    assert!(
        err.to_string().contains(&missing),
        "the message names the path: {err}"
    );
    let file = dir.join("plain");
    files
        .write(&file, b"x".into(), WriteOptions::default())
        .await
        .unwrap();
    let under_a_file = format!("{file}/child");
    for err in [
        files.read(&under_a_file, 0, None).await.unwrap_err(),
        files.stat(&under_a_file, true).await.unwrap_err(),
        files.list(&file).await.unwrap_err(),
        files.mkdir(&under_a_file, false, None).await.unwrap_err(),
    ] {
        assert_eq!(
            (err.code(), err.errno().as_deref()),
            (Some(ErrorCode::FileError), Some("ENOTDIR")),
            "{err}"
        );
    }
    let err = files.read(&dir.path, 0, None).await.unwrap_err();
    assert_eq!(err.errno().as_deref(), Some("EISDIR"), "{err}");
    let err = files
        .rename(&missing, &dir.join("elsewhere"))
        .await
        .unwrap_err();
    assert_eq!(err.errno().as_deref(), Some("ENOENT"), "{err}");

    // A relative path is refused before the OS sees it, by every call.
    let refusals = [
        files.read("tmp/x", 0, None).await.unwrap_err(),
        files
            .write("x", b"x".into(), WriteOptions::default())
            .await
            .unwrap_err(),
        files.stat("./x", true).await.unwrap_err(),
        files.list("tmp").await.unwrap_err(),
        files.mkdir("d", false, None).await.unwrap_err(),
        files.remove("x", false).await.unwrap_err(),
        files.rename(&file, "x").await.unwrap_err(),
    ];
    for err in refusals {
        assert_eq!(
            (err.code(), err.errno()),
            (Some(ErrorCode::InvalidParams), None),
            "{err}"
        );
    }
    dir.remove(files).await;
}

/// `chmod` sets every permission bit exactly (through a symlink too); an `exclusive`
/// write creates a new file with its mode and refuses an existing path with EEXIST.
pub async fn files_chmod_and_exclusive(backend: Arc<dyn ExecBackend>) {
    let files = backend.files();
    let dir = Scratch::new(files).await;
    let path = dir.join("new");
    let first = WriteOptions::default().exclusive(true).mode(0o640);
    assert_eq!(files.write(&path, b"one".into(), first).await.unwrap(), 3);
    assert_eq!(files.stat(&path, true).await.unwrap().mode, 0o640);
    let again = WriteOptions::default().exclusive(true);
    let err = files.write(&path, b"two".into(), again).await.unwrap_err();
    assert_eq!(err.errno().as_deref(), Some("EEXIST"), "{err}");
    let err = files
        .write(&path, b"two".into(), WriteOptions::atomic().exclusive(true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidParams), "{err}");
    assert_eq!(
        files.read(&path, 0, None).await.unwrap().data.as_bytes(),
        b"one"
    );

    std::os::unix::fs::symlink("new", dir.join("link")).unwrap();
    for mode in [0o4755, 0o2711, 0o1777, 0o444] {
        files.chmod(&dir.join("link"), mode).await.unwrap();
        assert_eq!(
            files.stat(&path, true).await.unwrap().mode,
            mode,
            "{mode:o}"
        );
    }
    let err = files.chmod(&dir.join("missing"), 0o644).await.unwrap_err();
    assert_eq!(err.errno().as_deref(), Some("ENOENT"), "{err}");
    let err = files.chmod(&path, 0o10000).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidParams), "{err}");
    dir.remove(files).await;
}

/// Defines one test per suite function, each running against the backend `make()` returns.
#[macro_export]
macro_rules! backend_suite {
    ($make:path) => {
        $crate::backend_suite!($make;
            output_and_exit_status,
            start_options_reach_the_process,
            stdin_is_forwarded_and_closed,
            tty_size_and_resize,
            signal_and_terminate,
            a_timeout_ends_the_process,
            a_timeout_kills_what_ignores_sigterm,
            a_user_runs_the_process,
            read_from_a_cursor,
            errors_carry_the_spec_code,
            slow_consumer_loses_nothing,
            events_before_the_stream_is_taken,
            dropped_handles_block_nothing,
            list_shows_processes,
            concurrent_processes_keep_their_own_streams,
            files_round_trip_in_chunks,
            files_tree_operations,
            file_errors_name_their_errno,
            files_chmod_and_exclusive
        );
    };
    ($make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                // The guard (a server, for a remote backend) lives to the end of the test.
                let (backend, _guard) = $make().await;
                $crate::common::suite::$name(backend).await;
            }
        )*
    };
}
