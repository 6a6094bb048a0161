//! Dropping root once the sockets are bound (`Security { user = … group = … }`), and running
//! in the background without systemd.

use std::ffi::CString;
use std::io;

/// The uid and gid `Security { user group }` name: the group given, else the user's primary
/// group. `None` for what is not set.
pub fn ids(user: Option<&str>, group: Option<&str>) -> Result<(Option<u32>, Option<u32>), String> {
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
    Ok((uid, gid))
}

/// Makes `dirs` (created if missing, mode 0750) belong to the Security user and group, so
/// that what the daemon sets up as root it can still write once it is not. Does nothing when
/// not root or when no Security user or group is set.
pub fn prepare_dirs(
    dirs: &[&std::path::Path],
    user: Option<&str>,
    group: Option<&str>,
) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    for dir in dirs {
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    // SAFETY: a plain system call.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let (uid, gid) = ids(user, group)?;
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    for dir in dirs {
        std::os::unix::fs::chown(dir, uid, gid).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Becomes `user` (and `group`, else the user's primary group), with the user's supplementary
/// groups. Does nothing when neither is set.
pub fn drop_to(user: Option<&str>, group: Option<&str>) -> Result<(), String> {
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    let (uid, gid) = ids(user, group)?;
    let check = |r: libc::c_int, what: &str| {
        if r == 0 {
            Ok(())
        } else {
            Err(format!("{what}: {}", io::Error::last_os_error()))
        }
    };
    if let Some(gid) = gid {
        // The user's own supplementary groups (from /etc/group), as a login would get them:
        // Debian's snakeoil key, for one, is readable through `ssl-cert`, and a reload reads
        // keys again. Without a user, only the group.
        match user {
            Some(name) => {
                let c = CString::new(name).map_err(|_| format!("user `{name}`: bad name"))?;
                // SAFETY: a valid C string and an integer.
                check(unsafe { libc::initgroups(c.as_ptr(), gid) }, "initgroups")?;
            }
            // SAFETY: plain system call on a one-element array.
            None => check(unsafe { libc::setgroups(1, &gid) }, "setgroups")?,
        }
        // SAFETY: plain system call.
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
