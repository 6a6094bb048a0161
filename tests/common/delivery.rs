//! The queue's delivery layer on its own, built from a configuration text as the daemon
//! builds it, for the tests that drive it against real next hops.

use smtp_auth_proxy::delivery::Delivery;
use smtp_auth_proxy::dns::Resolver;
use smtp_auth_proxy::model;
use std::sync::Arc;

/// The name delivery gives itself in EHLO.
pub const HOSTNAME: &str = "relay.test";

/// Delivery built from `conf` (global options and Domain scopes) the way the daemon builds it.
pub fn delivery(conf: &str) -> Delivery {
    let loaded = super::load_text(&format!(
        "{conf}\nESMTP_Listener {{ Listen \"127.0.0.1:25\" {{ }} }}\n"
    ));
    assert!(
        !loaded.diagnostics.has_errors(),
        "{:#?}",
        super::messages(&loaded)
    );
    let (config, diags) = model::build(&loaded.root, &loaded.sources);
    assert!(!diags.has_errors(), "{:#?}", diags.0);
    let resolver = Resolver::from_settings(&config.routing.resolver).unwrap();
    Delivery::new(&config.routing, Arc::new(resolver), HOSTNAME).unwrap()
}
