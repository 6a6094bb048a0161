//! The queue: what happens to a message after `250`.

pub mod dsn;
pub mod mainlog;
pub mod schedule;
