//! A latency histogram counted with atomics only. prometheus-client's own `Histogram` takes a
//! mutex on every observation; this one adds to one bucket and to the sum, each a single
//! `fetch_add`, so serving threads never wait on one another to record a latency.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets for a round trip to an SMTP server (connect, greeting, EHLO, STARTTLS, AUTH): from
/// a pooled connection on the same host to the longest `timeout` worth waiting for.
pub const UPSTREAM_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets for one database query: sub-millisecond for SQLite, seconds for a struggling server.
pub const LOOKUP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Durations in seconds, bucketed by fixed upper bounds. Clones share the counts.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Upper bounds in seconds, for the exposition.
    bounds: &'static [f64],
    /// The same bounds in nanoseconds, so an observation compares integers.
    bounds_ns: Box<[u64]>,
    /// One count per bound, then the `+Inf` bucket; not cumulative (the encoder sums them).
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Arc::new(Inner {
            bounds,
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.0.bounds_ns.partition_point(|&b| b < ns);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Read at one moment per bucket; `count` is their sum, so it always equals the `+Inf`
        // bucket the encoder writes, whatever was observed meanwhile.
        let buckets: Vec<(f64, u64)> = self
            .0
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(1000)); // exactly on a bound: that bucket (le)
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(3));
        let counts: Vec<u64> =
            h.0.counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
        assert_eq!(counts, [1, 1, 1]);
        assert_eq!(h.count(), 3);
        assert_eq!(h.0.sum_ns.load(Ordering::Relaxed), 3_006_000_000);
    }
}
