//! The progress line of `exec-server cp` on stderr: bytes, percent and rate, only when
//! stderr is a terminal.

use std::io::Write;
use std::time::{Duration, Instant};

/// Progress on stderr when it is a terminal: bytes, percent, MB/s, at most ten times a
/// second. Nothing when stderr is not a terminal.
pub(super) struct Progress {
    on: bool,
    total: Option<u64>,
    done: u64,
    start: Instant,
    shown: Option<Instant>,
}

impl Progress {
    pub(super) fn new(total: Option<u64>) -> Progress {
        Progress {
            on: crate::tty::is_tty(2),
            total,
            done: 0,
            start: Instant::now(),
            shown: None,
        }
    }

    pub(super) fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if self.on
            && self
                .shown
                .is_none_or(|at| at.elapsed() >= Duration::from_millis(100))
        {
            self.show();
            self.shown = Some(Instant::now());
        }
    }

    fn show(&self) {
        let seconds = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / seconds / 1e6;
        let line = match self.total {
            Some(total) if total > 0 => format!(
                "{} / {} ({:3.0}%)  {rate:.1} MB/s",
                human(self.done),
                human(total),
                self.done as f64 * 100.0 / total as f64
            ),
            _ => format!("{}  {rate:.1} MB/s", human(self.done)),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[K{line}");
        let _ = stderr.flush();
    }

    pub(super) fn finish(&mut self) {
        if self.on {
            self.show();
            eprintln!();
            self.on = false;
        }
    }
}

impl Drop for Progress {
    /// A copy that failed or was interrupted leaves its last progress line complete, so
    /// the error starts on a line of its own.
    fn drop(&mut self) {
        if self.on && self.shown.is_some() {
            eprintln!();
        }
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_do() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(100 * 1024 * 1024), "100.0 MiB");
    }
}
