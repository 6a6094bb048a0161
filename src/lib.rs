//! smtp-auth-proxy: a Momentum-compatible edge SMTP appliance.
//!
//! Layers, with dependencies pointing one way:
//! [`config`] (the `ecelerity.conf` language) -> [`model`] (typed, validated settings) ->
//! [`listener`] (the ESMTP server) -> [`auth`] back ends (the proxy engine, `auth::proxy`, among
//! them), all speaking SMTP outward through [`client`]; [`daemon`] builds and wires them.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod datasource;
pub mod date;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod header;
pub mod limits;
pub mod listener;
pub mod log;
pub mod metrics;
pub mod model;
pub mod net;
pub mod privileges;
pub mod reply;
pub mod syslog;
pub mod text;
