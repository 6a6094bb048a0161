//! The configuration language: parsing, includes, merging and writing back.
//!
//! This layer knows the *syntax* of `ecelerity.conf` and nothing of what options mean; the
//! typed meaning lives in [`crate::model`]. Dependencies point one way: config -> model.

pub mod ast;
pub mod diag;
pub mod dump;
pub mod load;
pub mod parse;
pub mod source;
pub mod tree;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use load::{LoadOptions, Loaded, MissingIncludes, load, load_str};
pub use source::{FileId, Origin, SourceMap};
pub use tree::Scope;
