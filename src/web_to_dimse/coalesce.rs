//! Identical work done once: requests for the same key while it is being
//! fetched share that one fetch (a study list refreshed by many viewers is
//! one C-FIND), and a result may be kept for a while after.
//!
//! Failures are shared by the requests that waited for them but never kept.

use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Fetch<V, E> = Shared<BoxFuture<'static, Result<Arc<V>, E>>>;
/// The last generation handed out, and the entries by key.
type Entries<K, V, E> = Arc<Mutex<(u64, HashMap<K, Entry<V, E>>)>>;

struct Entry<V, E> {
    fetch: Fetch<V, E>,
    /// None while in flight; then until when the result may be reused.
    kept_until: Option<Instant>,
    generation: u64,
}

pub struct Coalesce<K, V, E> {
    keep: Duration,
    /// Results kept at most (in-flight fetches are bounded by their peer).
    max_kept: usize,
    entries: Entries<K, V, E>,
}

impl<K, V, E> Coalesce<K, V, E>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    pub fn new(keep: Duration, max_kept: usize) -> Self {
        Coalesce {
            keep,
            max_kept,
            entries: Arc::new(Mutex::new((0, HashMap::new()))),
        }
    }

    /// The result for `key`: kept, being fetched, or fetched now by `fetch`.
    pub async fn get<F>(&self, key: K, fetch: F) -> Result<Arc<V>, E>
    where
        F: std::future::Future<Output = Result<V, E>> + Send + 'static,
    {
        let shared = {
            let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let (generation, map) = &mut *guard;
            let now = Instant::now();
            map.retain(|_, e| e.kept_until.is_none_or(|t| t > now));
            match map.get(&key) {
                Some(e) => e.fetch.clone(),
                None => {
                    *generation += 1;
                    let fetch = self.finishing(key.clone(), *generation, fetch);
                    map.insert(
                        key,
                        Entry {
                            fetch: fetch.clone(),
                            kept_until: None,
                            generation: *generation,
                        },
                    );
                    fetch
                }
            }
        };
        shared.await
    }

    /// `fetch`, which on its end either keeps its entry for `keep` or
    /// removes it (a failure, or nothing to keep).
    fn finishing<F>(&self, key: K, generation: u64, fetch: F) -> Fetch<V, E>
    where
        F: std::future::Future<Output = Result<V, E>> + Send + 'static,
    {
        let entries = self.entries.clone();
        let (keep, max_kept) = (self.keep, self.max_kept);
        async move {
            let result = fetch.await.map(Arc::new);
            let mut guard = entries.lock().unwrap_or_else(|p| p.into_inner());
            let map = &mut guard.1;
            let kept = map.values().filter(|e| e.kept_until.is_some()).count();
            let ours = map.get(&key).is_some_and(|e| e.generation == generation);
            if ours {
                if result.is_ok() && !keep.is_zero() && kept < max_kept {
                    if let Some(e) = map.get_mut(&key) {
                        e.kept_until = Some(Instant::now() + keep);
                    }
                } else {
                    map.remove(&key);
                }
            }
            result
        }
        .boxed()
        .shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn slow(calls: Arc<AtomicUsize>, fail: bool) -> Result<usize, String> {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if fail {
            Err("no".into())
        } else {
            Ok(n)
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_fetch() {
        let c = Coalesce::<&str, usize, String>::new(Duration::ZERO, 8);
        let calls = Arc::new(AtomicUsize::new(0));
        let all =
            futures::future::join_all((0..10).map(|_| c.get("q", slow(calls.clone(), false))))
                .await;
        assert!(all.iter().all(|r| **r.as_ref().unwrap() == 1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Not kept: the next request fetches again.
        assert_eq!(*c.get("q", slow(calls.clone(), false)).await.unwrap(), 2);
        // Other keys are other fetches.
        assert_eq!(*c.get("r", slow(calls.clone(), false)).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn results_are_kept_failures_are_not() {
        let c = Coalesce::<&str, usize, String>::new(Duration::from_secs(60), 8);
        let calls = Arc::new(AtomicUsize::new(0));
        assert!(c.get("q", slow(calls.clone(), true)).await.is_err());
        assert_eq!(*c.get("q", slow(calls.clone(), false)).await.unwrap(), 2);
        assert_eq!(*c.get("q", slow(calls.clone(), false)).await.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
