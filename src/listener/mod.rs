//! The ESMTP listener. The session itself (one file per protocol phase) lands with the listener
//! work; what is here already are the pure decoders it needs, with no I/O.

pub mod proxy_protocol;
pub mod xtext;
