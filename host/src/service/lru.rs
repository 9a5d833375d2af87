//! A map bounded by bytes: each entry is kept with what it costs, and the least
//! recently used entries go first once the costs add up to more than the budget.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug)]
pub(super) struct Lru<K, V> {
    budget: usize,
    entries: Mutex<Entries<K, V>>,
}

#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, Entry<V>>,
    /// The sum of the entries' costs.
    bytes: usize,
    /// Ticks on every use; the entry with the smallest tick is the least recently used.
    clock: u64,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    bytes: usize,
    last_used: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    pub(super) fn new(budget: usize) -> Self {
        Lru { budget, entries: Mutex::new(Entries { map: HashMap::new(), bytes: 0, clock: 0 }) }
    }

    pub(super) fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.lock();
        entries.clock += 1;
        let clock = entries.clock;
        let entry = entries.map.get_mut(key)?;
        entry.last_used = clock;
        Some(entry.value.clone())
    }

    /// Keeps `value` at a cost of `bytes`, evicting the least recently used entries
    /// beyond the budget, and returns it; if `key` is kept already, that value stays
    /// and is returned instead. A value that costs more than the whole budget is
    /// returned but not kept.
    pub(super) fn insert(&self, key: K, value: V, bytes: usize) -> V {
        let mut entries = self.lock();
        entries.clock += 1;
        let clock = entries.clock;
        if let Some(kept) = entries.map.get_mut(&key) {
            kept.last_used = clock;
            return kept.value.clone();
        }
        if bytes > self.budget {
            return value;
        }
        while entries.bytes + bytes > self.budget {
            let oldest =
                entries.map.iter().min_by_key(|(_, entry)| entry.last_used).map(|(key, _)| key.clone());
            let Some(evicted) = oldest.and_then(|oldest| entries.map.remove(&oldest)) else { break };
            entries.bytes -= evicted.bytes;
        }
        entries.bytes += bytes;
        entries.map.insert(key, Entry { value: value.clone(), bytes, last_used: clock });
        value
    }

    /// Drops the entries whose value `keep` refuses.
    pub(super) fn retain(&self, keep: impl Fn(&V) -> bool) {
        let mut entries = self.lock();
        let mut dropped = 0;
        entries.map.retain(|_, entry| {
            let kept = keep(&entry.value);
            if !kept {
                dropped += entry.bytes;
            }
            kept
        });
        entries.bytes -= dropped;
    }

    /// What the kept entries cost together.
    pub(super) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Entries<K, V>> {
        // A poisoned lock means a panic elsewhere mid-update; the map stays usable.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
