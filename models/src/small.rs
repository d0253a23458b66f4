//! A few keys held in place: the small sets and maps that per-channel state holds one of per
//! PDU (pending requests, a behaviour window's functions and addresses).

use crate::learn::FastMap;

/// Keys and values held in place and found by comparison (no hashing, no allocation) while
/// there are at most `N`, in a hash map past that; back in place when the map empties.
#[derive(Debug)]
pub enum SmallMap<K, V, const N: usize> {
    Few(smallvec::SmallVec<[(K, V); N]>),
    Many(FastMap<K, V>),
}

impl<K, V, const N: usize> Default for SmallMap<K, V, N> {
    fn default() -> Self {
        SmallMap::Few(smallvec::SmallVec::new())
    }
}

impl<K: Copy + Eq + std::hash::Hash, V: Copy, const N: usize> SmallMap<K, V, N> {
    pub fn len(&self) -> usize {
        match self {
            SmallMap::Few(few) => few.len(),
            SmallMap::Many(many) => many.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains_key(&self, k: &K) -> bool {
        match self {
            SmallMap::Few(few) => few.iter().any(|(x, _)| x == k),
            SmallMap::Many(many) => many.contains_key(k),
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        match self {
            SmallMap::Few(few) => few.iter().find(|(x, _)| x == k).map(|(_, v)| v),
            SmallMap::Many(many) => many.get(k),
        }
    }

    /// Holds `v` for `k` (replacing what `k` held).
    pub fn insert(&mut self, k: K, v: V) {
        match self {
            SmallMap::Few(few) => {
                if let Some(slot) = few.iter_mut().find(|(x, _)| *x == k) {
                    slot.1 = v;
                } else if few.len() < N {
                    few.push((k, v));
                } else {
                    let mut many: FastMap<K, V> = few.iter().copied().collect();
                    many.insert(k, v);
                    *self = SmallMap::Many(many);
                }
            }
            SmallMap::Many(many) => {
                many.insert(k, v);
            }
        }
    }

    /// Removes what `k` holds when `take` says so of it, in one search: `Ok` with it removed,
    /// `Err(true)` when `k` holds something `take` refused, `Err(false)` when it holds nothing.
    pub fn remove_if(&mut self, k: &K, take: impl FnOnce(&V) -> bool) -> Result<V, bool> {
        match self {
            SmallMap::Few(few) => {
                let at = few.iter().position(|(x, _)| x == k).ok_or(false)?;
                if !take(&few[at].1) {
                    return Err(true);
                }
                Ok(few.remove(at).1)
            }
            SmallMap::Many(many) => {
                let std::collections::hash_map::Entry::Occupied(e) = many.entry(*k) else {
                    return Err(false);
                };
                if !take(e.get()) {
                    return Err(true);
                }
                let v = e.remove();
                if many.is_empty() {
                    *self = SmallMap::default();
                }
                Ok(v)
            }
        }
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        match self {
            SmallMap::Few(few) => {
                let at = few.iter().position(|(x, _)| x == k)?;
                Some(few.remove(at).1)
            }
            SmallMap::Many(many) => {
                let v = many.remove(k);
                if many.is_empty() {
                    // Back in place once the burst is over (the map's room is freed).
                    *self = SmallMap::default();
                }
                v
            }
        }
    }

    /// Every key and what it holds, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        let (few, many) = match self {
            SmallMap::Few(few) => (Some(few.iter().copied()), None),
            SmallMap::Many(many) => (None, Some(many.iter().map(|(k, v)| (*k, *v)))),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}
