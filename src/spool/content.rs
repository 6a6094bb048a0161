//! Message content held in memory: a small message's bytes go from the session to delivery
//! without being read back from disk, under one cap on the bytes held this way.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A message's content in memory (CRLF line ends, not dot-stuffed). Cheap to clone; the
/// memory is given back to the spool's budget when the last clone goes.
#[derive(Clone)]
pub struct Content(Arc<Held>);

struct Held {
    /// The whole file image; the content is `image[start..end]`.
    image: Vec<u8>,
    start: usize,
    end: usize,
    budget: Option<Arc<Budget>>,
}

impl Content {
    /// `image[start..end]`, charged to `budget` (already taken) if given.
    pub(super) fn new(
        image: Vec<u8>,
        start: usize,
        end: usize,
        budget: Option<Arc<Budget>>,
    ) -> Content {
        Content(Arc::new(Held {
            image,
            start,
            end,
            budget,
        }))
    }
}

/// Content not counted against any budget: a message made here (a bounce) or in a test.
impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Content {
        let end = bytes.len();
        Content::new(bytes, 0, end, None)
    }
}

impl From<&[u8]> for Content {
    fn from(bytes: &[u8]) -> Content {
        bytes.to_vec().into()
    }
}

impl Deref for Content {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0.image[self.0.start..self.0.end]
    }
}

impl AsRef<[u8]> for Content {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Content({} bytes)", self.len())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give_back(self.image.len());
        }
    }
}

/// The bytes of content held in memory across all messages, and their cap.
#[derive(Debug)]
pub(super) struct Budget {
    used: AtomicUsize,
    cap: usize,
}

impl Budget {
    pub fn new(cap: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            cap,
        }
    }

    /// Takes `n` bytes if they fit under the cap.
    pub fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= self.cap).then_some(used + n)
            })
            .is_ok()
    }

    pub fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}
