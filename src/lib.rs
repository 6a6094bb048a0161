//! smtp-auth-proxy: a Momentum-compatible edge SMTP appliance.
//!
//! Layers, with dependencies pointing one way:
//! [`config`] (the `ecelerity.conf` language) -> [`model`] (typed, validated settings) ->
//! [`listener`] (the ESMTP server) -> [`auth`] back ends (the proxy engine, `auth::proxy`, among
//! them), all speaking SMTP outward through [`client`]. Accepted mail is stored in the
//! [`spool`] before `250`; the [`queue`] delivers it through [`delivery`]. [`daemon`] builds
//! and wires them.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod datasource;
pub mod date;
pub mod delivery;
pub mod dns;
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
pub mod queue;
pub mod reply;
pub mod spool;
pub mod syslog;
pub mod text;
pub mod xtext;
