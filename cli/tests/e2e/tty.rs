//! `exec-server run --tty` in a real terminal: tmux runs a local shell, the test types
//! into it with send-keys and reads the screen with capture-pane (polled, with a deadline).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::client::{DEADLINE, bin};

/// A private tmux server (its own socket) with one session, killed on drop.
struct Tmux {
    socket: String,
    dir: PathBuf,
}

impl Tmux {
    /// Starts `bash` in a detached session of `cols`x`rows` with no status line.
    fn start(cols: u16, rows: u16) -> Tmux {
        static N: AtomicU64 = AtomicU64::new(0);
        let socket = format!(
            "exec-server-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&socket);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("tmux.conf");
        std::fs::write(&config, "set -g status off\nset -g history-limit 5000\n").unwrap();
        let tmux = Tmux { socket, dir };
        let out = tmux.cmd_with(
            &["-f", config.to_str().unwrap()],
            &[
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
                "env",
                "PS1=local$ ",
                "bash",
                "--norc",
                "--noprofile",
            ],
        );
        assert!(
            out.status.success(),
            "tmux new-session failed (is tmux installed? `apt-get install -y tmux`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn cmd_with(&self, before: &[&str], args: &[&str]) -> Output {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(before)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux")
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = self.cmd_with(&[], args);
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` (literally) and presses Enter.
    fn type_line(&self, text: &str) {
        self.cmd(&["send-keys", "-t", "t", "-l", text]);
        self.cmd(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Presses a key by name (`C-c`).
    fn key(&self, key: &str) {
        self.cmd(&["send-keys", "-t", "t", key]);
    }

    /// The screen and its scrollback, lines joined where they wrapped.
    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-J", "-S", "-", "-t", "t"])
    }

    /// Polls the screen until `found` returns something, failing after the deadline.
    fn wait_for<T>(&self, what: &str, mut found: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if let Some(v) = found(&screen) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd_with(&[], &["kill-server"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The line after the last occurrence of `marker` on the screen, once there is one.
fn line_after(screen: &str, marker: &str) -> Option<String> {
    let lines: Vec<&str> = screen.lines().collect();
    let at = lines.iter().rposition(|l| l.trim_end() == marker)?;
    lines
        .get(at + 1)
        .map(|l| l.trim_end().to_owned())
        .filter(|l| !l.is_empty())
}

/// Runs `stty size` remotely until it reports `want` (a resize travels asynchronously).
fn wait_size(tmux: &Tmux, want: &str, counter: &mut u32) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        *counter += 1;
        let n = *counter;
        // The marker is computed by the shell, so the typed line never matches it.
        tmux.type_line(&format!("echo size-$(({n}*1)); stty size"));
        let got = tmux.wait_for("stty size", |s| line_after(s, &format!("size-{n}")));
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the size stayed {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn an_interactive_shell_follows_the_window_and_leaves_the_terminal_sane() {
    let tmux = Tmux::start(100, 30);
    tmux.wait_for("the local prompt", |s| s.contains("local$ ").then_some(()));
    let (before, after) = (tmux.path("before"), tmux.path("after"));
    tmux.type_line(&format!(
        "stty -g > {}; {} run --spawn -t --env 'PS1=remote$ ' -- bash --norc --noprofile; echo \"status=$?\"; stty -g > {}",
        before.display(),
        bin(),
        after.display()
    ));
    tmux.wait_for("the remote prompt", |s| {
        s.contains("remote$ ").then_some(())
    });

    // The initial size, then a resize of the tmux window.
    let mut n = 0;
    wait_size(&tmux, "30 100", &mut n);
    tmux.cmd(&["resize-window", "-t", "t", "-x", "120", "-y", "40"]);
    wait_size(&tmux, "40 120", &mut n);

    // TERM is passed on.
    let term = tmux.cmd(&["show-options", "-g", "-v", "default-terminal"]);
    tmux.type_line("echo term-$((2*1)); echo \"$TERM\"");
    let remote_term = tmux.wait_for("TERM", |s| line_after(s, "term-2"));
    assert_eq!(remote_term, term.trim());

    // Ctrl-C is a keypress for the remote terminal: it stops `sleep`, not the shell. It is
    // pressed once `sleep` runs (and so holds the terminal's foreground): pressed while
    // the shell still reads the line, it would only cancel the line editing, and `sleep`
    // would then run its 100 s.
    let marker = format!("100.{}", std::process::id());
    tmux.type_line(&format!("sleep {marker}"));
    let deadline = std::time::Instant::now() + DEADLINE;
    while crate::client::processes_with_arg(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the remote sleep to run; the screen:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tmux.key("C-c");
    tmux.type_line("echo after-interrupt-$((6*7))");
    tmux.wait_for("the shell after Ctrl-C", |s| {
        s.lines()
            .any(|l| l.trim_end() == "after-interrupt-42")
            .then_some(())
    });

    // Leaving: the exit status comes back and the local terminal is as it was.
    tmux.type_line("exit 7");
    tmux.wait_for("the exit status", |s| {
        s.lines().any(|l| l.trim_end() == "status=7").then_some(())
    });
    tmux.wait_for("the settings after", |_| {
        (!read(&after).is_empty()).then_some(())
    });
    assert_eq!(
        read(&before),
        read(&after),
        "stty settings differ after run"
    );
    // And the local shell still echoes and edits lines as usual.
    tmux.type_line("echo sane-$((20+3))");
    tmux.wait_for("the local shell", |s| {
        s.lines().any(|l| l.trim_end() == "sane-23").then_some(())
    });
}
