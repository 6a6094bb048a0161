//! Dropping root once the sockets are bound (`Security { user = … group = … }`), and running
//! in the background without systemd.

use std::ffi::CString;
use std::io;

/// Becomes `user` (and `group`, else the user's primary group), with no supplementary groups
/// but that one. Does nothing when neither is set.
pub fn drop_to(user: Option<&str>, group: Option<&str>) -> Result<(), String> {
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    let (uid, user_gid) = match user {
        Some(name) => {
            let c = CString::new(name).map_err(|_| format!("user `{name}`: bad name"))?;
            // SAFETY: getpwnam returns a pointer into static storage or null; it is read at
            // once, before any other call that could overwrite it.
            let pw = unsafe { libc::getpwnam(c.as_ptr()) };
            if pw.is_null() {
                return Err(format!("Security user `{name}` does not exist"));
            }
            // SAFETY: checked non-null above.
            let pw = unsafe { &*pw };
            (Some(pw.pw_uid), Some(pw.pw_gid))
        }
        None => (None, None),
    };
    let gid = match group {
        Some(name) => {
            let c = CString::new(name).map_err(|_| format!("group `{name}`: bad name"))?;
            // SAFETY: as for getpwnam.
            let gr = unsafe { libc::getgrnam(c.as_ptr()) };
            if gr.is_null() {
                return Err(format!("Security group `{name}` does not exist"));
            }
            // SAFETY: checked non-null above.
            Some(unsafe { (*gr).gr_gid })
        }
        None => user_gid,
    };
    let check = |r: libc::c_int, what: &str| {
        if r == 0 {
            Ok(())
        } else {
            Err(format!("{what}: {}", io::Error::last_os_error()))
        }
    };
    if let Some(gid) = gid {
        // SAFETY: plain system calls on integers and a one-element array.
        check(unsafe { libc::setgroups(1, &gid) }, "setgroups")?;
        check(unsafe { libc::setgid(gid) }, "setgid")?;
    }
    if let Some(uid) = uid {
        // SAFETY: as above. glibc applies it to every thread of the process.
        check(unsafe { libc::setuid(uid) }, "setuid")?;
        // Root must not be recoverable.
        if unsafe { libc::setuid(0) } == 0 && uid != 0 {
            return Err("could regain root after setuid".into());
        }
    }
    Ok(())
}
