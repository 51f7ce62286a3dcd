//! Top-N selection with a deterministic order: count descending, then key ascending.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// An entry ranked by count (higher first), ties broken by key (ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked<K> {
    /// The ranked key (a hashtag, a title, a page).
    pub key: K,
    /// Its count.
    pub count: u64,
}

impl<K: Ord> Ord for Ranked<K> {
    /// "Greater" means "ranks earlier": higher count, or same count and smaller key.
    fn cmp(&self, other: &Self) -> Ordering {
        self.count.cmp(&other.count).then_with(|| other.key.cmp(&self.key))
    }
}

impl<K: Ord> PartialOrd for Ranked<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Returns the `n` best entries of `items`, best first. Runs in O(len · log n) time and O(n)
/// memory: a min-heap of the current best `n` is kept, so huge inputs never get sorted whole.
/// Keys are cloned only when they enter the heap.
pub fn top_n<'a, K, I>(items: I, n: usize) -> Vec<Ranked<K>>
where
    K: Ord + Clone + 'a,
    I: IntoIterator<Item = (&'a K, u64)>,
{
    if n == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Reverse<Ranked<K>>> = BinaryHeap::with_capacity(n + 1);
    for (key, count) in items {
        if heap.len() == n {
            let worst = &heap.peek().expect("heap holds n > 0 entries").0;
            // Only a strictly better entry displaces the current worst.
            let better = count > worst.count || (count == worst.count && key < &worst.key);
            if !better {
                continue;
            }
            heap.pop();
        }
        heap.push(Reverse(Ranked { key: key.clone(), count }));
    }
    let mut out: Vec<Ranked<K>> = heap.into_iter().map(|r| r.0).collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn brute(items: &[(String, u64)], n: usize) -> Vec<Ranked<String>> {
        let mut v: Vec<Ranked<String>> = items.iter().map(|(k, c)| Ranked { key: k.clone(), count: *c }).collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        v.truncate(n);
        v
    }

    #[test]
    fn ties_break_by_key_ascending() {
        let items = [("b".to_string(), 3), ("a".to_string(), 3), ("c".to_string(), 5), ("d".to_string(), 1)];
        let top = top_n(items.iter().map(|(k, c)| (k, *c)), 3);
        let keys: Vec<&str> = top.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["c", "a", "b"]);
    }

    #[test]
    fn zero_and_oversized_n() {
        let items = [("a".to_string(), 1)];
        assert!(top_n(items.iter().map(|(k, c)| (k, *c)), 0).is_empty());
        assert_eq!(top_n(items.iter().map(|(k, c)| (k, *c)), 10).len(), 1);
    }

    #[test]
    fn matches_brute_force_on_random_input() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..300 {
            let len = rng.gen_range(0..200);
            let mut items: Vec<(String, u64)> = Vec::new();
            for i in 0..len {
                // Few distinct counts so ties are common.
                items.push((format!("k{}", (i * 7919 + round) % 1000), rng.gen_range(0..6)));
            }
            items.sort();
            items.dedup_by(|a, b| a.0 == b.0);
            let n = rng.gen_range(0..30);
            assert_eq!(top_n(items.iter().map(|(k, c)| (k, *c)), n), brute(&items, n), "round {round}");
        }
    }
}
