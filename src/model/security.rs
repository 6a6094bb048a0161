//! `Security { user = … group = … }`: who the daemon runs as once its sockets are bound.

use super::Cx;
use super::names::ScopeKind;
use super::value::{self, Spanned};
use crate::config::Scope;

#[derive(Clone, Debug, Default)]
pub struct Security {
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
}

pub(super) fn read(cx: &mut Cx, scope: &Scope) -> Security {
    let mut sec = Security::default();
    for s in &scope.settings {
        match s.name.to_ascii_lowercase().as_str() {
            "user" => sec.user = cx.read(s, value::text),
            "group" => sec.group = cx.read(s, value::text),
            _ => cx.unknown_option(ScopeKind::Security, s),
        }
    }
    for child in &scope.scopes {
        cx.unknown_scope(ScopeKind::Security, child);
    }
    sec
}
