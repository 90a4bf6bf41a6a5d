//! A set of integers kept as maximal runs of consecutive values, so "the first value not in
//! the set from here on" is one O(log N) lookup however many values in a row are taken. The
//! writer's derived index uses it for addresses in use (the next free address) and for the
//! numeric suffixes of node names (the next free `name-N`), both of which were scans over
//! every node per registration. Persistent (`imbl`), so a state clone stays O(1).

use imbl::OrdMap;

/// Disjoint, non-adjacent runs `start ..= end`, keyed by `start`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runs {
    runs: OrdMap<u128, u128>,
}

impl Runs {
    /// The run holding `value`, as `(start, end)`.
    fn run_of(&self, value: u128) -> Option<(u128, u128)> {
        let (start, end) = self.runs.range(..=value).next_back()?;
        (*end >= value).then_some((*start, *end))
    }

    pub fn contains(&self, value: u128) -> bool {
        self.run_of(value).is_some()
    }

    /// The last value of the run holding `value`, if `value` is in the set.
    pub fn run_end(&self, value: u128) -> Option<u128> {
        self.run_of(value).map(|(_, end)| end)
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn insert(&mut self, value: u128) {
        if self.contains(value) {
            return;
        }
        let before = value
            .checked_sub(1)
            .and_then(|previous| self.run_of(previous));
        let after = value
            .checked_add(1)
            .and_then(|next| self.runs.get(&next).map(|end| (next, *end)));
        let start = before.map_or(value, |(start, _)| start);
        let end = after.map_or(value, |(next, end)| {
            self.runs.remove(&next);
            end
        });
        self.runs.insert(start, end);
    }

    pub fn remove(&mut self, value: u128) {
        let Some((start, end)) = self.run_of(value) else {
            return;
        };
        self.runs.remove(&start);
        if start < value {
            self.runs.insert(start, value - 1);
        }
        if value < end {
            self.runs.insert(value + 1, end);
        }
    }

    /// The highest value in `low ..= high`.
    pub fn max_within(&self, low: u128, high: u128) -> Option<u128> {
        let (_, end) = self.runs.range(..=high).next_back()?;
        (*end >= low).then(|| (*end).min(high))
    }

    /// The lowest value at or above `from` that is not in the set (`None` only when every
    /// value up to `u128::MAX` is).
    pub fn first_absent_from(&self, from: u128) -> Option<u128> {
        match self.run_end(from) {
            Some(end) => end.checked_add(1),
            None => Some(from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Any sequence of inserts and removes leaves the same membership, maxima and first
        /// gaps as a plain set, and the runs stay maximal.
        #[test]
        fn behaves_as_a_set(ops in prop::collection::vec((any::<bool>(), 0u128..64), 0..200),
                            probes in prop::collection::vec((0u128..70, 0u128..70), 1..20)) {
            let mut runs = Runs::default();
            let mut set = BTreeSet::new();
            for (insert, value) in ops {
                if insert {
                    runs.insert(value);
                    set.insert(value);
                } else {
                    runs.remove(value);
                    set.remove(&value);
                }
            }
            for value in 0..70 {
                prop_assert_eq!(runs.contains(value), set.contains(&value));
            }
            for (a, b) in probes {
                let (low, high) = (a.min(b), a.max(b));
                prop_assert_eq!(runs.max_within(low, high), set.range(low..=high).next_back().copied());
                let gap = (a..).find(|v| !set.contains(v));
                prop_assert_eq!(runs.first_absent_from(a), gap);
            }
            let spans: Vec<(u128, u128)> = runs.runs.iter().map(|(s, e)| (*s, *e)).collect();
            for pair in spans.windows(2) {
                prop_assert!(pair[0].1 + 1 < pair[1].0, "runs {:?} not maximal", pair);
            }
            prop_assert_eq!(runs.is_empty(), set.is_empty());
        }
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut runs = Runs::default();
        runs.insert(u128::MAX);
        runs.insert(0);
        assert_eq!(runs.first_absent_from(u128::MAX), None);
        assert_eq!(runs.first_absent_from(0), Some(1));
        runs.remove(u128::MAX);
        assert_eq!(runs.max_within(0, u128::MAX), Some(0));
    }
}
