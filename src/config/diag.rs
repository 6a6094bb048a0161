//! Diagnostics: errors and warnings that point into the configuration.
//!
//! Printed like a compiler's: `FILE:LINE:COL: error: message`, then the offending line and a
//! caret under the column, so an operator can fix a file without counting characters.

use super::source::{Origin, SourceMap};
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where the problem is; `None` for problems with no single place (a missing listener).
    pub origin: Option<Origin>,
    pub message: String,
    /// Further lines: hints, or the chain of an include cycle.
    pub notes: Vec<String>,
    /// About something valid that smtp-auth-proxy does not implement: `--strict` makes these
    /// errors, as Momentum refuses names it does not know.
    pub unimplemented: bool,
}

impl Diagnostic {
    pub fn error(origin: impl Into<Option<Origin>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            origin: origin.into(),
            message: message.into(),
            notes: Vec::new(),
            unimplemented: false,
        }
    }

    pub fn warning(origin: impl Into<Option<Origin>>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(origin, message)
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Marks a warning as being about something not implemented (see `unimplemented`).
    pub fn unimplemented(mut self) -> Self {
        self.unimplemented = true;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `FILE:LINE:COL: severity: message` and, when `context` is set, the source line with a
    /// caret under the column.
    pub fn render(&self, sources: &SourceMap, context: bool) -> String {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = String::new();
        match self.origin {
            Some(origin) => {
                let loc = sources.locate(origin);
                let _ = write!(out, "{loc}: {label}: {}", self.message);
                if context {
                    let num = loc.line.to_string();
                    let pad = " ".repeat(num.len());
                    // Tabs are kept so the caret lines up under the same terminal columns.
                    let lead: String = loc
                        .line_text
                        .chars()
                        .take(loc.column - 1)
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    let _ = write!(
                        out,
                        "\n {pad} |\n {num} | {}\n {pad} | {lead}^",
                        loc.line_text
                    );
                }
            }
            None => {
                let _ = write!(out, "{label}: {}", self.message);
            }
        }
        for note in &self.notes {
            let _ = write!(out, "\n  = note: {note}");
        }
        out
    }
}

/// A list of diagnostics with helpers used by every stage.
#[derive(Default, Debug)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    /// Turns every "not implemented" warning into an error (`--strict`).
    pub fn escalate_unimplemented(&mut self) {
        for d in self.0.iter_mut().filter(|d| d.unimplemented) {
            d.severity = Severity::Error;
        }
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Orders by file position so output reads top to bottom; stable for equal positions.
    pub fn sort(&mut self) {
        self.0.sort_by_key(|d| d.origin.map(|o| (o.file, o.offset)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_and_caret() {
        let mut map = SourceMap::new();
        let file = map.add("x.conf".into(), "a = 1\n\tbad = (\n".into());
        let d = Diagnostic::error(Origin { file, offset: 13 }, "list is not closed").note("hint");
        assert_eq!(
            d.render(&map, true),
            "x.conf:2:8: error: list is not closed\n   |\n 2 | \tbad = (\n   | \t      ^\n  = note: hint"
        );
        assert_eq!(
            Diagnostic::warning(None, "w").render(&map, true),
            "warning: w"
        );
    }
}
