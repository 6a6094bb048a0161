//! Reading typed values out of configuration values, with errors that point at the value.

use crate::config::ast::{Setting, Value};
use crate::config::{Diagnostic, Origin};
use std::time::Duration;

/// A value and where it was written, so later checks can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

pub type Read<T> = Result<T, Diagnostic>;

/// The scalar text of a setting's value, or an error naming the option.
pub fn scalar<'a>(name: &str, v: &'a Value) -> Read<&'a str> {
    v.as_scalar().ok_or_else(|| {
        Diagnostic::error(
            v.origin,
            format!("`{name}` takes a single value, found {}", v.describe()),
        )
    })
}

/// Every spelling Momentum's `ec_atobool` and config system accept, case-insensitively.
pub fn parse_bool(s: &str) -> Option<bool> {
    const TRUE: [&str; 5] = ["true", "yes", "on", "enabled", "1"];
    const FALSE: [&str; 5] = ["false", "no", "off", "disabled", "0"];
    if TRUE.iter().any(|t| s.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|t| s.eq_ignore_ascii_case(t)) {
        Some(false)
    } else {
        None
    }
}

pub fn boolean(name: &str, v: &Value) -> Read<bool> {
    let s = scalar(name, v)?;
    parse_bool(s).ok_or_else(|| {
        Diagnostic::error(
            v.origin,
            format!(
                "`{name}` takes a boolean (true/false, yes/no, on/off, enabled/disabled, 1/0), found `{s}`"
            ),
        )
    })
}

/// A whole number in `min..=max`.
pub fn integer(name: &str, v: &Value, min: i64, max: i64) -> Read<i64> {
    let s = scalar(name, v)?;
    match s.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => Err(Diagnostic::error(
            v.origin,
            format!("`{name}` must be between {min} and {max}, found {n}"),
        )),
        Err(_) => Err(Diagnostic::error(
            v.origin,
            format!("`{name}` takes a whole number, found `{s}`"),
        )),
    }
}

pub fn unsigned(name: &str, v: &Value, min: u64, max: u64) -> Read<u64> {
    integer(name, v, min as i64, max.min(i64::MAX as u64) as i64).map(|n| n as u64)
}

pub fn seconds(name: &str, v: &Value) -> Read<Duration> {
    unsigned(name, v, 0, 365 * 86_400).map(Duration::from_secs)
}

pub fn string(name: &str, v: &Value) -> Read<String> {
    scalar(name, v).map(str::to_owned)
}

/// A non-empty string.
pub fn text(name: &str, v: &Value) -> Read<String> {
    let s = scalar(name, v)?;
    if s.is_empty() {
        return Err(Diagnostic::error(
            v.origin,
            format!("`{name}` must not be empty"),
        ));
    }
    Ok(s.to_owned())
}

/// The items of a list (a scalar counts as a one-item list), each a scalar.
pub fn scalar_list<'a>(name: &str, v: &'a Value) -> Read<Vec<(&'a str, Origin)>> {
    let items = v.as_list().ok_or_else(|| {
        Diagnostic::error(
            v.origin,
            format!("`{name}` takes a list `( … )`, found {}", v.describe()),
        )
    })?;
    items
        .iter()
        .map(|item| scalar(name, item).map(|s| (s, item.origin)))
        .collect()
}

/// One of a fixed set of words, case-insensitively.
pub fn choice<T: Copy>(name: &str, v: &Value, choices: &[(&str, T)]) -> Read<T> {
    let s = scalar(name, v)?;
    choices
        .iter()
        .find(|(word, _)| s.eq_ignore_ascii_case(word))
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
            Diagnostic::error(
                v.origin,
                format!("`{name}` takes one of {}, found `{s}`", words.join(", ")),
            )
        })
}

/// Reads a setting with `read`, wrapping the result with the value's origin.
pub fn spanned<T>(s: &Setting, read: impl FnOnce(&str, &Value) -> Read<T>) -> Read<Spanned<T>> {
    read(&s.name, &s.value).map(|value| Spanned {
        value,
        origin: s.value.origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_boolean_spelling() {
        for t in ["true", "YES", "On", "enabled", "1"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "No", "OFF", "Disabled", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_bool(""), None);
    }
}
