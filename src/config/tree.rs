//! The merged configuration tree: includes expanded, repeated scope instances merged, repeated
//! options reduced to the last one written.

use super::ast::{Include, Instance, Setting};
use super::source::Origin;
use std::collections::HashMap;

/// One scope instance: the global scope, `ESMTP_Listener`, `Listen ":25"`, …
#[derive(Debug, Default, Clone)]
pub struct Scope {
    /// The name as first written (names compare case-insensitively).
    pub name: String,
    pub instance: Option<Instance>,
    /// Where the scope was first declared; `None` for the global scope.
    pub origin: Option<Origin>,
    /// Options in the order first written; a repeated option keeps its place, takes the later value.
    pub settings: Vec<Setting>,
    /// Child scopes in the order first declared.
    pub scopes: Vec<Scope>,
    /// Includes that were not loaded (a file missing here, when loading for `--dump-config`).
    pub unresolved: Vec<Include>,
    setting_index: HashMap<String, usize>,
    scope_index: HashMap<(String, Option<String>), usize>,
}

impl Scope {
    pub fn root() -> Self {
        Self {
            name: "Global".into(),
            ..Self::default()
        }
    }

    /// Sets an option; a later setting of the same name (any case) replaces the earlier one.
    pub fn set(&mut self, setting: Setting) {
        let key = setting.name.to_ascii_lowercase();
        match self.setting_index.get(&key) {
            Some(&i) => {
                // Keep the first spelling of the name so the dump stays recognisable.
                let name = std::mem::take(&mut self.settings[i].name);
                self.settings[i] = Setting { name, ..setting };
            }
            None => {
                self.setting_index.insert(key, self.settings.len());
                self.settings.push(setting);
            }
        }
    }

    /// The child scope `name instance`, created if this is its first declaration.
    pub fn child_mut(
        &mut self,
        name: &str,
        instance: Option<Instance>,
        origin: Origin,
    ) -> &mut Scope {
        let key = (
            name.to_ascii_lowercase(),
            instance.as_ref().map(|i| i.name.clone()),
        );
        let idx = match self.scope_index.get(&key) {
            Some(&i) => i,
            None => {
                self.scope_index.insert(key, self.scopes.len());
                self.scopes.push(Scope {
                    name: name.to_owned(),
                    instance,
                    origin: Some(origin),
                    ..Scope::default()
                });
                self.scopes.len() - 1
            }
        };
        &mut self.scopes[idx]
    }

    /// The option `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.setting_index
            .get(&name.to_ascii_lowercase())
            .map(|&i| &self.settings[i])
    }

    /// Child scopes called `name`, in declaration order.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Scope> + 'a {
        self.scopes
            .iter()
            .filter(move |s| s.name.eq_ignore_ascii_case(name))
    }

    /// `Name "instance"` as an operator would write it, for messages.
    pub fn title(&self) -> String {
        match &self.instance {
            Some(i) => format!("{} \"{}\"", self.name, i.name),
            None => self.name.clone(),
        }
    }

    /// Number of options in this scope and below, for "N options ignored" messages.
    pub fn option_count(&self) -> usize {
        self.settings.len() + self.scopes.iter().map(Scope::option_count).sum::<usize>()
    }
}
