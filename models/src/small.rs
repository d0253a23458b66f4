//! A few keys held in place: the small sets and maps that per-channel state holds one of per
//! PDU (pending requests, a behaviour window's functions and addresses).

use crate::learn::FastMap;

/// Keys and values held in place and found by comparison (no hashing, no allocation) while
/// there are at most `N`, in a hash map past that; back in place when the map empties.
///
/// In place, the entries are an array and its length: an entry is stored where it goes, field by
/// field. (A `SmallVec` took it by value: built on the stack in pieces and copied by wider
/// loads, a store-forwarding stall for every pending request.)
#[derive(Debug)]
pub enum SmallMap<K, V, const N: usize> {
    Few { len: usize, slots: [(K, V); N] },
    Many(FastMap<K, V>),
}

impl<K: Copy + Default, V: Copy + Default, const N: usize> Default for SmallMap<K, V, N> {
    fn default() -> Self {
        SmallMap::Few {
            len: 0,
            slots: [(K::default(), V::default()); N],
        }
    }
}

impl<K, V, const N: usize> SmallMap<K, V, N>
where
    K: Copy + Eq + std::hash::Hash + Default,
    V: Copy + Default,
{
    pub fn len(&self) -> usize {
        match self {
            SmallMap::Few { len, .. } => *len,
            SmallMap::Many(many) => many.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.get(k).is_some()
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        match self {
            SmallMap::Few { len, slots } => slots
                .get(..*len)?
                .iter()
                .find(|(x, _)| x == k)
                .map(|(_, v)| v),
            SmallMap::Many(many) => many.get(k),
        }
    }

    /// The place of `k` among the entries held in place.
    fn position(len: usize, slots: &[(K, V); N], k: &K) -> Option<usize> {
        slots.get(..len)?.iter().position(|(x, _)| x == k)
    }

    /// Holds `v` for `k` (replacing what `k` held).
    #[inline]
    pub fn insert(&mut self, k: K, v: V) {
        if let SmallMap::Few { len, slots } = self {
            let at = Self::position(*len, slots, &k).unwrap_or(*len);
            if let Some(slot) = slots.get_mut(at) {
                slot.0 = k;
                slot.1 = v;
                *len = (*len).max(at + 1);
                return;
            }
        }
        self.insert_many(k, v);
    }

    /// [`SmallMap::insert`] into the map, made of the entries in place when they are full. Out
    /// of line: its calls take the entry through memory, and inlined they made the caller
    /// build it there for the common case too.
    #[inline(never)]
    fn insert_many(&mut self, k: K, v: V) {
        match self {
            SmallMap::Few { slots, .. } => {
                let mut many: FastMap<K, V> = slots.iter().copied().collect();
                many.insert(k, v);
                *self = SmallMap::Many(many);
            }
            SmallMap::Many(many) => {
                many.insert(k, v);
            }
        }
    }

    /// Removes the entry at `at` of those held in place (the later ones move down one).
    fn take_at(len: &mut usize, slots: &mut [(K, V); N], at: usize) -> V {
        let v = slots[at].1;
        // Most often the last (a channel waits for one answer at a time): nothing moves, and
        // no call to move nothing.
        if at + 1 < *len {
            slots.copy_within(at + 1..*len, at);
        }
        *len -= 1;
        v
    }

    /// Removes what `k` holds when `take` says so of it, in one search: `Ok` with it removed,
    /// `Err(true)` when `k` holds something `take` refused, `Err(false)` when it holds nothing.
    pub fn remove_if(&mut self, k: &K, take: impl FnOnce(&V) -> bool) -> Result<V, bool> {
        match self {
            SmallMap::Few { len, slots } => {
                let at = Self::position(*len, slots, k).ok_or(false)?;
                if !take(&slots[at].1) {
                    return Err(true);
                }
                Ok(Self::take_at(len, slots, at))
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
            SmallMap::Few { len, slots } => {
                let at = Self::position(*len, slots, k)?;
                Some(Self::take_at(len, slots, at))
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
            SmallMap::Few { len, slots } => {
                (Some(slots.get(..*len).unwrap_or(&[]).iter().copied()), None)
            }
            SmallMap::Many(many) => (None, Some(many.iter().map(|(k, v)| (*k, *v)))),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}
