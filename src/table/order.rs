//! Sorting again, cheaply, what was sorted last time.
//!
//! A table rebuilt for an edit sorts almost the same items as the last one, given in the
//! same order. A check that every place of the last sorted output still gets a matching
//! item is one pass; sorting a thousand names compares each about ten times, and by the next
//! edit none of them is in the cache.

use std::cmp::Ordering;

/// The permutation of the last sort.
#[derive(Debug, Default, Clone)]
pub struct KeptOrder {
    /// Where the `k`-th item of the sorted output was in the input.
    order: Vec<usize>,
}

impl KeptOrder {
    /// Sorts `items` by `cmp`, stably. If the last permutation gives each place of `last`
    /// (the last sorted output) an item that `same` matches with it, it is used again
    /// without comparing: `same` must imply that `cmp` would order the items as before.
    pub fn sort<T, L>(
        &mut self,
        items: Vec<T>,
        last: &[L],
        same: impl Fn(&T, &L) -> bool,
        mut cmp: impl FnMut(&T, &T) -> Ordering,
    ) -> Vec<T> {
        let reusable = self.order.len() == items.len()
            && last.len() == items.len()
            && self
                .order
                .iter()
                .zip(last)
                .all(|(&i, l)| same(&items[i], l));
        if !reusable {
            self.order.clear();
            self.order.extend(0..items.len());
            self.order.sort_by(|&a, &b| cmp(&items[a], &items[b]));
        }
        let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
        self.order.iter().filter_map(|&i| slots[i].take()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Sorts `(key, tag)` pairs by key, counting the comparisons.
    fn sort(
        kept: &mut KeptOrder,
        items: &[(u32, char)],
        last: &[(u32, char)],
    ) -> (Vec<(u32, char)>, usize) {
        let compared = Cell::new(0);
        let sorted = kept.sort(
            items.to_vec(),
            last,
            |a, b| a.0 == b.0,
            |a, b| {
                compared.set(compared.get() + 1);
                a.0.cmp(&b.0)
            },
        );
        (sorted, compared.get())
    }

    #[test]
    fn the_same_keys_in_the_same_places_are_placed_without_comparing() {
        let mut kept = KeptOrder::default();
        let first = [(3, 'a'), (1, 'b'), (2, 'c')];
        let (sorted, compared) = sort(&mut kept, &first, &[]);
        assert_eq!(sorted, [(1, 'b'), (2, 'c'), (3, 'a')]);
        assert!(compared > 0);

        // New tags on the same keys: the last permutation still sorts them.
        let (again, compared) = sort(&mut kept, &[(3, 'x'), (1, 'y'), (2, 'z')], &sorted);
        assert_eq!(again, [(1, 'y'), (2, 'z'), (3, 'x')]);
        assert_eq!(compared, 0);
    }

    #[test]
    fn a_changed_key_a_move_or_a_new_length_sorts_again() {
        let mut kept = KeptOrder::default();
        let (last, _) = sort(&mut kept, &[(3, 'a'), (1, 'b'), (2, 'c')], &[]);

        let (sorted, compared) = sort(&mut kept, &[(3, 'a'), (0, 'b'), (2, 'c')], &last);
        assert_eq!(sorted, [(0, 'b'), (2, 'c'), (3, 'a')]);
        assert!(compared > 0);

        let (moved, compared) = sort(&mut kept, &[(2, 'c'), (3, 'a'), (0, 'b')], &sorted);
        assert_eq!(moved, [(0, 'b'), (2, 'c'), (3, 'a')]);
        assert!(compared > 0);

        let (longer, _) = sort(&mut kept, &[(2, 'c'), (3, 'a'), (0, 'b'), (1, 'd')], &moved);
        assert_eq!(longer, [(0, 'b'), (1, 'd'), (2, 'c'), (3, 'a')]);
    }

    #[test]
    fn equal_keys_keep_their_input_order() {
        let mut kept = KeptOrder::default();
        let (sorted, _) = sort(&mut kept, &[(1, 'a'), (0, 'b'), (1, 'c')], &[]);
        assert_eq!(sorted, [(0, 'b'), (1, 'a'), (1, 'c')]);
    }
}
