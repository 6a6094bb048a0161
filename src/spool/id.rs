//! Message ids: 16 upper-case hex digits, the milliseconds since 1970 in the top 42 bits and a
//! counter in the low 22. Ids sort by arrival as numbers and as text, and stay unique across
//! restarts: a restart takes more than a millisecond, and the generator is also started past
//! the largest id found in the spool, in case the clock was stepped back.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const COUNTER_BITS: u32 = 22;

/// A message's id, also its file name in `Spoolbase/queue/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(u64);

impl MessageId {
    /// The id whose number is `n` (ids read back from elsewhere).
    pub fn from_u64(n: u64) -> MessageId {
        MessageId(n)
    }

    /// The id as a number (it sorts as the text does).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// When the id was made (to the millisecond).
    pub fn time(self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_millis(self.0 >> COUNTER_BITS)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

/// The text is not 16 hexadecimal digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadMessageId;

impl fmt::Display for BadMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message id is 16 hexadecimal digits")
    }
}

impl std::error::Error for BadMessageId {}

impl FromStr for MessageId {
    type Err = BadMessageId;

    /// Reads 16 hex digits; lower case is accepted, since operators type ids.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadMessageId);
        }
        u64::from_str_radix(s, 16)
            .map(MessageId)
            .map_err(|_| BadMessageId)
    }
}

/// Makes ids for one spool; shared by every serving thread.
#[derive(Debug, Default)]
pub(super) struct IdGenerator {
    last: AtomicU64,
}

impl IdGenerator {
    /// The next id is greater than `floor` (the largest id already in the spool).
    pub fn starting_after(floor: Option<MessageId>) -> IdGenerator {
        IdGenerator {
            last: AtomicU64::new(floor.map_or(0, |m| m.0)),
        }
    }

    pub fn next(&self) -> MessageId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let base = now << COUNTER_BITS;
        // More than 4 million ids in one millisecond borrow from the next: still unique and
        // increasing, and the clock catches up.
        let prev = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(base.max(last + 1))
            })
            .expect("the closure always answers");
        MessageId(base.max(prev + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_upper_case_hex_digits_and_read_back() {
        let g = IdGenerator::default();
        let id = g.next();
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        );
        assert_eq!(text.parse::<MessageId>(), Ok(id));
        assert_eq!(text.to_lowercase().parse::<MessageId>(), Ok(id));
        assert_eq!("12345".parse::<MessageId>(), Err(BadMessageId));
        assert_eq!("+123456789ABCDEF".parse::<MessageId>(), Err(BadMessageId));
    }

    #[test]
    fn ids_increase_as_numbers_and_as_text_and_carry_the_time() {
        let g = IdGenerator::default();
        let ids: Vec<MessageId> = (0..10_000).map(|_| g.next()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_string() < w[1].to_string());
        }
        let age = SystemTime::now().duration_since(ids[0].time()).unwrap();
        assert!(age.as_secs() < 60);
    }

    #[test]
    fn a_generator_started_after_a_future_id_stays_above_it() {
        let future = MessageId(u64::MAX >> 1);
        let g = IdGenerator::starting_after(Some(future));
        assert!(g.next() > future);
    }
}
