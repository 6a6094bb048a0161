//! Loading: read a file, parse it, expand `include` / `readonly_include`, merge into one tree.
//!
//! Include rules (Momentum's, see shared spec §1.7): a relative path is looked up first in the
//! directory of the file that includes it, then along the search path; a directory includes its
//! files in sorted order, skipping dotfiles and sub-directories; `file://` is accepted and other
//! URI schemes are refused. Including a file twice is legal; including a file from itself,
//! directly or not, is a cycle and an error that names the chain.

use super::ast::{Include, Statement};
use super::diag::{Diagnostic, Diagnostics};
use super::parse;
use super::source::{FileId, Origin, SourceMap};
use super::tree::Scope;
use std::path::{Path, PathBuf};

/// What to do with an include whose file does not exist here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingIncludes {
    /// An error: the daemon and `--check-config` need the whole configuration.
    Error,
    /// A warning, and the include is kept in the tree: `--dump-config` shows what is there.
    Keep,
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub missing_includes: MissingIncludes,
    /// Directories searched for relative includes after the including file's own directory.
    pub search_path: Vec<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            missing_includes: MissingIncludes::Error,
            search_path: default_search_path(),
        }
    }
}

/// Momentum's search path: `EC_CONF_SEARCH_PATH` if set, else its documented default with
/// `{NODENAME}` replaced by this host's short name.
pub fn default_search_path() -> Vec<PathBuf> {
    let spec = std::env::var("EC_CONF_SEARCH_PATH").unwrap_or_else(|_| {
        "/opt/msys/ecelerity/etc/conf/global:/opt/msys/ecelerity/etc/conf/{NODENAME}:/opt/msys/ecelerity/etc/conf/default"
            .into()
    });
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| h.trim().split('.').next().map(str::to_owned))
        .unwrap_or_default();
    spec.split(':')
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(p.replace("{NODENAME}", &node)))
        .collect()
}

/// The result of a load: the tree, the files it came from, and what went wrong.
pub struct Loaded {
    pub sources: SourceMap,
    pub root: Scope,
    pub diagnostics: Diagnostics,
}

/// Includes nested deeper than this are refused: a guard against runaway directory layouts.
const MAX_DEPTH: usize = 64;

struct Loader<'o> {
    opts: &'o LoadOptions,
    sources: SourceMap,
    diagnostics: Diagnostics,
    /// The files being loaded, outermost first, with the include that brought each in.
    stack: Vec<(PathBuf, Option<Origin>)>,
}

/// Loads the configuration file at `path` and everything it includes.
pub fn load(path: &Path, opts: &LoadOptions) -> Loaded {
    let mut loader = Loader::new(opts);
    let mut root = Scope::root();
    loader.load_file(path, None, &mut root);
    loader.finish(root)
}

/// Loads configuration text that is not in a file (tests, benchmarks). Relative includes are
/// looked up from the current directory.
pub fn load_str(name: &str, text: &str, opts: &LoadOptions) -> Loaded {
    let mut loader = Loader::new(opts);
    let mut root = Scope::root();
    let id = loader.sources.add(PathBuf::from(name), text.to_owned());
    loader.parse_and_apply(id, &mut root);
    loader.finish(root)
}

impl<'o> Loader<'o> {
    fn new(opts: &'o LoadOptions) -> Self {
        Loader {
            opts,
            sources: SourceMap::new(),
            diagnostics: Diagnostics::default(),
            stack: Vec::new(),
        }
    }

    fn finish(mut self, root: Scope) -> Loaded {
        self.diagnostics.sort();
        Loaded {
            sources: self.sources,
            root,
            diagnostics: self.diagnostics,
        }
    }

    fn load_file(&mut self, path: &Path, from: Option<Origin>, scope: &mut Scope) {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        if let Some(pos) = self.stack.iter().position(|(p, _)| *p == canonical) {
            let mut d = Diagnostic::error(
                from,
                format!("include cycle: `{}` includes itself", path.display()),
            );
            for (file, origin) in self.stack[pos + 1..].iter().map(|(f, o)| (f, *o)) {
                if let Some(o) = origin {
                    d = d.note(format!(
                        "{} includes {}",
                        self.sources.locate(o),
                        file.display()
                    ));
                }
            }
            if let Some(o) = from {
                d = d.note(format!(
                    "{} includes {}",
                    self.sources.locate(o),
                    canonical.display()
                ));
            }
            self.diagnostics.push(d);
            return;
        }
        if self.stack.len() >= MAX_DEPTH {
            self.diagnostics.push(Diagnostic::error(
                from,
                format!("includes nested more than {MAX_DEPTH} deep"),
            ));
            return;
        }
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.diagnostics.push(Diagnostic::error(
                    from,
                    format!("cannot read {}: {e}", path.display()),
                ));
                return;
            }
        };
        let (text, bad_utf8) = match String::from_utf8(text) {
            Ok(s) => (s, None),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(at))
            }
        };
        let id = self.sources.add(path.to_owned(), text);
        if let Some(at) = bad_utf8 {
            self.diagnostics.push(Diagnostic::warning(
                Origin {
                    file: id,
                    offset: u32::try_from(at).unwrap_or(u32::MAX),
                },
                "the file is not valid UTF-8 here; the bytes were read as U+FFFD",
            ));
        }
        self.stack.push((canonical, from));
        self.parse_and_apply(id, scope);
        self.stack.pop();
    }

    fn parse_and_apply(&mut self, id: FileId, scope: &mut Scope) {
        match parse::parse(self.sources.text(id), id) {
            Ok(stmts) => self.apply(stmts, scope, id),
            Err(e) => {
                let mut d = Diagnostic::error(
                    Origin {
                        file: id,
                        offset: u32::try_from(e.offset).unwrap_or(u32::MAX),
                    },
                    e.message,
                );
                d.notes = e.notes;
                self.diagnostics.push(d);
            }
        }
    }

    fn apply(&mut self, stmts: Vec<Statement>, scope: &mut Scope, file: FileId) {
        for stmt in stmts {
            match stmt {
                Statement::Setting(s) => scope.set(s),
                Statement::Scope(s) => {
                    let child = scope.child_mut(&s.name, s.instance, s.origin);
                    self.apply(s.body, child, file);
                }
                Statement::Include(inc) => self.include(inc, scope, file),
            }
        }
    }

    fn include(&mut self, inc: Include, scope: &mut Scope, file: FileId) {
        let Some(target) = inc.target.as_scalar() else {
            self.diagnostics.push(Diagnostic::error(
                inc.target.origin,
                format!("include takes a path, found {}", inc.target.describe()),
            ));
            return;
        };
        let target = match target.strip_prefix("file://") {
            Some(path) => path,
            None if has_uri_scheme(target) => {
                self.diagnostics.push(Diagnostic::error(
                    inc.target.origin,
                    format!("cannot include `{target}`: only files can be included (a path, or a `file://` URI)"),
                ));
                return;
            }
            None => target,
        };
        if target.is_empty() {
            self.diagnostics.push(Diagnostic::error(
                inc.target.origin,
                "include of an empty path",
            ));
            return;
        }
        let written = Path::new(target);
        let candidates: Vec<PathBuf> = if written.is_absolute() {
            vec![written.to_owned()]
        } else {
            std::iter::once(self.sources.dir(file).join(written))
                .chain(self.opts.search_path.iter().map(|d| d.join(written)))
                .collect()
        };
        let Some(found) = candidates.iter().find(|p| p.exists()) else {
            let looked = candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!("included file `{target}` does not exist here");
            match self.opts.missing_includes {
                MissingIncludes::Error => self.diagnostics.push(
                    Diagnostic::error(inc.origin, message).note(format!("looked for {looked}")),
                ),
                MissingIncludes::Keep => {
                    self.diagnostics.push(
                        Diagnostic::warning(inc.origin, message)
                            .note("the include is kept in the output as written"),
                    );
                    scope.unresolved.push(inc);
                }
            }
            return;
        };
        if found.is_dir() {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(found) {
                Ok(dir) => dir
                    .filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect(),
                Err(e) => {
                    self.diagnostics.push(Diagnostic::error(
                        inc.origin,
                        format!("cannot read directory {}: {e}", found.display()),
                    ));
                    return;
                }
            };
            files.sort();
            for f in files {
                self.load_file(&f, Some(inc.origin), scope);
            }
        } else {
            self.load_file(found, Some(inc.origin), scope);
        }
    }
}

/// `scheme://…` with an RFC 3986 scheme name.
fn has_uri_scheme(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}
