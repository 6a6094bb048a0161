//! smtp-auth-proxy: a Momentum-compatible edge SMTP appliance.
//!
//! Layers, with dependencies pointing one way:
//! [`config`] (the `ecelerity.conf` language) -> [`model`] (typed, validated settings) ->
//! [`listener`] -> proxy engine / datasource.

pub mod cli;
pub mod config;
pub mod listener;
pub mod model;
