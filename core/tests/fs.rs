//! The `fs/*` methods of core against a real file system: every SPEC section 12 call, its
//! defaults and bad combinations, errno names, atomic replacement, exclusive creation,
//! chmod, and removal that never follows a symlink.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use exec_server_core::{Error, Files, FsConfig};
use exec_server_protocol::*;

/// Every wait in these tests is bounded by this.
const DEADLINE: Duration = Duration::from_secs(60);

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("exec-server-core-fs-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(path)
    }

    fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }

    /// The names in this directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files() -> Files {
    Files::new(FsConfig::default())
}

fn s(path: &Path) -> String {
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

fn read_p(path: &Path, offset: Option<u64>, max_bytes: Option<u64>) -> FsReadParams {
    FsReadParams {
        path: s(path),
        offset,
        max_bytes,
    }
}

fn write_p(path: &Path, data: &[u8]) -> FsWriteParams {
    FsWriteParams {
        exclusive: false,
        path: s(path),
        data: Base64Bytes::from(data),
        offset: None,
        append: false,
        truncate: None,
        create: true,
        mode: None,
        atomic: false,
    }
}

fn stat_p(path: &Path, follow_symlinks: bool) -> FsStatParams {
    FsStatParams {
        path: s(path),
        follow_symlinks,
    }
}

fn list_p(path: &Path) -> FsListParams {
    FsListParams { path: s(path) }
}

fn mkdir_p(path: &Path, parents: bool, mode: Option<u32>) -> FsMkdirParams {
    FsMkdirParams {
        path: s(path),
        parents,
        mode,
    }
}

fn remove_p(path: &Path, recursive: bool) -> FsRemoveParams {
    FsRemoveParams {
        path: s(path),
        recursive,
    }
}

/// The errno name of a -32020 error, checking that its message names `path`.
fn errno<T: std::fmt::Debug>(result: Result<T, Error>, path: &Path) -> &'static str {
    match result {
        Err(Error::File { errno, message }) => {
            assert!(
                message.contains(path.to_str().unwrap()),
                "{message:?} does not name {}",
                path.display()
            );
            errno
        }
        other => panic!("expected a file error, got {other:?}"),
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, Error>) -> i32 {
    result.unwrap_err().code().code()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn read_returns_ranges_with_eof_and_size() {
    let dir = TempDir::new();
    let f = files();
    let path = dir.join("data");
    let bytes = pattern(100_000, 1);
    std::fs::write(&path, &bytes).unwrap();

    let all = f.read(read_p(&path, None, None)).await.unwrap();
    assert_eq!(
        all,
        FsReadResult {
            data: Base64Bytes::from(bytes.as_slice()),
            eof: true,
            size: 100_000
        }
    );
    let middle = f.read(read_p(&path, Some(1000), Some(500))).await.unwrap();
    assert_eq!(
        middle,
        FsReadResult {
            data: Base64Bytes::from(&bytes[1000..1500]),
            eof: false,
            size: 100_000
        }
    );
    // The last bytes exactly: nothing follows them.
    let tail = f.read(read_p(&path, Some(99_990), Some(10))).await.unwrap();
    assert_eq!((tail.data.as_bytes(), tail.eof), (&bytes[99_990..], true));
    // Past the end: nothing, at the end.
    let past = f.read(read_p(&path, Some(200_000), None)).await.unwrap();
    assert_eq!((past.data.len(), past.eof, past.size), (0, true, 100_000));
    let far = f.read(read_p(&path, Some(u64::MAX), None)).await.unwrap();
    assert_eq!((far.data.len(), far.eof), (0, true));
    // Writing at the very end of the range is an OS error, not a crash.
    let mut p = write_p(&path, b"x");
    p.offset = Some(u64::MAX);
    assert!(matches!(errno(f.write(p).await, &path), "EINVAL" | "EFBIG"));
    // maxBytes 0 reads nothing and says whether anything follows.
    let none = f.read(read_p(&path, Some(0), Some(0))).await.unwrap();
    assert_eq!((none.data.len(), none.eof), (0, false));
    // An empty file.
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let r = f.read(read_p(&empty, None, None)).await.unwrap();
    assert_eq!((r.data.len(), r.eof, r.size), (0, true, 0));
}

#[tokio::test]
async fn read_is_capped_at_4_mib_and_chunks_reassemble() {
    let dir = TempDir::new();
    let f = files();
    let path = dir.join("big");
    let bytes = pattern(5 * 1024 * 1024 + 123, 2);
    std::fs::write(&path, &bytes).unwrap();
    let first = f.read(read_p(&path, None, Some(u64::MAX))).await.unwrap();
    assert_eq!(first.data.len() as u64, FS_READ_MAX_BYTES);
    assert!(!first.eof);
    let mut got = first.data.to_vec();
    loop {
        let r = f
            .read(read_p(&path, Some(got.len() as u64), Some(1 << 20)))
            .await
            .unwrap();
        got.extend_from_slice(&r.data);
        if r.eof {
            break;
        }
    }
    assert!(got == bytes, "reassembled bytes differ");
}

#[tokio::test]
async fn read_of_files_without_a_known_size() {
    let f = files();
    // procfs reports size 0 but has content.
    let status = f
        .read(read_p(Path::new("/proc/self/status"), None, None))
        .await
        .unwrap();
    assert!(status.eof);
    assert!(
        String::from_utf8_lossy(&status.data).contains("Pid:"),
        "{status:?}"
    );
    // An endless device stops at maxBytes.
    let zeros = f
        .read(read_p(Path::new("/dev/zero"), None, Some(1000)))
        .await
        .unwrap();
    assert_eq!((zeros.data.to_vec(), zeros.eof), (vec![0u8; 1000], false));
    // Offsets at the very end of the range are errors or empty reads, never a crash.
    let far = f
        .read(read_p(Path::new("/dev/zero"), Some(u64::MAX), Some(10)))
        .await;
    assert_eq!(errno(far, Path::new("/dev/zero")), "EINVAL");
    let far = f
        .read(read_p(Path::new("/proc/self/status"), Some(u64::MAX), None))
        .await;
    assert_eq!(errno(far, Path::new("/proc/self/status")), "EINVAL");
    // A FIFO with no writer is at its end at once: the read never waits.
    let dir = TempDir::new();
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: c is a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let r = tokio::time::timeout(DEADLINE, f.read(read_p(&fifo, None, None)))
        .await
        .expect("a FIFO read does not block")
        .unwrap();
    assert_eq!((r.data.len(), r.eof), (0, true));
}

#[tokio::test]
async fn write_modes() {
    let dir = TempDir::new();
    let f = files();
    let path = dir.join("file");

    // Default: create (mode 0o644 exactly) and truncate.
    let r = f.write(write_p(&path, b"hello world")).await.unwrap();
    assert_eq!(r, FsWriteResult { bytes_written: 11 });
    assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
    assert_eq!(mode_of(&path), 0o644);
    f.write(write_p(&path, b"bye")).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"bye");

    // At an offset: the rest stays; past the end leaves a hole of zeros.
    std::fs::write(&path, b"0123456789").unwrap();
    let mut p = write_p(&path, b"ab");
    p.offset = Some(3);
    f.write(p).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"012ab56789");
    let mut p = write_p(&path, b"z");
    p.offset = Some(12);
    f.write(p).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"012ab56789\0\0z");
    // An offset with truncate empties the file first.
    let mut p = write_p(&path, b"xy");
    p.offset = Some(2);
    p.truncate = Some(true);
    f.write(p).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"\0\0xy");

    // Append.
    let mut p = write_p(&path, b"++");
    p.append = true;
    f.write(p).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"\0\0xy++");

    // truncate false without offset overwrites the start in place.
    let mut p = write_p(&path, b"AB");
    p.truncate = Some(false);
    f.write(p).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"ABxy++");

    // create false: a missing file is ENOENT and is not created.
    let missing = dir.join("missing");
    let mut p = write_p(&missing, b"x");
    p.create = false;
    assert_eq!(errno(f.write(p).await, &missing), "ENOENT");
    assert!(!missing.exists());

    // mode applies exactly (no umask) to a new file, and not to an existing one.
    let private = dir.join("private");
    let mut p = write_p(&private, b"s");
    p.mode = Some(0o600);
    f.write(p).await.unwrap();
    assert_eq!(mode_of(&private), 0o600);
    let open = dir.join("open");
    let mut p = write_p(&open, b"s");
    p.mode = Some(0o666);
    f.write(p).await.unwrap();
    assert_eq!(mode_of(&open), 0o666);
    let mut p = write_p(&private, b"t");
    p.mode = Some(0o644);
    f.write(p).await.unwrap();
    assert_eq!(mode_of(&private), 0o600);

    // Through a dangling symlink, as O_CREAT does: the target is created.
    let link = dir.join("link");
    symlink(dir.join("made-through-link"), &link).unwrap();
    f.write(write_p(&link, b"via")).await.unwrap();
    assert_eq!(
        std::fs::read(dir.join("made-through-link")).unwrap(),
        b"via"
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn bad_params_are_invalid_params() {
    let f = files();
    let dir = TempDir::new();
    let path = dir.join("x");
    let cases = [
        FsWriteParams {
            offset: Some(0),
            append: true,
            ..write_p(&path, b"x")
        },
        FsWriteParams {
            offset: Some(0),
            atomic: true,
            ..write_p(&path, b"x")
        },
        FsWriteParams {
            append: true,
            atomic: true,
            ..write_p(&path, b"x")
        },
        FsWriteParams {
            truncate: Some(false),
            atomic: true,
            ..write_p(&path, b"x")
        },
        FsWriteParams {
            mode: Some(0o17777),
            ..write_p(&path, b"x")
        },
        FsWriteParams {
            path: "relative/x".into(),
            ..write_p(&path, b"x")
        },
    ];
    for p in cases {
        assert_eq!(code(f.write(p.clone()).await), -32602, "{p:?}");
    }
    assert!(!path.exists(), "a refused write created the file");
    for relative in ["", "x", "./x", "~/x"] {
        let rel = Path::new(relative);
        assert_eq!(code(f.read(read_p(rel, None, None)).await), -32602);
        assert_eq!(code(f.stat(stat_p(rel, true)).await), -32602);
        assert_eq!(code(f.list(list_p(rel)).await), -32602);
        assert_eq!(code(f.mkdir(mkdir_p(rel, true, None)).await), -32602);
        assert_eq!(code(f.remove(remove_p(rel, true)).await), -32602);
        let rename = FsRenameParams {
            from: relative.into(),
            to: s(&path),
        };
        assert_eq!(code(f.rename(rename).await), -32602);
    }
    // Removing `/`, or a path ending in `.` or `..`, is refused before anything is touched.
    for p in ["/", "/tmp/..", "/tmp/.", "/tmp/x/../"] {
        assert_eq!(
            code(f.remove(remove_p(Path::new(p), true)).await),
            -32602,
            "{p}"
        );
    }
    assert_eq!(
        code(f.mkdir(mkdir_p(&dir.join("d"), false, Some(0o10000))).await),
        -32602
    );
}

#[tokio::test]
async fn errno_names_for_common_failures() {
    let dir = TempDir::new();
    let f = files();
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let missing = dir.join("missing");
    assert_eq!(
        errno(f.read(read_p(&missing, None, None)).await, &missing),
        "ENOENT"
    );
    assert_eq!(
        errno(f.stat(stat_p(&missing, true)).await, &missing),
        "ENOENT"
    );
    assert_eq!(errno(f.list(list_p(&missing)).await, &missing), "ENOENT");
    assert_eq!(
        errno(f.remove(remove_p(&missing, false)).await, &missing),
        "ENOENT"
    );
    let under_file = file.join("child");
    assert_eq!(
        errno(f.read(read_p(&under_file, None, None)).await, &under_file),
        "ENOTDIR"
    );
    assert_eq!(
        errno(f.write(write_p(&under_file, b"x")).await, &under_file),
        "ENOTDIR"
    );
    assert_eq!(errno(f.list(list_p(&file)).await, &file), "ENOTDIR");
    assert_eq!(
        errno(f.read(read_p(&dir.0, None, None)).await, &dir.0),
        "EISDIR"
    );
    assert_eq!(
        errno(f.write(write_p(&dir.0, b"x")).await, &dir.0),
        "EISDIR"
    );
    let mut atomic = write_p(&dir.0, b"x");
    atomic.atomic = true;
    assert_eq!(errno(f.write(atomic).await, &dir.0), "EISDIR");

    if is_root() {
        eprintln!("note: running as root; EACCES is covered by the end-to-end test as `nobody`");
        return;
    }
    let locked = dir.join("locked");
    std::fs::write(&locked, b"secret").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    assert_eq!(
        errno(f.read(read_p(&locked, None, None)).await, &locked),
        "EACCES"
    );
}

#[tokio::test]
async fn atomic_write_replaces_keeps_mode_and_leaves_no_temporary() {
    let dir = TempDir::new();
    let f = files();
    let path = dir.join("config");

    // A new file gets `mode`.
    let mut p = write_p(&path, b"one");
    p.atomic = true;
    p.mode = Some(0o640);
    f.write(p).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"one");
    assert_eq!(mode_of(&path), 0o640);

    // An existing file keeps its mode (not `mode`), and its inode is replaced.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
    let inode = std::fs::metadata(&path).unwrap().ino();
    let mut p = write_p(&path, b"two!");
    p.atomic = true;
    p.mode = Some(0o600);
    assert_eq!(f.write(p).await.unwrap().bytes_written, 4);
    assert_eq!(std::fs::read(&path).unwrap(), b"two!");
    assert_eq!(mode_of(&path), 0o604);
    assert_ne!(std::fs::metadata(&path).unwrap().ino(), inode);

    // Through a symlink: the link stays, its target is replaced.
    let link = dir.join("link");
    symlink("config", &link).unwrap();
    let mut p = write_p(&link, b"three");
    p.atomic = true;
    f.write(p).await.unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"three");

    // create false with a missing target: ENOENT.
    let missing = dir.join("missing");
    let mut p = write_p(&missing, b"x");
    p.atomic = true;
    p.create = false;
    assert_eq!(errno(f.write(p).await, &missing), "ENOENT");

    // A non-regular target is refused rather than replaced by a file.
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: c is a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let mut p = write_p(&fifo, b"x");
    p.atomic = true;
    assert_eq!(code(f.write(p).await), -32602);

    // No temporary file was left behind by any of these.
    assert_eq!(dir.names(), ["config", "fifo", "link"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_readers_see_the_old_or_the_new_content() {
    let dir = TempDir::new();
    let f = files();
    let path = dir.join("swap");
    const LEN: usize = 256 * 1024;
    let a = vec![b'a'; LEN];
    let b = vec![b'b'; LEN];
    std::fs::write(&path, &a).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) || reads == 0 {
                let content = std::fs::read(&path).unwrap();
                assert_eq!(content.len(), LEN, "a reader saw a partial file");
                let first = content[0];
                assert!(
                    content.iter().all(|&c| c == first),
                    "a reader saw a mix of old and new content"
                );
                reads += 1;
            }
            reads
        })
    };
    for round in 0..100 {
        let mut p = write_p(&path, if round % 2 == 0 { &b } else { &a });
        p.atomic = true;
        f.write(p).await.unwrap();
    }
    done.store(true, Ordering::Release);
    let reads = reader.join().expect("the reader found a torn read");
    assert!(reads > 0);
    assert_eq!(dir.names(), ["swap"]);
}

#[tokio::test]
async fn stat_follows_or_describes_symlinks() {
    let dir = TempDir::new();
    let f = files();
    let file = dir.join("file");
    std::fs::write(&file, b"12345").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4751)).unwrap();
    let link = dir.join("link");
    symlink(&file, &link).unwrap();

    let st = f.stat(stat_p(&file, true)).await.unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let mtime_ms = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(
        st,
        FsStatResult {
            kind: FileKind::File,
            size: 5,
            mode: 0o4751,
            mtime_ms,
            target: None
        }
    );
    // Followed by default: the file's own description.
    assert_eq!(f.stat(stat_p(&link, true)).await.unwrap(), st);
    let not_followed = f.stat(stat_p(&link, false)).await.unwrap();
    assert_eq!(not_followed.kind, FileKind::Symlink);
    assert_eq!(not_followed.target, Some(s(&file)));
    assert_eq!(not_followed.size, s(&file).len() as u64);

    let d = f.stat(stat_p(&dir.0, true)).await.unwrap();
    assert_eq!((d.kind, d.mode, d.target), (FileKind::Dir, 0o755, None));
    let null = f.stat(stat_p(Path::new("/dev/null"), true)).await.unwrap();
    assert_eq!(null.kind, FileKind::Other);

    // A dangling symlink: ENOENT when followed, described when not.
    let dangling = dir.join("dangling");
    symlink("nowhere", &dangling).unwrap();
    assert_eq!(
        errno(f.stat(stat_p(&dangling, true)).await, &dangling),
        "ENOENT"
    );
    let st = f.stat(stat_p(&dangling, false)).await.unwrap();
    assert_eq!(
        (st.kind, st.target),
        (FileKind::Symlink, Some("nowhere".into()))
    );
}

#[tokio::test]
async fn list_is_sorted_typed_and_flags_lossy_names() {
    let dir = TempDir::new();
    let f = files();
    std::fs::write(dir.join("b-file"), b"").unwrap();
    std::fs::create_dir(dir.join("a-dir")).unwrap();
    symlink("/", dir.join("c-link")).unwrap();
    std::fs::write(dir.join("B-upper"), b"").unwrap();
    let latin1 = dir.0.join(OsStr::from_bytes(b"caf\xe9"));
    std::fs::write(&latin1, b"").unwrap();
    let fifo = std::ffi::CString::new(s(&dir.join("d-fifo"))).unwrap();
    // SAFETY: fifo is a valid path string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

    let listed = f.list(list_p(&dir.0)).await.unwrap();
    let entry = |name: &str, kind, lossy| FsEntry {
        name: name.into(),
        kind,
        lossy,
    };
    assert_eq!(
        listed.entries,
        [
            entry("B-upper", FileKind::File, false),
            entry("a-dir", FileKind::Dir, false),
            entry("b-file", FileKind::File, false),
            entry("c-link", FileKind::Symlink, false),
            entry("caf\u{fffd}", FileKind::File, true),
            entry("d-fifo", FileKind::Other, false),
        ]
    );
    // An empty directory, and a symlink to a directory (followed).
    let empty = dir.join("a-dir");
    assert_eq!(f.list(list_p(&empty)).await.unwrap().entries, []);
    let root = f.list(list_p(&dir.join("c-link"))).await.unwrap();
    assert!(root.entries.iter().any(|e| e.name == "proc"));
}

#[tokio::test]
async fn a_listing_over_the_message_size_is_a_limit_error() {
    let dir = TempDir::new();
    for i in 0..100 {
        std::fs::write(dir.join(format!("entry-with-a-longish-name-{i:04}")), b"").unwrap();
    }
    let small = Files::new(FsConfig {
        max_message_bytes: 2048,
        ..FsConfig::default()
    });
    let e = small.list(list_p(&dir.0)).await.unwrap_err();
    assert_eq!(e.code().code(), -32001, "{e}");
    assert!(e.to_string().contains("2048"), "{e}");
    assert_eq!(
        files().list(list_p(&dir.0)).await.unwrap().entries.len(),
        100
    );
}

#[tokio::test]
async fn mkdir_with_and_without_parents() {
    let dir = TempDir::new();
    let f = files();
    let deep = dir.join("a/b/c");
    assert_eq!(
        errno(f.mkdir(mkdir_p(&deep, false, None)).await, &deep),
        "ENOENT"
    );
    f.mkdir(mkdir_p(&deep, true, Some(0o700))).await.unwrap();
    assert_eq!(mode_of(&deep), 0o700);
    assert_eq!(mode_of(&dir.join("a")), 0o755);
    assert_eq!(mode_of(&dir.join("a/b")), 0o755);
    // Existing: fine with parents (mode untouched), EEXIST without.
    f.mkdir(mkdir_p(&deep, true, Some(0o777))).await.unwrap();
    assert_eq!(mode_of(&deep), 0o700);
    assert_eq!(
        errno(f.mkdir(mkdir_p(&deep, false, None)).await, &deep),
        "EEXIST"
    );
    // Default mode 0o755, and an exact mode without the umask.
    let plain = dir.join("plain");
    f.mkdir(mkdir_p(&plain, false, None)).await.unwrap();
    assert_eq!(mode_of(&plain), 0o755);
    let wide = dir.join("wide");
    f.mkdir(mkdir_p(&wide, false, Some(0o1777))).await.unwrap();
    assert_eq!(mode_of(&wide), 0o1777);
    // A file in the way.
    let file = dir.join("file");
    std::fs::write(&file, b"").unwrap();
    assert_eq!(
        errno(f.mkdir(mkdir_p(&file, true, None)).await, &file),
        "EEXIST"
    );
    let below = file.join("x/y");
    assert_eq!(
        errno(f.mkdir(mkdir_p(&below, true, None)).await, &file.join("x")),
        "ENOTDIR"
    );
    // Through a symlink to a directory, as `mkdir -p` does.
    symlink(dir.join("a"), dir.join("to-a")).unwrap();
    f.mkdir(mkdir_p(&dir.join("to-a/b/new"), true, None))
        .await
        .unwrap();
    assert!(dir.join("a/b/new").is_dir());
}

/// A directory outside the tree being removed, with content that must survive.
fn outside_with_content(dir: &TempDir) -> PathBuf {
    let outside = dir.join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("keep"), b"keep").unwrap();
    std::fs::write(outside.join("sub/keep"), b"keep").unwrap();
    outside
}

fn assert_outside_intact(outside: &Path) {
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
    assert_eq!(std::fs::read(outside.join("sub/keep")).unwrap(), b"keep");
}

#[tokio::test]
async fn remove_never_follows_symlinks() {
    let dir = TempDir::new();
    let f = files();
    let outside = outside_with_content(&dir);

    // A file, and a symlink (the link goes, its target stays).
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    f.remove(remove_p(&file, false)).await.unwrap();
    assert!(!file.exists());
    let link = dir.join("link");
    symlink(&outside, &link).unwrap();
    f.remove(remove_p(&link, true)).await.unwrap();
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert_outside_intact(&outside);

    // A non-empty directory needs `recursive`.
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("x/y/z")).unwrap();
    std::fs::write(tree.join("x/y/z/f"), b"f").unwrap();
    std::fs::write(tree.join("top"), b"t").unwrap();
    symlink(&outside, tree.join("x/to-outside")).unwrap();
    symlink(&outside, tree.join("x/y/z/deep-link")).unwrap();
    symlink(outside.join("keep"), tree.join("x/y/file-link")).unwrap();
    symlink("dangling", tree.join("x/dangling")).unwrap();
    let fifo = std::ffi::CString::new(s(&tree.join("x/fifo"))).unwrap();
    // SAFETY: fifo is a valid path string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert_eq!(
        errno(f.remove(remove_p(&tree, false)).await, &tree),
        "ENOTEMPTY"
    );
    // An empty directory goes without `recursive`.
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    f.remove(remove_p(&empty, false)).await.unwrap();
    assert!(!empty.exists());

    f.remove(remove_p(&tree, true)).await.unwrap();
    assert!(!tree.exists());
    assert_outside_intact(&outside);

    // A directory reached through a symlinked parent is removed where it is.
    std::fs::create_dir(outside.join("inner")).unwrap();
    std::fs::write(outside.join("inner/f"), b"").unwrap();
    symlink(&outside, &link).unwrap();
    f.remove(remove_p(&link.join("inner"), true)).await.unwrap();
    assert!(!outside.join("inner").exists());
    assert_outside_intact(&outside);
}

#[tokio::test]
async fn remove_handles_deep_trees() {
    let dir = TempDir::new();
    let f = files();
    let root = dir.join("deep");
    let mut path = root.clone();
    for _ in 0..300 {
        path.push("d");
    }
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("leaf"), b"").unwrap();
    f.remove(remove_p(&root, true)).await.unwrap();
    assert!(!root.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_racing_a_symlink_swap_never_reaches_outside() {
    let dir = TempDir::new();
    let f = files();
    let outside = outside_with_content(&dir);
    for round in 0..50 {
        let tree = dir.join(format!("tree{round}"));
        for i in 0..20 {
            std::fs::create_dir_all(tree.join(format!("d{i}/inner"))).unwrap();
            std::fs::write(tree.join(format!("d{i}/inner/f")), b"").unwrap();
        }
        // Swap each directory for a symlink to `outside` while the remove walks the tree.
        let swapper = {
            let tree = tree.clone();
            let outside = outside.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let d = tree.join(format!("d{i}"));
                    let aside = tree.join(format!("aside{i}"));
                    if std::fs::rename(&d, &aside).is_ok() {
                        let _ = symlink(&outside, &d);
                    }
                }
            })
        };
        // The remove may fail (entries vanish under it); it must never touch `outside`.
        let _ = f.remove(remove_p(&tree, true)).await;
        swapper.join().unwrap();
        assert_outside_intact(&outside);
        let _ = f.remove(remove_p(&tree, true)).await;
        assert!(
            !tree.exists(),
            "round {round}: the tree survived a second remove"
        );
        assert_outside_intact(&outside);
    }
}

#[tokio::test]
async fn rename_moves_and_replaces() {
    let dir = TempDir::new();
    let f = files();
    let a = dir.join("a");
    let b = dir.join("b");
    std::fs::write(&a, b"A").unwrap();
    std::fs::write(&b, b"B").unwrap();
    let rename = |from: &Path, to: &Path| FsRenameParams {
        from: s(from),
        to: s(to),
    };
    f.rename(rename(&a, &b)).await.unwrap();
    assert!(!a.exists());
    assert_eq!(std::fs::read(&b).unwrap(), b"A");
    assert_eq!(errno(f.rename(rename(&a, &b)).await, &a), "ENOENT");
    // A directory onto a non-empty directory.
    let d1 = dir.join("d1");
    let d2 = dir.join("d2");
    std::fs::create_dir(&d1).unwrap();
    std::fs::create_dir(&d2).unwrap();
    std::fs::write(d2.join("x"), b"").unwrap();
    let e = f.rename(rename(&d1, &d2)).await;
    assert!(matches!(errno(e, &d2), "ENOTEMPTY" | "EEXIST"));
    // A symlink is renamed itself.
    let link = dir.join("link");
    symlink("b", &link).unwrap();
    f.rename(rename(&link, &dir.join("moved"))).await.unwrap();
    assert_eq!(
        std::fs::read_link(dir.join("moved")).unwrap(),
        Path::new("b")
    );
}

fn chmod_p(path: &Path, mode: u32) -> FsChmodParams {
    FsChmodParams {
        path: s(path),
        mode,
    }
}

#[tokio::test]
async fn chmod_sets_every_permission_bit_exactly_and_follows_symlinks() {
    let dir = TempDir::new();
    let f = files();
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();

    // Each mode is what stat reports afterwards, setuid, setgid and sticky included (the
    // file is the server's own, in its own group, so the OS drops none of these bits).
    for mode in [
        0o644, 0o4755, 0o2750, 0o1777, 0o6711, 0o7777, 0o444, 0o000, 0o600,
    ] {
        assert_eq!(
            f.chmod(chmod_p(&file, mode)).await.unwrap(),
            FsChmodResult {}
        );
        assert_eq!(mode_of(&file), mode, "{mode:o}");
        let st = f.stat(stat_p(&file, true)).await.unwrap();
        assert_eq!(st.mode, mode, "{mode:o}");
    }
    for mode in [0o1777, 0o2755, 0o700] {
        f.chmod(chmod_p(&sub, mode)).await.unwrap();
        assert_eq!(mode_of(&sub), mode, "{mode:o}");
    }

    // A symlink is followed: its target changes, the link stays a link to it.
    let link = dir.join("link");
    symlink("file", &link).unwrap();
    f.chmod(chmod_p(&link, 0o4711)).await.unwrap();
    assert_eq!(mode_of(&file), 0o4711);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("file"));

    // OS failures: -32020 with the errno and the path; nothing is created.
    let missing = dir.join("missing");
    assert_eq!(
        errno(f.chmod(chmod_p(&missing, 0o644)).await, &missing),
        "ENOENT"
    );
    let dangling = dir.join("dangling");
    symlink("nowhere", &dangling).unwrap();
    assert_eq!(
        errno(f.chmod(chmod_p(&dangling, 0o644)).await, &dangling),
        "ENOENT"
    );
    let under_file = file.join("child");
    assert_eq!(
        errno(f.chmod(chmod_p(&under_file, 0o644)).await, &under_file),
        "ENOTDIR"
    );

    // A mode beyond 0o7777, or a relative path, is invalid params and changes nothing.
    for mode in [0o10000, 0o17777, u32::MAX] {
        assert_eq!(
            code(f.chmod(chmod_p(&file, mode)).await),
            -32602,
            "{mode:o}"
        );
    }
    assert_eq!(mode_of(&file), 0o4711);
    for relative in ["", "file", "./file", "~/file"] {
        assert_eq!(
            code(f.chmod(chmod_p(Path::new(relative), 0o600)).await),
            -32602,
            "{relative:?}"
        );
    }
    assert_eq!(dir.names(), ["dangling", "file", "link", "sub"]);

    if is_root() {
        eprintln!("note: running as root; EPERM is covered by the end-to-end test as `nobody`");
        return;
    }
    // Not the owner: EPERM.
    let foreign = Path::new("/");
    assert_eq!(
        errno(f.chmod(chmod_p(foreign, 0o755)).await, foreign),
        "EPERM"
    );
}

#[tokio::test]
async fn exclusive_creates_only_a_new_file() {
    let dir = TempDir::new();
    let f = files();
    let path = dir.join("new");
    let exclusive = |path: &Path, data: &[u8]| FsWriteParams {
        exclusive: true,
        ..write_p(path, data)
    };

    // A new file: created with exactly `mode` (no umask) and the data.
    let p = FsWriteParams {
        mode: Some(0o640),
        ..exclusive(&path, b"first")
    };
    assert_eq!(f.write(p).await.unwrap().bytes_written, 5);
    assert_eq!(std::fs::read(&path).unwrap(), b"first");
    assert_eq!(mode_of(&path), 0o640);

    // The path exists now: EEXIST, and the file keeps its content and mode.
    let p = FsWriteParams {
        mode: Some(0o666),
        ..exclusive(&path, b"second")
    };
    assert_eq!(errno(f.write(p).await, &path), "EEXIST");
    assert_eq!(std::fs::read(&path).unwrap(), b"first");
    assert_eq!(mode_of(&path), 0o640);
    // So with append or an offset too.
    let p = FsWriteParams {
        append: true,
        ..exclusive(&path, b"+")
    };
    assert_eq!(errno(f.write(p).await, &path), "EEXIST");
    assert_eq!(std::fs::read(&path).unwrap(), b"first");

    // As O_EXCL: a symlink is not followed, even a dangling one (its target is not made).
    let dangling = dir.join("dangling");
    symlink("target", &dangling).unwrap();
    assert_eq!(
        errno(f.write(exclusive(&dangling, b"x")).await, &dangling),
        "EEXIST"
    );
    assert!(!dir.join("target").exists());
    // A directory exists too.
    assert_eq!(
        errno(f.write(exclusive(&dir.0, b"x")).await, &dir.0),
        "EEXIST"
    );

    // At an offset into a new file: zeros before it.
    let holed = dir.join("holed");
    let p = FsWriteParams {
        offset: Some(3),
        ..exclusive(&holed, b"z")
    };
    f.write(p).await.unwrap();
    assert_eq!(std::fs::read(&holed).unwrap(), b"\0\0\0z");
    assert_eq!(mode_of(&holed), 0o644);

    // Not with atomic or create false: invalid params, and nothing is created.
    let refused = dir.join("refused");
    for p in [
        FsWriteParams {
            atomic: true,
            ..exclusive(&refused, b"x")
        },
        FsWriteParams {
            create: false,
            ..exclusive(&refused, b"x")
        },
    ] {
        assert_eq!(code(f.write(p.clone()).await), -32602, "{p:?}");
    }
    assert_eq!(dir.names(), ["dangling", "holed", "new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_racing_exclusive_writes_exactly_one_creates_the_file() {
    let dir = TempDir::new();
    let f = files();
    for round in 0..20 {
        let path = dir.join(format!("race-{round}"));
        let mut calls = Vec::new();
        for i in 0..8u8 {
            let f = f.clone();
            let p = FsWriteParams {
                exclusive: true,
                ..write_p(&path, &[i; 1000])
            };
            calls.push(tokio::spawn(async move { (i, f.write(p).await) }));
        }
        let mut winners = Vec::new();
        for call in calls {
            let (i, result) = tokio::time::timeout(DEADLINE, call)
                .await
                .expect("every write finished")
                .unwrap();
            match result {
                Ok(_) => winners.push(i),
                Err(e) => assert_eq!(errno(Err::<(), _>(e), &path), "EEXIST"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        // The file holds the winner's bytes alone.
        assert_eq!(std::fs::read(&path).unwrap(), vec![winners[0]; 1000]);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn many_concurrent_calls_through_a_small_pool_all_finish() {
    let dir = TempDir::new();
    let f = Files::new(FsConfig {
        max_concurrent: 2,
        ..FsConfig::default()
    });
    let mut calls = Vec::new();
    for i in 0..64u64 {
        let f = f.clone();
        let path = dir.join(format!("f{i}"));
        calls.push(tokio::spawn(async move {
            let data = pattern(10_000, i);
            f.write(write_p(&path, &data)).await.unwrap();
            let back = f.read(read_p(&path, None, None)).await.unwrap();
            assert!(back.data.as_bytes() == data.as_slice());
        }));
    }
    tokio::time::timeout(DEADLINE, futures_join(calls))
        .await
        .expect("every call finished");
    assert_eq!(dir.names().len(), 64);
}

async fn futures_join(calls: Vec<tokio::task::JoinHandle<()>>) {
    for call in calls {
        call.await.unwrap();
    }
}
