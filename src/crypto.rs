//! The one cryptographic provider behind every TLS configuration (listener, AUTH upstream,
//! delivery) and the random numbers taken from it, chosen here so that it is chosen once.
//!
//! aws-lc-rs, chosen by measurement over ring (README, "Dependencies"): its RSA signatures use
//! AVX-512 IFMA where the CPU has it, which makes a full handshake with an RSA certificate
//! 20-40 % cheaper; with ECDSA certificates and resumed handshakes the two cost the same.

use rustls::crypto::CryptoProvider;
use rustls::server::ProducesTickets;
use std::sync::Arc;

/// The provider, with all its cipher suites and key exchange groups.
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Installs [`provider`] process-wide, for the configurations built with rustls' defaults.
pub fn install() {
    let _ = CryptoProvider::install_default(provider());
}

/// Stateless TLS session tickets, sealed under a key of this process that is replaced every
/// six hours (the previous one still opens tickets for another six).
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}
