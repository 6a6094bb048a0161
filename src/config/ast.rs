//! The syntax tree of one configuration file, exactly as written.
//!
//! This is what the parser produces. Includes are still statements here; `tree.rs` holds the
//! merged result after includes are expanded.

use super::source::Origin;

/// A value: a scalar, a list `( … )` or a dictionary `[ k = v … ]`.
#[derive(Clone, Debug)]
pub struct Value {
    pub kind: ValueKind,
    pub origin: Origin,
}

#[derive(Clone, Debug)]
pub enum ValueKind {
    /// A double-quoted string, escapes already decoded.
    Quoted(String),
    /// An unquoted word: `true`, `10.0.0.0/8`, `fd01:345::1`, `some.smtp.server`.
    Bare(String),
    List(Vec<Value>),
    Dict(Vec<Entry>),
}

/// One `key = value` inside a dictionary.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub key_quoted: bool,
    pub value: Value,
    pub origin: Origin,
}

impl Value {
    /// The text of a scalar, quoted or bare; `None` for lists and dictionaries.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            ValueKind::Quoted(s) | ValueKind::Bare(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a list; a scalar counts as a one-item list, as Momentum reads `uri = "x"`.
    pub fn as_list(&self) -> Option<&[Value]> {
        match &self.kind {
            ValueKind::List(items) => Some(items),
            ValueKind::Quoted(_) | ValueKind::Bare(_) => Some(std::slice::from_ref(self)),
            ValueKind::Dict(_) => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[Entry]> {
        match &self.kind {
            ValueKind::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// What kind of value this is, for messages ("expected a list, found a dictionary").
    pub fn describe(&self) -> &'static str {
        match self.kind {
            ValueKind::Quoted(_) => "a string",
            ValueKind::Bare(_) => "a word",
            ValueKind::List(_) => "a list",
            ValueKind::Dict(_) => "a dictionary",
        }
    }
}

/// `name = value`.
#[derive(Clone, Debug)]
pub struct Setting {
    pub name: String,
    pub value: Value,
    pub origin: Origin,
}

/// The instance name of a scope: `Listen ":25"` or `node node1.lan`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    pub name: String,
    pub quoted: bool,
}

/// `Name [instance] { body }`.
#[derive(Clone, Debug)]
pub struct ScopeStmt {
    pub name: String,
    pub instance: Option<Instance>,
    pub body: Vec<Statement>,
    pub origin: Origin,
}

/// `include "path"` or `readonly_include "path"`.
#[derive(Clone, Debug)]
pub struct Include {
    pub readonly: bool,
    pub target: Value,
    pub origin: Origin,
}

#[derive(Clone, Debug)]
pub enum Statement {
    Setting(Setting),
    Scope(ScopeStmt),
    Include(Include),
}
