//! The local terminal of `exec-server run`: raw mode that is restored on every way out
//! (drop, explicit restore before exit, a panic hook), its size, and tty detection.

use std::os::fd::RawFd;
use std::sync::{Mutex, PoisonError};

use exec_server_client::TerminalSize;

/// The terminal settings to put back, and the fd they belong to.
static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);

/// Whether `fd` is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The size of the terminal on `fd`, if it is one (and reports a non-zero size).
pub fn size(fd: RawFd) -> Option<TerminalSize> {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some(TerminalSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Raw mode on a terminal for as long as this lives (and [`restore`] is called on the
/// paths that skip destructors: `process::exit`, a panic).
pub struct RawMode(());

impl RawMode {
    /// Puts the terminal on `fd` in raw mode: no echo, no line editing, no signals from
    /// keys (Ctrl-C becomes a byte for the remote terminal), no output processing.
    pub fn enable(fd: RawFd) -> std::io::Result<RawMode> {
        // SAFETY: tcgetattr/tcsetattr read and write one termios struct we own.
        unsafe {
            let mut original: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut original) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            *SAVED.lock().unwrap_or_else(PoisonError::into_inner) = Some((fd, original));
            let mut raw = original;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSADRAIN, &raw) != 0 {
                let e = std::io::Error::last_os_error();
                restore();
                return Err(e);
            }
        }
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts back the terminal settings saved by [`RawMode::enable`], if any (idempotent).
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some((fd, original)) = saved {
        // SAFETY: writes back the termios struct read earlier.
        unsafe {
            libc::tcsetattr(fd, libc::TCSADRAIN, &original);
        }
    }
}

/// Restores the terminal before the default panic message is printed.
pub fn restore_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}
