//! The account a child runs as (`process/start` `user`): looked up before the clone (on the
//! blocking pool: the lookup may ask a directory service), applied in the clone child with
//! raw system calls only.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::unix::ffi::OsStringExt;

use exec_server_protocol::SpawnStep;

use crate::Error;

/// A user account from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub name: OsString,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups (the primary group included).
    pub groups: Vec<libc::gid_t>,
    pub home: OsString,
    pub shell: OsString,
}

fn os(ptr: *const libc::c_char) -> OsString {
    if ptr.is_null() {
        return OsString::new();
    }
    // SAFETY: getpw*_r filled the string inside our buffer, NUL-terminated.
    OsString::from_vec(unsafe { CStr::from_ptr(ptr) }.to_bytes().to_vec())
}

/// Looks `spec` up (a name, or a numeric uid).
fn lookup(spec: &str) -> Result<Option<Account>, io::Error> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: passwd is plain old data filled by getpw*_r.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = match spec.parse::<libc::uid_t>() {
            // SAFETY: valid pointers to pwd, the buffer (with its length) and result.
            Ok(uid) => unsafe {
                libc::getpwuid_r(
                    uid,
                    &mut pwd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut result,
                )
            },
            Err(_) => {
                let name =
                    CString::new(spec).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                // SAFETY: as above, with a NUL-terminated name.
                unsafe {
                    libc::getpwnam_r(
                        name.as_ptr(),
                        &mut pwd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        &mut result,
                    )
                }
            }
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        let name = os(pwd.pw_name);
        let groups = group_list(&name, pwd.pw_gid)?;
        return Ok(Some(Account {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            groups,
            home: os(pwd.pw_dir),
            shell: os(pwd.pw_shell),
            name,
        }));
    }
}

/// The groups `name` belongs to (with `gid`).
fn group_list(name: &OsString, gid: libc::gid_t) -> io::Result<Vec<libc::gid_t>> {
    let cname = CString::new(name.clone().into_vec())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: groups has room for n entries; getgrouplist writes at most n and sets n.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(usize::try_from(n).unwrap_or(0));
            return Ok(groups);
        }
        let wanted = usize::try_from(n).unwrap_or(0);
        if wanted <= groups.len() || wanted > 65536 {
            // No size to grow to: keep just the primary group.
            return Ok(vec![gid]);
        }
        groups.resize(wanted, 0);
    }
}

/// The account to run as. -32000 (step `user`) for an unknown user or a server that cannot
/// switch users.
pub(crate) fn resolve(user: &str) -> Result<Account, Error> {
    let account = lookup(user)
        .map_err(|e| Error::spawn_os(SpawnStep::User, &format!("looking up user {user:?}"), &e))?
        .ok_or_else(|| Error::spawn(SpawnStep::User, format!("unknown user {user:?}")))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && euid != account.uid {
        return Err(Error::spawn(
            SpawnStep::User,
            format!("cannot run as user {user:?}: only a server running as root can switch users"),
        ));
    }
    Ok(account)
}

/// In the child (raw system calls only: glibc's wrappers would try to change the
/// credentials of every thread of the server, whose memory a `CLONE_VM` child shares):
/// take on the account's groups, gid and uid, in that order (setuid last: it gives up the
/// right to the others). A child of a server that already runs as this user skips it.
pub(crate) fn become_in_child(account: &Account) -> io::Result<()> {
    // SAFETY: raw system calls on integers and on the group list allocated before the
    // clone, which is only read here.
    unsafe {
        if libc::syscall(libc::SYS_geteuid) != 0 {
            return Ok(());
        }
        if libc::syscall(
            libc::SYS_setgroups,
            account.groups.len(),
            account.groups.as_ptr(),
        ) != 0
            || libc::syscall(libc::SYS_setgid, account.gid) != 0
            || libc::syscall(libc::SYS_setuid, account.uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_by_uid() {
        let by_name = lookup("root").unwrap().unwrap();
        let by_uid = lookup("0").unwrap().unwrap();
        assert_eq!(by_name, by_uid);
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert_eq!(by_name.name, "root");
        assert!(by_name.groups.contains(&0));
    }

    #[test]
    fn unknown_users_are_spawn_errors() {
        assert_eq!(lookup("no-such-user-xyz").unwrap(), None);
        let err = resolve("no-such-user-xyz").unwrap_err();
        assert_eq!(
            err,
            Error::spawn(SpawnStep::User, "unknown user \"no-such-user-xyz\"".into())
        );
    }
}
