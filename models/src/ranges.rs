//! Sets of address ranges, merged, as learned from the accesses seen.

use serde::{Deserialize, Serialize};

/// Inclusive, sorted, non-overlapping, non-adjacent `[lo, hi]` ranges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ranges(pub Vec<[u32; 2]>);

/// More ranges than this in one space are collapsed into their hull: a model of thousands of
/// scattered addresses is no tighter than its envelope, and memory stays bounded.
const MAX_RANGES: usize = 256;

/// The widest neighbourhood [`Ranges::near`] gives a block, on each side.
pub const MAX_NEAR_MARGIN: u32 = 128;

impl Ranges {
    pub fn insert(&mut self, lo: u32, hi: u32) {
        let v = &mut self.0;
        // First range that ends at or after lo - 1 (could merge).
        let i = v.partition_point(|r| r[1].saturating_add(1) < lo);
        // Already there, the common case (a poll learned again): nothing to merge.
        if v.get(i).is_some_and(|r| r[0] <= lo && hi <= r[1]) {
            return;
        }
        let mut j = i;
        let (mut nlo, mut nhi) = (lo, hi);
        while j < v.len() && v[j][0] <= hi.saturating_add(1) {
            nlo = nlo.min(v[j][0]);
            nhi = nhi.max(v[j][1]);
            j += 1;
        }
        v.splice(i..j, [[nlo, nhi]]);
        if v.len() > MAX_RANGES {
            let (first, last) = (v[0][0], v[v.len() - 1][1]);
            v.clear();
            v.push([first, last]);
        }
    }

    /// True when every address of `[lo, hi]` was seen.
    pub fn covers(&self, lo: u32, hi: u32) -> bool {
        let i = self.0.partition_point(|r| r[1] < lo);
        self.0.get(i).is_some_and(|r| r[0] <= lo && hi <= r[1])
    }

    /// True when `[lo, hi]` lies within one range widened on each side by its own length, at
    /// least `min_margin` and at most [`MAX_NEAR_MARGIN`]: the neighbouring points of a block
    /// (the next coils of a bank, the other registers of a recipe). The cap keeps a wide block
    /// (or the hull of a space with many ranges) from making every address near.
    pub fn near(&self, lo: u32, hi: u32, min_margin: u32) -> bool {
        self.0.iter().any(|r| {
            let margin = r[1]
                .saturating_sub(r[0])
                .saturating_add(1)
                .clamp(min_margin, MAX_NEAR_MARGIN.max(min_margin));
            r[0].saturating_sub(margin) <= lo && hi <= r[1].saturating_add(margin)
        })
    }

    pub fn union(&mut self, other: &Ranges) {
        for r in &other.0 {
            self.insert(r[0], r[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlapping_and_adjacent() {
        let mut r = Ranges::default();
        r.insert(10, 19);
        r.insert(30, 39);
        r.insert(20, 25);
        assert_eq!(r.0, vec![[10, 25], [30, 39]]);
        r.insert(0, 100);
        assert_eq!(r.0, vec![[0, 100]]);
        assert!(r.covers(0, 100));
        assert!(!r.covers(50, 101));
    }

    /// Against the set of addresses inserted, over many random inserts (repeats among them,
    /// as a poll's): the ranges cover exactly those addresses, sorted, apart and not adjacent.
    #[test]
    fn inserts_keep_exactly_the_addresses_seen() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u32| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % u64::from(n)) as u32
        };
        for _ in 0..200 {
            let (mut r, mut seen) = (Ranges::default(), std::collections::BTreeSet::new());
            let mut inserted = Vec::new();
            for _ in 0..60 {
                // A new range, or one inserted before again, or part of one.
                let (lo, hi) = match (inserted.len(), next(3)) {
                    (n, 0) if n > 0 => inserted[next(n as u32) as usize],
                    (n, 1) if n > 0 => {
                        let (lo, hi): (u32, u32) = inserted[next(n as u32) as usize];
                        let a = lo + next(hi - lo + 1);
                        (a, a + next(hi - a + 1))
                    }
                    _ => {
                        let lo = next(400);
                        (lo, lo + next(12))
                    }
                };
                inserted.push((lo, hi));
                r.insert(lo, hi);
                seen.extend(lo..=hi);
                let covered: std::collections::BTreeSet<u32> =
                    r.0.iter().flat_map(|[a, b]| *a..=*b).collect();
                assert_eq!(covered, seen, "after [{lo}, {hi}]: {:?}", r.0);
                assert!(r.0.windows(2).all(|w| w[0][1] + 1 < w[1][0]), "{:?}", r.0);
            }
        }
    }

    #[test]
    fn near_is_within_a_block_widened_by_its_length() {
        let mut r = Ranges::default();
        r.insert(100, 109);
        r.insert(1000, 1000);
        assert!(r.near(90, 90, 4));
        assert!(r.near(110, 119, 4));
        assert!(!r.near(120, 120, 4));
        assert!(!r.near(89, 89, 4));
        assert!(r.near(1004, 1004, 4));
        assert!(!r.near(1005, 1005, 4));
        assert!(
            !r.near(105, 1000, 4),
            "a write spanning two blocks is near neither"
        );
        assert!(r.near(0, 0, 100));
        assert!(!Ranges::default().near(0, 0, 100));
        let mut wide = Ranges::default();
        wide.insert(1000, 9000);
        assert!(wide.near(9000 + MAX_NEAR_MARGIN, 9000 + MAX_NEAR_MARGIN, 16));
        assert!(!wide.near(9001 + MAX_NEAR_MARGIN, 9001 + MAX_NEAR_MARGIN, 16));
    }

    #[test]
    fn covers_only_seen_addresses() {
        let mut r = Ranges::default();
        r.insert(0, 9);
        r.insert(20, 29);
        assert!(r.covers(0, 9));
        assert!(r.covers(21, 22));
        assert!(!r.covers(5, 20));
        assert!(!r.covers(10, 10));
        assert!(!r.covers(30, 30));
    }

    #[test]
    fn bounded() {
        let mut r = Ranges::default();
        for i in 0..1000u32 {
            r.insert(i * 2, i * 2);
        }
        assert!(r.0.len() <= MAX_RANGES);
        // Collapsed into hulls: everything up to the last collapse is covered.
        assert!(r.covers(0, 1000));
    }
}
