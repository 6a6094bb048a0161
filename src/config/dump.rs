//! Writes a merged tree back out in the configuration language (`--dump-config`).
//!
//! The output parses again to the same tree: strings are re-escaped, barewords stay bare,
//! instance names keep their quoting. With `origins`, each line ends in a comment naming the
//! file and line it came from, which is what an operator wants when tracing a value through
//! includes.

use super::ast::{Instance, Value, ValueKind};
use super::parse::is_bareword;
use super::source::{Origin, SourceMap};
use super::tree::Scope;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, Default)]
pub struct DumpOptions {
    /// End each line with `# FILE:LINE` of where it was written.
    pub origins: bool,
}

/// The whole tree as configuration text.
pub fn dump(root: &Scope, sources: &SourceMap, opts: DumpOptions) -> String {
    let mut out = String::new();
    let w = Writer { sources, opts };
    w.body(&mut out, root, 0);
    out
}

struct Writer<'a> {
    sources: &'a SourceMap,
    opts: DumpOptions,
}

impl Writer<'_> {
    fn origin_comment(&self, out: &mut String, origin: Option<Origin>) {
        if let (true, Some(o)) = (self.opts.origins, origin) {
            let loc = self.sources.locate(o);
            let _ = write!(out, "  # {}:{}", loc.path.display(), loc.line);
        }
    }

    fn body(&self, out: &mut String, scope: &Scope, depth: usize) {
        let pad = "  ".repeat(depth);
        for s in &scope.settings {
            let _ = write!(out, "{pad}{} = ", s.name);
            value(out, &s.value, depth);
            self.origin_comment(out, Some(s.origin));
            out.push('\n');
        }
        for child in &scope.scopes {
            let _ = write!(out, "{pad}{}", child.name);
            if let Some(inst) = &child.instance {
                out.push(' ');
                instance(out, inst);
            }
            out.push_str(" {");
            if child.settings.is_empty() && child.scopes.is_empty() && child.unresolved.is_empty() {
                out.push('}');
                self.origin_comment(out, child.origin);
                out.push('\n');
                continue;
            }
            self.origin_comment(out, child.origin);
            out.push('\n');
            self.body(out, child, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
        for inc in &scope.unresolved {
            let keyword = if inc.readonly {
                "readonly_include"
            } else {
                "include"
            };
            let _ = write!(out, "{pad}{keyword} ");
            value(out, &inc.target, depth);
            out.push_str("  # not found when dumped");
            self.origin_comment(out, Some(inc.origin));
            out.push('\n');
        }
    }
}

fn instance(out: &mut String, inst: &Instance) {
    // A bare instance starting with `<` would read as a 2.x attribute list.
    if inst.quoted || !is_bareword(&inst.name) || inst.name.starts_with('<') {
        quote(out, &inst.name);
    } else {
        out.push_str(&inst.name);
    }
}

/// Writes `s` as a double-quoted string with the escapes the parser decodes.
pub fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn value(out: &mut String, v: &Value, depth: usize) {
    match &v.kind {
        ValueKind::Quoted(s) => quote(out, s),
        // A bareword that could not be read back as one (only possible in a tree built by
        // hand) is quoted rather than written wrongly.
        ValueKind::Bare(s) if is_bareword(s) => out.push_str(s),
        ValueKind::Bare(s) => quote(out, s),
        ValueKind::List(items) => {
            out.push('(');
            for item in items {
                out.push(' ');
                value(out, item, depth);
            }
            out.push_str(if items.is_empty() { ")" } else { " )" });
        }
        ValueKind::Dict(entries) if entries.len() <= 1 => {
            out.push('[');
            for e in entries {
                out.push(' ');
                key(out, &e.key, e.key_quoted);
                out.push_str(" = ");
                value(out, &e.value, depth);
            }
            out.push_str(if entries.is_empty() { "]" } else { " ]" });
        }
        ValueKind::Dict(entries) => {
            let pad = "  ".repeat(depth + 1);
            out.push_str("[\n");
            for e in entries {
                out.push_str(&pad);
                key(out, &e.key, e.key_quoted);
                out.push_str(" = ");
                value(out, &e.value, depth + 1);
                out.push('\n');
            }
            out.push_str(&"  ".repeat(depth));
            out.push(']');
        }
    }
}

fn key(out: &mut String, k: &str, quoted: bool) {
    if quoted || !is_bareword(k) {
        quote(out, k);
    } else {
        out.push_str(k);
    }
}
