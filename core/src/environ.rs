//! Taking a secret out of the process environment for good: read it, remove it, and
//! overwrite its bytes where the kernel shows the original environment
//! (`/proc/PID/environ`), so neither a child that reads its parent's `/proc` entry nor a
//! helper process started later (which inherits the environment) can find it.

use std::ffi::{CStr, OsString};
use std::os::unix::ffi::OsStringExt;

unsafe extern "C" {
    /// The C library's environment: a NULL-terminated array of `NAME=value` strings.
    static mut environ: *mut *mut libc::c_char;
}

/// Reads the environment variable `name`, removes it from the environment, and overwrites
/// with zero bytes every `name=value` string the environment held, among them the one in
/// the block the kernel reads `/proc/PID/environ` from. Returns its value (the first, if it
/// was there more than once).
///
/// # Safety
///
/// Call it before any other thread exists: it changes the environment, which another
/// thread could be reading.
pub unsafe fn take_env_secret(name: &str) -> Option<String> {
    let prefix: Vec<u8> = [name.as_bytes(), b"="].concat();
    let mut value: Option<OsString> = None;
    let mut strings: Vec<(*mut libc::c_char, usize)> = Vec::new();
    // SAFETY: no other thread exists (the caller's promise), so `environ` is stable while
    // it is walked; every entry up to the NULL one is a NUL-terminated string.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let bytes = CStr::from_ptr(*entry).to_bytes();
            if let Some(rest) = bytes.strip_prefix(prefix.as_slice()) {
                value.get_or_insert_with(|| OsString::from_vec(rest.to_vec()));
                strings.push((*entry, bytes.len()));
            }
            entry = entry.add(1);
        }
    }
    if strings.is_empty() {
        return None;
    }
    // SAFETY: as above: no other thread reads the environment meanwhile.
    unsafe { std::env::remove_var(name) };
    for (ptr, len) in strings {
        // SAFETY: the string is no longer in the environment and nothing else points to
        // it; its `len` bytes (the NUL after them stays) are ours to overwrite.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
    }
    value.map(|v| v.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_variable_is_none() {
        // SAFETY: nothing in this test binary reads this variable, and a missing one is
        // not changed.
        let got = unsafe { take_env_secret("EXEC_SERVER_TEST_NO_SUCH_VARIABLE") };
        assert_eq!(got, None);
    }
}
