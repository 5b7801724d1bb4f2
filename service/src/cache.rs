//! A byte-bounded in-memory cache with S3-FIFO eviction and single-flight loads.
//!
//! Generic over key and value so both modes (and originals and variants) share it.
//! S3-FIFO: new entries enter a small FIFO (10% of the bytes); entries read again
//! while there move to the main FIFO, others are evicted and remembered in a ghost
//! FIFO (keys only) so a quick re-insert goes straight to main. Main is a FIFO with
//! a small frequency counter (second chance). A one-off scan therefore cannot flush
//! the hot set. Concurrent misses for one key run the loader once
//! ([`Cache::get_or_load`]). It must not do I/O itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

/// A key with a label for metrics (`original`, `variant`).
pub trait CacheKey: Hash + Eq + Clone + Send + Sync + 'static {
    fn kind(&self) -> &'static str;
}

/// A value with a size in bytes.
pub trait Weigh: Clone + Send + Sync + 'static {
    fn weight(&self) -> usize;
}

/// Observes cache events (implemented by the metrics module).
pub trait CacheObserver: Send + Sync + 'static {
    fn hit(&self, kind: &'static str);
    fn miss(&self, kind: &'static str);
    fn evicted(&self, kind: &'static str);
    /// Current bytes and entries of one kind.
    fn level(&self, kind: &'static str, bytes: usize, entries: usize);
}

/// Observer that records nothing.
pub struct NoObserver;
impl CacheObserver for NoObserver {
    fn hit(&self, _: &'static str) {}
    fn miss(&self, _: &'static str) {}
    fn evicted(&self, _: &'static str) {}
    fn level(&self, _: &'static str, _: usize, _: usize) {}
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

struct Entry<V> {
    value: V,
    weight: usize,
    freq: u8,
    queue: Queue,
}

struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    small: VecDeque<K>,
    main: VecDeque<K>,
    ghost: VecDeque<K>,
    ghost_set: HashSet<K>,
    small_bytes: usize,
    total_bytes: usize,
    per_kind: HashMap<&'static str, (usize, usize)>,
}

type Flight<V, E> = Arc<OnceCell<Result<V, E>>>;

/// The cache. Cheap to share behind an `Arc`.
pub struct Cache<K: CacheKey, V: Weigh, E: Clone + Send + Sync + 'static = ()> {
    capacity: usize,
    // A std mutex: critical sections are short and never held across `.await`.
    inner: Mutex<Inner<K, V>>,
    inflight: Mutex<HashMap<K, Flight<V, E>>>,
    observer: Box<dyn CacheObserver>,
}

impl<K: CacheKey, V: Weigh, E: Clone + Send + Sync + 'static> Cache<K, V, E> {
    /// A cache holding at most `capacity` bytes of values (0 disables caching but
    /// keeps single-flight).
    pub fn new(capacity: usize, observer: Box<dyn CacheObserver>) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                small: VecDeque::new(),
                main: VecDeque::new(),
                ghost: VecDeque::new(),
                ghost_set: HashSet::new(),
                small_bytes: 0,
                total_bytes: 0,
                per_kind: HashMap::new(),
            }),
            inflight: Mutex::new(HashMap::new()),
            observer,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.lock().total_bytes
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks a key up, counting a hit or a miss.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.lock();
        match inner.map.get_mut(key) {
            Some(e) => {
                e.freq = (e.freq + 1).min(3);
                let v = e.value.clone();
                drop(inner);
                self.observer.hit(key.kind());
                Some(v)
            }
            None => {
                drop(inner);
                self.observer.miss(key.kind());
                None
            }
        }
    }

    /// Inserts (or replaces) a value; values larger than the small queue's share
    /// of a tiny cache are still accepted if they fit the whole capacity.
    pub fn insert(&self, key: K, value: V) {
        let weight = value.weight();
        if weight > self.capacity {
            return;
        }
        let mut inner = self.lock();
        let mut touched: Vec<&'static str> = vec![key.kind()];
        if inner.map.contains_key(&key) {
            Self::remove_locked(&mut inner, &key);
        }
        let queue = if inner.ghost_set.remove(&key) {
            inner.ghost.retain(|k| k != &key);
            Queue::Main
        } else {
            Queue::Small
        };
        match queue {
            Queue::Small => {
                inner.small.push_back(key.clone());
                inner.small_bytes += weight;
            }
            Queue::Main => inner.main.push_back(key.clone()),
        }
        inner.total_bytes += weight;
        let pk = inner.per_kind.entry(key.kind()).or_default();
        pk.0 += weight;
        pk.1 += 1;
        inner.map.insert(
            key,
            Entry {
                value,
                weight,
                freq: 0,
                queue,
            },
        );
        while inner.total_bytes > self.capacity {
            match self.evict_one(&mut inner) {
                Some(kind) => {
                    self.observer.evicted(kind);
                    touched.push(kind);
                }
                None => break,
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for kind in touched {
            let (b, n) = inner.per_kind.get(kind).copied().unwrap_or((0, 0));
            self.observer.level(kind, b, n);
        }
    }

    /// Evicts one entry; returns its kind.
    fn evict_one(&self, inner: &mut Inner<K, V>) -> Option<&'static str> {
        loop {
            let from_small = inner.small_bytes > self.capacity / 10 || inner.main.is_empty();
            if from_small {
                let key = inner.small.pop_front()?;
                let Some(entry) = inner.map.get_mut(&key) else {
                    continue;
                };
                if entry.queue != Queue::Small {
                    continue;
                }
                let w = entry.weight;
                if entry.freq > 0 {
                    // Read again while in small: promote.
                    entry.freq = 0;
                    entry.queue = Queue::Main;
                    inner.small_bytes -= w;
                    inner.main.push_back(key);
                    continue;
                }
                inner.small_bytes -= w;
                let kind = key.kind();
                Self::drop_entry(inner, &key);
                let ghost_cap = inner.map.len().max(16);
                inner.ghost_set.insert(key.clone());
                inner.ghost.push_back(key);
                while inner.ghost.len() > ghost_cap {
                    if let Some(old) = inner.ghost.pop_front() {
                        inner.ghost_set.remove(&old);
                    }
                }
                return Some(kind);
            }
            let key = inner.main.pop_front()?;
            let Some(entry) = inner.map.get_mut(&key) else {
                continue;
            };
            if entry.queue != Queue::Main {
                continue;
            }
            if entry.freq > 0 {
                entry.freq -= 1;
                inner.main.push_back(key);
                continue;
            }
            let kind = key.kind();
            Self::drop_entry(inner, &key);
            return Some(kind);
        }
    }

    fn drop_entry(inner: &mut Inner<K, V>, key: &K) {
        if let Some(e) = inner.map.remove(key) {
            inner.total_bytes -= e.weight;
            let pk = inner.per_kind.entry(key.kind()).or_default();
            pk.0 -= e.weight;
            pk.1 -= 1;
        }
    }

    fn remove_locked(inner: &mut Inner<K, V>, key: &K) {
        if let Some(e) = inner.map.get(key) {
            if e.queue == Queue::Small {
                inner.small_bytes -= e.weight;
            }
            // The key stays in its queue; eviction skips keys not in the map.
            Self::drop_entry(inner, key);
        }
    }

    /// Removes every entry whose key matches (e.g. all variants of a deleted image).
    pub fn remove_where(&self, pred: impl Fn(&K) -> bool) {
        let mut inner = self.lock();
        let keys: Vec<K> = inner.map.keys().filter(|k| pred(k)).cloned().collect();
        let mut touched = Vec::new();
        for k in &keys {
            Self::remove_locked(&mut inner, k);
            touched.push(k.kind());
        }
        inner.small.retain(|k| !pred(k));
        inner.main.retain(|k| !pred(k));
        touched.sort_unstable();
        touched.dedup();
        for kind in touched {
            let (b, n) = inner.per_kind.get(kind).copied().unwrap_or((0, 0));
            self.observer.level(kind, b, n);
        }
    }

    /// Returns the cached value or runs `load` once for all concurrent callers
    /// asking for the same key, caching a success.
    ///
    /// # Errors
    /// The loader's error, shared with every waiting caller.
    pub async fn get_or_load<F, Fut>(&self, key: K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        let cell = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(
                inflight
                    .entry(key.clone())
                    .or_insert_with(|| Arc::new(OnceCell::new())),
            )
        };
        let result = cell
            .get_or_init(|| async {
                // Another flight may have finished between our miss and now.
                if let Some(v) = self.peek(&key) {
                    return Ok(v);
                }
                let r = load().await;
                if let Ok(v) = &r {
                    self.insert(key.clone(), v.clone());
                }
                r
            })
            .await
            .clone();
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            inflight.remove(&key);
        }
        result
    }

    /// Looks up without counting or touching frequency.
    fn peek(&self, key: &K) -> Option<V> {
        self.lock().map.get(key).map(|e| e.value.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone, PartialEq, Eq, Hash, Debug)]
    struct K(u32);
    impl CacheKey for K {
        fn kind(&self) -> &'static str {
            "original"
        }
    }
    #[derive(Clone, Debug, PartialEq)]
    struct V(usize);
    impl Weigh for V {
        fn weight(&self) -> usize {
            self.0
        }
    }

    fn cache(cap: usize) -> Cache<K, V, String> {
        Cache::new(cap, Box::new(NoObserver))
    }

    #[test]
    fn byte_bound_holds() {
        let c = cache(1000);
        for i in 0..100 {
            c.insert(K(i), V(37));
            assert!(c.bytes() <= 1000);
        }
        assert!(c.len() <= 1000 / 37);
        c.insert(K(999), V(1001));
        assert!(c.get(&K(999)).is_none(), "too big to cache");
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = cache(0);
        c.insert(K(1), V(1));
        assert!(c.is_empty());
    }

    #[test]
    fn scan_resistant() {
        let c = cache(100);
        // A hot set that is read repeatedly.
        for i in 0..5 {
            c.insert(K(i), V(10));
            c.get(&K(i));
        }
        // Push them through small into main.
        for i in 100..200 {
            c.insert(K(i), V(10));
            for h in 0..5 {
                c.get(&K(h));
            }
        }
        for h in 0..5 {
            assert!(c.get(&K(h)).is_some(), "hot key {h} evicted by a scan");
        }
        assert!(c.bytes() <= 100);
    }

    #[test]
    fn remove_where_drops_matching() {
        let c = cache(1000);
        for i in 0..10 {
            c.insert(K(i), V(10));
        }
        c.remove_where(|k| k.0 % 2 == 0);
        assert_eq!(c.len(), 5);
        assert_eq!(c.bytes(), 50);
        assert!(c.get(&K(2)).is_none());
        assert!(c.get(&K(3)).is_some());
    }

    #[tokio::test]
    async fn single_flight() {
        for cap in [0, 1000] {
            let c = Arc::new(cache(cap));
            let calls = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let c = Arc::clone(&c);
                let calls = Arc::clone(&calls);
                tasks.push(tokio::spawn(async move {
                    c.get_or_load(K(7), || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok::<_, String>(V(10))
                    })
                    .await
                }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap().unwrap(), V(10));
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "cap {cap}");
        }
    }

    #[tokio::test]
    async fn errors_are_shared_but_not_cached() {
        let c = cache(1000);
        let r = c
            .get_or_load(K(1), || async { Err::<V, _>("boom".to_string()) })
            .await;
        assert_eq!(r, Err("boom".to_string()));
        let r = c
            .get_or_load(K(1), || async { Ok::<_, String>(V(1)) })
            .await;
        assert_eq!(r, Ok(V(1)));
    }
}
