//! Attribute interning: one shared `Arc<PathAttrs>` per distinct attribute set.
//!
//! Owns the set of live attribute values. It never decides anything about routes; it only makes
//! equal attributes the same allocation, so a million routes announced with a handful of
//! attribute sets cost a handful of allocations and "did the attributes change?" is usually a
//! pointer comparison.

use std::collections::HashSet;
use std::sync::Arc;

use crate::wire::attribute::PathAttrs;

/// Below this many entries a purge is not worth a full scan.
const MIN_PURGE_THRESHOLD: usize = 1024;

/// A deduplicating store of path attributes.
#[derive(Debug)]
pub(crate) struct Interner {
    set: HashSet<Arc<PathAttrs>>,
    /// Purge when the set grows past this; re-armed to twice the survivors after each purge, so
    /// the scan cost is amortised over at least as many insertions as it visits.
    purge_at: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            set: HashSet::new(),
            purge_at: MIN_PURGE_THRESHOLD,
        }
    }
}

impl Interner {
    /// The shared copy of `attrs`, inserting it when it is new.
    pub(crate) fn intern(&mut self, attrs: PathAttrs) -> Arc<PathAttrs> {
        if let Some(existing) = self.set.get(&attrs) {
            return Arc::clone(existing);
        }
        self.maybe_purge();
        let arc = Arc::new(attrs);
        self.set.insert(Arc::clone(&arc));
        arc
    }

    /// Drops entries nobody but the interner holds.
    pub(crate) fn purge(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
        self.purge_at = (self.set.len() * 2).max(MIN_PURGE_THRESHOLD);
    }

    fn maybe_purge(&mut self) {
        if self.set.len() >= self.purge_at {
            self.purge();
        }
    }

    /// Number of distinct attribute sets held (live or not yet purged).
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_attributes_share_one_allocation() {
        let mut i = Interner::default();
        let a = i.intern(PathAttrs {
            med: Some(5),
            ..PathAttrs::default()
        });
        let b = i.intern(PathAttrs {
            med: Some(5),
            ..PathAttrs::default()
        });
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn purge_drops_only_unreferenced_entries() {
        let mut i = Interner::default();
        let kept = i.intern(PathAttrs {
            med: Some(1),
            ..PathAttrs::default()
        });
        drop(i.intern(PathAttrs {
            med: Some(2),
            ..PathAttrs::default()
        }));
        i.purge();
        assert_eq!(i.len(), 1);
        assert!(Arc::ptr_eq(&kept, &i.intern((*kept).clone())));
    }

    #[test]
    fn purge_is_triggered_by_growth() {
        let mut i = Interner::default();
        for med in 0..(MIN_PURGE_THRESHOLD as u32 * 3) {
            drop(i.intern(PathAttrs {
                med: Some(med),
                ..PathAttrs::default()
            }));
        }
        assert!(i.len() <= MIN_PURGE_THRESHOLD + 1);
    }
}
