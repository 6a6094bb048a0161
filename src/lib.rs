//! smtp-auth-proxy: a Momentum-compatible edge SMTP appliance.
//!
//! Layers, with dependencies pointing one way:
//! [`config`] (the `ecelerity.conf` language) -> [`model`] (typed, validated settings) ->
//! [`listener`] (the ESMTP server) -> [`auth`] back ends -> [`proxy`] engine, all speaking SMTP
//! outward through [`client`]. Accepted mail is stored in the [`spool`] before `250`.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod datasource;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod listener;
pub mod log;
pub mod model;
pub mod net;
pub mod privileges;
pub mod proxy;
pub mod reply;
pub mod spool;
pub mod syslog;
