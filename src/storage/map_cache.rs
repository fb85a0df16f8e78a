//! A bound on how many sealed segments are mapped at once.
//!
//! Each map takes a `vm.max_map_count` slot (about 65,530 by default), so a
//! broker with many partitions cannot keep every old segment mapped. Sealed
//! segments register here when they are opened; past the capacity the least
//! recently read one is unmapped. Readers that still hold a view keep their
//! map alive; only the cache's reference goes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::segment::SealedSegment;

/// Shared by every partition log of a broker.
#[derive(Debug)]
pub struct MapCache {
    capacity: usize,
    tick: AtomicU64,
    open: Mutex<Vec<Weak<SealedSegment>>>,
}

impl MapCache {
    /// A cache that keeps at most `capacity` sealed segments mapped.
    pub fn new(capacity: usize) -> Arc<MapCache> {
        Arc::new(MapCache {
            capacity: capacity.max(1),
            tick: AtomicU64::new(1),
            open: Mutex::new(Vec::new()),
        })
    }

    /// Records a read of `segment` (cheap: one relaxed store).
    pub fn touch(&self, segment: &SealedSegment) {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        segment.last_used.store(t, Ordering::Relaxed);
    }

    /// Registers a segment that was just opened, evicting the least recently
    /// used ones beyond the capacity.
    pub fn opened(&self, segment: &Arc<SealedSegment>) {
        self.touch(segment);
        let mut open = self.open.lock().expect("map cache lock poisoned");
        open.retain(|w| w.upgrade().is_some_and(|s| s.is_open()));
        open.push(Arc::downgrade(segment));
        let mut attempts = open.len();
        while open.len() > self.capacity && attempts > 0 {
            attempts -= 1;
            let victim = open
                .iter()
                .enumerate()
                .filter_map(|(i, w)| w.upgrade().map(|s| (i, s)))
                .filter(|(_, s)| !Arc::ptr_eq(s, segment))
                .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed));
            let Some((i, seg)) = victim else { break };
            if seg.evict() {
                open.swap_remove(i);
            } else {
                // Cannot be released yet (awaiting its trim): refresh it so
                // another one is chosen next.
                self.touch(&seg);
            }
        }
    }

    /// Number of sealed segments currently registered as mapped.
    pub fn open_count(&self) -> usize {
        let open = self.open.lock().expect("map cache lock poisoned");
        open.iter()
            .filter(|w| w.upgrade().is_some_and(|s| s.is_open()))
            .count()
    }
}
