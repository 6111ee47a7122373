//! The poison-ignoring lock helpers of the server crates (std `Mutex` and `RwLock`).

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock a std mutex, ignoring poisoning: no state guarded this way has an invariant that
/// a panic half way through could break, and one panicking call must not wedge the rest.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-lock a std `RwLock`, ignoring poisoning (as [`lock`]).
pub fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-lock a std `RwLock`, ignoring poisoning (as [`lock`]).
pub fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
