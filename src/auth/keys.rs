//! The issuer's signing keys, kept in memory across connects: API Gateway caches nothing for a
//! WebSocket authorizer, so every `$connect` needs them at hand.
//!
//! Fetched on first use and kept. A token whose `kid` is unknown makes one refetch (the issuer
//! rotated its keys), one fetch at a time and at most once a minute after the previous refetch
//! (the first load does not count, so a rotation right after it is picked up at once), so a
//! stream of tokens with made-up `kid`s cannot turn into a stream of requests to the issuer. A
//! failed fetch keeps the keys already known, and also waits a minute before the next.

use std::collections::HashMap;
use std::future::Future;
use std::sync::RwLock;
use std::time::Duration;

use tokio::time::Instant;

/// The shortest time between two fetches of the keys.
pub const MIN_REFETCH: Duration = Duration::from_secs(60);

/// Where the keys come from (the issuer's JWKS, through its OpenID discovery document).
pub trait FetchKeys: Send + Sync {
    type Key: Clone + Send + Sync;

    /// Every key the issuer publishes now, by `kid`.
    fn fetch(&self) -> impl Future<Output = Result<HashMap<String, Self::Key>, String>> + Send;
}

/// Why no key was found for a `kid`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no key {kid:?} among the issuer's keys (fetched {ago:?} ago; next fetch allowed in {wait:?})"
    )]
    Unknown {
        kid: String,
        ago: Duration,
        wait: Duration,
    },
    #[error("the issuer's keys could not be fetched: {0}")]
    Fetch(String),
}

/// The keys, and when they were last fetched.
pub struct KeyCache<F: FetchKeys> {
    source: F,
    keys: RwLock<HashMap<String, F::Key>>,
    /// When the keys were last refetched (or a fetch failed): the next waits a minute from it.
    /// Held while a fetch is in flight, so one at a time.
    fetched_at: tokio::sync::Mutex<Option<Instant>>,
    /// Whether a fetch has succeeded yet.
    loaded: std::sync::atomic::AtomicBool,
}

impl<F: FetchKeys> KeyCache<F> {
    pub fn new(source: F) -> Self {
        KeyCache {
            source,
            keys: RwLock::new(HashMap::new()),
            fetched_at: tokio::sync::Mutex::new(None),
            loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The key `kid` names: from memory, or after a fetch when it is unknown and the last fetch
    /// was long enough ago.
    pub async fn key(&self, kid: &str) -> Result<F::Key, KeyError> {
        if let Some(key) = self.known(kid) {
            return Ok(key);
        }
        let mut fetched_at = self.fetched_at.lock().await;
        // a fetch that finished while this one waited may have brought it
        if let Some(key) = self.known(kid) {
            return Ok(key);
        }
        if let Some(last) = *fetched_at {
            let ago = last.elapsed();
            if ago < MIN_REFETCH {
                return Err(KeyError::Unknown {
                    kid: kid.to_owned(),
                    ago,
                    wait: MIN_REFETCH - ago,
                });
            }
        }
        let fetched = self.source.fetch().await;
        let first_load = !self.loaded.load(std::sync::atomic::Ordering::Acquire);
        if !(first_load && fetched.is_ok()) {
            *fetched_at = Some(Instant::now());
        }
        match fetched {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
                self.loaded
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            Err(error) => {
                tracing::warn!(%error, "could not fetch the issuer's keys; keeping the ones known");
                return self.known(kid).ok_or(KeyError::Fetch(error));
            }
        }
        self.known(kid).ok_or_else(|| KeyError::Unknown {
            kid: kid.to_owned(),
            ago: Duration::ZERO,
            wait: MIN_REFETCH,
        })
    }

    fn known(&self, kid: &str) -> Option<F::Key> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// An issuer whose published keys the test sets; it counts fetches, and can be down.
    struct Issuer {
        keys: Mutex<Result<Vec<&'static str>, String>>,
        fetches: AtomicUsize,
        delay: Duration,
    }

    impl Issuer {
        fn publishing(kids: &[&'static str]) -> Self {
            Issuer {
                keys: Mutex::new(Ok(kids.to_vec())),
                fetches: AtomicUsize::new(0),
                delay: Duration::ZERO,
            }
        }

        fn set(&self, keys: Result<Vec<&'static str>, String>) {
            *self.keys.lock().unwrap() = keys;
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    impl FetchKeys for Arc<Issuer> {
        type Key = String;

        async fn fetch(&self) -> Result<HashMap<String, String>, String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let keys = self.keys.lock().unwrap().clone()?;
            Ok(keys
                .into_iter()
                .map(|kid| (kid.to_owned(), format!("key {kid}")))
                .collect())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_fetched_once_and_kept() {
        let issuer = Arc::new(Issuer::publishing(&["a", "b"]));
        let cache = KeyCache::new(issuer.clone());
        assert_eq!(cache.key("a").await.unwrap(), "key a");
        assert_eq!(cache.key("b").await.unwrap(), "key b");
        assert_eq!(cache.key("a").await.unwrap(), "key a");
        assert_eq!(issuer.fetches(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_kid_refetches_at_most_once_a_minute() {
        let issuer = Arc::new(Issuer::publishing(&["a"]));
        let cache = KeyCache::new(issuer.clone());
        cache.key("a").await.unwrap();
        // made-up kids, one after another: one refetch for the first, none for the others
        tokio::time::advance(Duration::from_secs(10)).await;
        for kid in ["x", "y", "z"] {
            assert!(matches!(
                cache.key(kid).await,
                Err(KeyError::Unknown { .. })
            ));
        }
        assert_eq!(issuer.fetches(), 2);
        // the issuer rotates: a minute after that refetch, an unknown kid fetches the new keys
        issuer.set(Ok(vec!["b"]));
        assert!(matches!(
            cache.key("b").await,
            Err(KeyError::Unknown { .. })
        ));
        tokio::time::advance(MIN_REFETCH).await;
        assert_eq!(cache.key("b").await.unwrap(), "key b");
        assert_eq!(issuer.fetches(), 3);
        assert!(
            matches!(cache.key("a").await, Err(KeyError::Unknown { .. })),
            "a key the issuer no longer publishes is gone"
        );
        assert_eq!(
            issuer.fetches(),
            3,
            "and asking for it again did not refetch"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotation_right_after_the_first_load_is_picked_up_at_once() {
        let issuer = Arc::new(Issuer::publishing(&["a"]));
        let cache = KeyCache::new(issuer.clone());
        cache.key("a").await.unwrap();
        issuer.set(Ok(vec!["a", "b"]));
        assert_eq!(cache.key("b").await.unwrap(), "key b");
        assert_eq!(cache.key("a").await.unwrap(), "key a");
        assert!(matches!(
            cache.key("made-up").await,
            Err(KeyError::Unknown { .. })
        ));
        assert_eq!(issuer.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_keeps_the_keys_known() {
        let issuer = Arc::new(Issuer::publishing(&["a"]));
        let cache = KeyCache::new(issuer.clone());
        cache.key("a").await.unwrap();
        issuer.set(Err("connection refused".into()));
        tokio::time::advance(MIN_REFETCH).await;
        assert_eq!(
            cache.key("new").await,
            Err(KeyError::Fetch("connection refused".into()))
        );
        assert_eq!(cache.key("a").await.unwrap(), "key a", "still served");
        assert_eq!(issuer.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_issuer_down_at_the_first_connect_is_asked_again_a_minute_later() {
        let issuer = Arc::new(Issuer::publishing(&[]));
        issuer.set(Err("timed out".into()));
        let cache = KeyCache::new(issuer.clone());
        assert!(matches!(cache.key("a").await, Err(KeyError::Fetch(_))));
        assert!(matches!(
            cache.key("a").await,
            Err(KeyError::Unknown { .. })
        ));
        issuer.set(Ok(vec!["a"]));
        tokio::time::advance(MIN_REFETCH).await;
        assert_eq!(cache.key("a").await.unwrap(), "key a");
        assert_eq!(issuer.fetches(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn connects_that_arrive_together_share_one_fetch() {
        let issuer = Arc::new(Issuer {
            delay: Duration::from_millis(200),
            ..Issuer::publishing(&["a"])
        });
        let cache = Arc::new(KeyCache::new(issuer.clone()));
        let connects: Vec<_> = (0..10)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.key("a").await })
            })
            .collect();
        for connect in connects {
            assert_eq!(connect.await.unwrap().unwrap(), "key a");
        }
        assert_eq!(issuer.fetches(), 1);
    }
}
