//! The limits' buckets in memory: webchat-local's, where one process is every function instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::BoxFuture;

use super::lock;
use crate::domain::limits::{Rate, Taken, take};
use crate::ports::{LimitStore, StoreError};

/// Buckets by key. A bucket whose `tat` has passed is full, the same as none: such entries are
/// dropped once the map holds `sweep_at` of them, so idle connections' buckets do not pile up.
#[derive(Debug)]
pub struct MemoryLimits {
    buckets: Mutex<HashMap<String, i64>>,
    sweep_at: AtomicUsize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            buckets: Mutex::new(HashMap::new()),
            sweep_at: AtomicUsize::new(10_000),
        }
    }
}

impl MemoryLimits {
    /// How many buckets are kept (tests).
    pub fn len(&self) -> usize {
        lock(&self.buckets).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LimitStore for MemoryLimits {
    fn take<'a>(
        &'a self,
        key: &'a str,
        cost: u64,
        rate: Rate,
        now_us: i64,
    ) -> BoxFuture<'a, Result<Taken, StoreError>> {
        let mut buckets = lock(&self.buckets);
        let taken = take(buckets.get(key).copied(), now_us, cost, rate);
        if let Taken::Allowed { tat } = taken {
            if buckets.len() >= self.sweep_at.load(Ordering::Relaxed) {
                buckets.retain(|_, tat| *tat > now_us);
                // many live buckets: sweep again only once as many more were added (no O(n)
                // sweep on every take)
                self.sweep_at
                    .fetch_max(buckets.len() * 2, Ordering::Relaxed);
            }
            buckets.insert(key.to_owned(), tat);
        }
        Box::pin(std::future::ready(Ok(taken)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buckets_are_kept_by_key_and_full_ones_are_swept() {
        let limits = MemoryLimits {
            sweep_at: AtomicUsize::new(3),
            ..MemoryLimits::default()
        };
        let rate = Rate::per_second(1, 2);
        for _ in 0..2 {
            assert!(matches!(
                limits.take("a", 1, rate, 0).await.unwrap(),
                Taken::Allowed { .. }
            ));
        }
        assert!(matches!(
            limits.take("a", 1, rate, 0).await.unwrap(),
            Taken::Refused { .. }
        ));
        // another key has its own bucket
        assert!(matches!(
            limits.take("b", 2, rate, 0).await.unwrap(),
            Taken::Allowed { .. }
        ));
        limits.take("c", 1, rate, 0).await.unwrap();
        assert_eq!(limits.len(), 3);
        // ten seconds on, every bucket is full again: the next insert sweeps them
        limits.take("d", 1, rate, 10_000_000).await.unwrap();
        assert_eq!(limits.len(), 1);
    }
}
