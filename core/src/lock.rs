//! The one poison-ignoring lock helper of the server crates.

use std::sync::{Mutex, MutexGuard};

/// Lock a std mutex, ignoring poisoning: no state guarded this way has an invariant that
/// a panic half way through could break, and one panicking call must not wedge the rest.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
