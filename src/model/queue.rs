//! What happens to accepted mail, as Momentum's options say: where the spool is (`Spoolbase`),
//! how often a message is retried and for how long (`Retry_Interval`, `Max_Retry_Interval`,
//! `Max_Retries`, `Message_Expiration`), whether failures are bounced (`Generate_Bounces`),
//! and where the mainlog goes (`ec_logger "ec_logger" { mainlog = … }`). Each but `Spoolbase`
//! and the logger may be set globally and in a `Domain`.

use super::value::{self, Read, Spanned};
use super::{Cx, names::ScopeKind};
use crate::config::ast::Value;
use crate::config::{Diagnostic, Origin, Scope};
use std::path::PathBuf;
use std::time::Duration;

/// This package's spool (Momentum's own default is `/var/spool/ecelerity`).
pub const DEFAULT_SPOOLBASE: &str = "/var/spool/smtp-auth-proxy";
/// Momentum's defaults, from its reference pages.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1200);
pub const DEFAULT_MAX_RETRY_INTERVAL: Duration = Duration::from_secs(43_200);
pub const DEFAULT_MESSAGE_EXPIRATION: Duration = Duration::from_secs(86_400);
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);

/// `Max_Retries`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxRetries {
    /// As many retries as fit in `Message_Expiration` on the retry schedule (Momentum's
    /// default). A manual retry counts, so it can come before the expiration.
    #[default]
    Auto,
    /// Only `Message_Expiration` ends the retries.
    Unlimited,
    /// At most this many retries (and never past `Message_Expiration`).
    Count(u32),
}

/// The queue's settings in one scope; `None` falls back to the enclosing scope (a Domain's to
/// the global one), then to Momentum's default.
#[derive(Clone, Debug, Default)]
pub struct QueueSettings {
    pub retry_interval: Option<Spanned<Duration>>,
    pub max_retry_interval: Option<Spanned<Duration>>,
    pub max_retries: Option<Spanned<MaxRetries>>,
    pub message_expiration: Option<Spanned<Duration>>,
    pub generate_bounces: Option<Spanned<bool>>,
}

/// The queue settings of a scope and its fallback, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retry_interval: Duration,
    pub max_retry_interval: Duration,
    pub max_retries: MaxRetries,
    pub message_expiration: Duration,
    pub generate_bounces: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        QueueSettings::default().resolve(None)
    }
}

impl QueueSettings {
    /// These settings over `outer` (the global ones, for a Domain's).
    pub fn resolve(&self, outer: Option<&QueueSettings>) -> RetryPolicy {
        macro_rules! pick {
            ($f:ident, $default:expr) => {
                self.$f
                    .as_ref()
                    .or(outer.and_then(|o| o.$f.as_ref()))
                    .map_or($default, |s| s.value)
            };
        }
        RetryPolicy {
            retry_interval: pick!(retry_interval, DEFAULT_RETRY_INTERVAL),
            max_retry_interval: pick!(max_retry_interval, DEFAULT_MAX_RETRY_INTERVAL),
            max_retries: pick!(max_retries, MaxRetries::Auto),
            message_expiration: pick!(message_expiration, DEFAULT_MESSAGE_EXPIRATION),
            generate_bounces: pick!(generate_bounces, true),
        }
    }

    /// Reads one of the queue options; `false` when `name` is not one.
    pub(crate) fn read_setting(&mut self, cx: &mut Cx, s: &crate::config::ast::Setting) -> bool {
        match s.name.to_ascii_lowercase().as_str() {
            "retry_interval" => self.retry_interval = cx.read(s, positive_seconds),
            "max_retry_interval" => self.max_retry_interval = cx.read(s, positive_seconds),
            "max_retries" => self.max_retries = cx.read(s, read_max_retries),
            "message_expiration" => self.message_expiration = cx.read(s, positive_seconds),
            "generate_bounces" => self.generate_bounces = cx.read(s, value::boolean),
            _ => return false,
        }
        true
    }
}

fn positive_seconds(name: &str, v: &Value) -> Read<Duration> {
    let d = value::seconds(name, v)?;
    if d.is_zero() {
        return Err(Diagnostic::error(
            v.origin,
            format!("`{name}` must be more than 0 seconds"),
        ));
    }
    Ok(d)
}

fn read_max_retries(name: &str, v: &Value) -> Read<MaxRetries> {
    let s = value::scalar(name, v)?;
    if s.eq_ignore_ascii_case("auto") {
        return Ok(MaxRetries::Auto);
    }
    if s.eq_ignore_ascii_case("none") {
        return Ok(MaxRetries::Unlimited);
    }
    value::unsigned(name, v, 0, u32::MAX.into())
        .map(|n| MaxRetries::Count(n as u32))
        .map_err(|_| {
            Diagnostic::error(
                v.origin,
                format!("`{name}` takes `auto`, `none` or a number of retries, found `{s}`"),
            )
        })
}

/// `ec_logger "ec_logger" { mainlog = … heartbeat = … }`: Momentum's logger module; only the
/// mainlog is written here.
#[derive(Clone, Debug, Default)]
pub struct EcLogger {
    pub mainlog: Option<Spanned<PathBuf>>,
    pub heartbeat: Option<Spanned<Duration>>,
    pub origin: Option<Origin>,
}

pub(super) fn read_ec_logger(cx: &mut Cx, scope: &Scope) -> EcLogger {
    let mut out = EcLogger {
        origin: scope.origin,
        ..EcLogger::default()
    };
    for s in &scope.settings {
        match s.name.to_ascii_lowercase().as_str() {
            "mainlog" => out.mainlog = cx.read_path(s),
            "heartbeat" => out.heartbeat = cx.read(s, value::seconds),
            _ => cx.unknown_option(ScopeKind::EcLogger, s),
        }
    }
    for child in &scope.scopes {
        cx.unknown_scope(ScopeKind::EcLogger, child);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_falls_back_to_the_global_settings_then_to_momentums_defaults() {
        let origin = Origin {
            file: crate::config::FileId(0),
            offset: 0,
        };
        let global = QueueSettings {
            retry_interval: Some(Spanned {
                value: Duration::from_secs(60),
                origin,
            }),
            ..QueueSettings::default()
        };
        let domain = QueueSettings {
            max_retries: Some(Spanned {
                value: MaxRetries::Count(3),
                origin,
            }),
            ..QueueSettings::default()
        };
        let p = domain.resolve(Some(&global));
        assert_eq!(p.retry_interval, Duration::from_secs(60));
        assert_eq!(p.max_retries, MaxRetries::Count(3));
        assert_eq!(p.message_expiration, DEFAULT_MESSAGE_EXPIRATION);
        assert!(p.generate_bounces);
    }
}
