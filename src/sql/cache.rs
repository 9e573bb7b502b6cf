//! The analyser's caches: bounded by count and by bytes, started over when full.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use dashmap::DashMap;

use super::SearchPath;
use crate::protocol::value::DateOrder;
use crate::protocol::zone::Zone;

/// Most distinct statement texts kept per cache; beyond it the cache starts over.
const CACHE_LIMIT: usize = 4096;
/// Most bytes of statement text (counted twice: the key and the rewritten plan) a cache
/// holds; beyond it the cache starts over.
const CACHE_BYTES: usize = 32 << 20;
/// Statements longer than this are analysed every time, never kept: generated bulk
/// statements are rarely sent twice, and would crowd out the ones that are.
pub(super) const CACHEABLE_LEN: usize = 64 << 10;

/// The cache key: user, emergency, the session's state that analysis depends on
/// ([`Session`]), text.
pub(super) type CacheKey = (Arc<str>, bool, Session, Box<str>);

/// What of a session a statement's analysis depends on besides its user: the TimeZone
/// (timestamptz literals are read in it), the client encoding is ASCII-safe, the
/// DateStyle's order (literals are read in it), the search path.
pub(super) type Session = (Option<Zone>, bool, DateOrder, SearchPath);

/// Values by key, at most [`CACHE_LIMIT`] of them and [`CACHE_BYTES`].
#[derive(Debug)]
pub(super) struct Bounded<K: Eq + Hash, V> {
    map: DashMap<K, V>,
    /// the bytes the cache holds, by the measure of [`CACHE_BYTES`]
    bytes: AtomicUsize,
}

impl<K: Eq + Hash, V: Clone> Bounded<K, V> {
    pub(super) fn new() -> Self {
        Self {
            map: DashMap::new(),
            bytes: AtomicUsize::new(0),
        }
    }

    /// The value kept for `key`.
    pub(super) fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.map.get(key).map(|v| v.clone())
    }

    /// Keeps `value` for `key`, whose text is `text_len` bytes long, starting over when
    /// the cache is full by count or by bytes.
    pub(super) fn keep(&self, key: K, text_len: usize, value: V) {
        let cost = 2 * text_len + 256;
        let held = self.bytes.fetch_add(cost, Relaxed) + cost;
        if self.map.len() >= CACHE_LIMIT || held > CACHE_BYTES {
            self.map.clear();
            self.bytes.store(cost, Relaxed);
        }
        self.map.insert(key, value);
    }
}
