//! The configuration in force: new sessions take the current [`Runtime`]; a session started
//! under an older one finds out at its next MAIL or RSET and closes with `Reconfig_Message`,
//! as Momentum's sessions do after a reload.

use super::Runtime;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

static CURRENT: OnceLock<RwLock<Arc<Runtime>>> = OnceLock::new();
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes `rt` the configuration in force (the first one, or a reloaded one).
pub fn install(rt: Arc<Runtime>) {
    let generation = rt.generation;
    match CURRENT.get() {
        Some(lock) => *lock.write().unwrap_or_else(|p| p.into_inner()) = rt,
        None => {
            let _ = CURRENT.set(RwLock::new(rt));
        }
    }
    GENERATION.store(generation, Ordering::SeqCst);
}

/// The configuration new sessions start under.
pub fn current() -> Option<Arc<Runtime>> {
    CURRENT
        .get()
        .map(|lock| lock.read().unwrap_or_else(|p| p.into_inner()).clone())
}

/// The generation of the configuration in force.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}
