//! The server's heap: glibc's allocator, tuned for the output hot path, with freed memory given back to the kernel once the server no longer needs it (SPEC 7.3).
//!
//! Every streamed chunk is a fresh allocation of up to 90 KiB. With glibc's defaults
//! (trim the top of a heap above 128 KiB, shrink per-thread arenas with `madvise` at each
//! free) each one page-faulted its memory in again, the largest single cost of
//! streaming, so the top of a heap is trimmed only past 16 MiB. But glibc gives back
//! only the free memory at the top of a heap: free chunks below a live allocation stay
//! resident for good, and after a load they are most of the heap (64 connections × 8
//! processes × 4 MiB left ~560 MiB resident with nothing retained). So a watcher compares,
//! once a second, the resident size with what the heap has in use, and when more than
//! [`TRIM_SLACK`] of it is free, asks glibc to return every free page (`malloc_trim`).
//! While output streams, freed chunks are reused at once and the slack stays small: the
//! hot path is not trimmed. `EXEC_SERVER_NO_TRIM=1` in the server's environment turns
//! the watcher off, to measure what it does (BENCHMARKS.md, memory).

use std::time::Duration;

/// How often the heap is looked at.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Free but resident heap memory tolerated before it is given back.
const TRIM_SLACK: usize = 32 << 20;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: a background thread purges pages unused for a second.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether glibc's allocator is the one in use.
const GLIBC: bool =
    cfg!(target_env = "gnu") && !cfg!(feature = "jemalloc") && !cfg!(feature = "mimalloc");

/// Sets glibc's thresholds; runs first thing in `main`, before any other thread.
pub(crate) fn tune() {
    #[cfg(target_env = "gnu")]
    if GLIBC {
        // SAFETY: mallopt only sets allocator parameters; it runs before any other thread.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
    }
}

/// Starts the watcher that gives free heap memory back (glibc only; the other
/// allocators purge on their own). Call it inside the runtime.
pub(crate) fn give_back_free_memory() {
    if !GLIBC || std::env::var_os("EXEC_SERVER_NO_TRIM").is_some() {
        return;
    }
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The look is cheap (one read of /proc, the arenas' statistics); a trim walks
            // every arena and calls `madvise`: not on a worker, whose tasks would wait.
            if free_resident() > TRIM_SLACK {
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    });
}

/// Resident memory that the heap does not use: what a trim could give back (an
/// over-estimate by the size of the code, stacks and other mappings, a few MiB).
fn free_resident() -> usize {
    #[cfg(target_env = "gnu")]
    {
        let Some(resident) = resident_bytes() else {
            return 0;
        };
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        resident.saturating_sub(info.uordblks.saturating_add(info.hblkhd))
    }
    #[cfg(not(target_env = "gnu"))]
    0
}

fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages of the heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The server's resident size, from `/proc/self/statm`.
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(usize::try_from(page).ok()?))
}
