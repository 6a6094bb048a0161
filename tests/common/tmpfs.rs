//! A small tmpfs mounted for one test: a really full file system, or one remounted read-only,
//! under the spool.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory of the test's, unmounted (lazily) when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`512k`, `2m`) at `at`, creating the directory. `None`, said
    /// loudly, where mounting is not permitted (the test then has nothing to check).
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(at.to_owned())),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs ({}); this test needs root and mount rights",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount ({e}); this test needs root and mount rights");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `mount -o remount,MODE` (`ro`, `rw`).
    pub fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -o remount,{mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
