//! Helpers shared by the integration tests.
#![allow(dead_code)]

use smtp_auth_proxy::config::{self, LoadOptions, Loaded, MissingIncludes};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Loads `text` (which must parse) and builds the model from it; returns the model with every
/// diagnostic rendered `FILE:LINE:COL: sev: msg`.
pub fn build(text: &str) -> (smtp_auth_proxy::model::Config, Vec<String>) {
    let loaded = load_text(text);
    assert!(!loaded.diagnostics.has_errors(), "{:#?}", messages(&loaded));
    let (config, diags) = smtp_auth_proxy::model::build(&loaded.root, &loaded.sources);
    let msgs = diags
        .0
        .iter()
        .map(|d| d.render(&loaded.sources, false))
        .collect();
    (config, msgs)
}

/// A runtime on the test's own thread, for driving the library's async parts directly.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sap-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` to `name` (creating parent directories) and returns the full path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options with no search path, so tests never see files of the machine.
pub fn opts() -> LoadOptions {
    LoadOptions {
        missing_includes: MissingIncludes::Error,
        search_path: Vec::new(),
    }
}

pub fn load_text(text: &str) -> Loaded {
    config::load_str("test.conf", text, &opts())
}

/// All diagnostics of a load, rendered without source context, one per line.
pub fn messages(loaded: &Loaded) -> Vec<String> {
    loaded
        .diagnostics
        .0
        .iter()
        .map(|d| d.render(&loaded.sources, false))
        .collect()
}

/// Loads text that must be valid and returns the tree.
pub fn tree(text: &str) -> Loaded {
    let l = load_text(text);
    assert!(
        !l.diagnostics.has_errors(),
        "unexpected errors: {:#?}",
        messages(&l)
    );
    l
}

/// The single error a text produces, rendered as `FILE:LINE:COL: error: message`.
pub fn error_of(text: &str) -> String {
    let l = load_text(text);
    let errs: Vec<String> = l
        .diagnostics
        .errors()
        .map(|d| d.render(&l.sources, false))
        .collect();
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    errs[0].clone()
}
pub mod daemon;
pub mod delivery;
pub mod dnsmasq;
pub mod fake_upstream;
pub mod haproxy;
pub mod postfix;
pub mod tmpfs;
