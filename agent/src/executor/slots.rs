//! A pool of numbered slots: a run takes a free slot and gives it back when it ends, so at most
//! N runs execute at once. Waiting for a slot gives up when the loop stops.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::budget::Stop;

/// How often a waiter looks at the stop signal (a stop does not notify the condvar).
const STOP_POLL: Duration = Duration::from_millis(50);

pub struct SlotPool {
    free: Mutex<Vec<usize>>,
    freed: Condvar,
    size: usize,
}

/// A slot held; returned to the pool when dropped (also when the run panics or errors).
pub struct SlotGuard<'a> {
    pool: &'a SlotPool,
    slot: usize,
}

impl SlotGuard<'_> {
    pub fn index(&self) -> usize {
        self.slot
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        free.push(self.slot);
        self.pool.freed.notify_one();
    }
}

impl SlotPool {
    pub fn new(size: usize) -> SlotPool {
        let size = size.max(1);
        // Popped from the end: slot 0 is handed out first.
        SlotPool {
            free: Mutex::new((0..size).rev().collect()),
            freed: Condvar::new(),
            size,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The lowest free slot, waiting for one if all are taken; `None` once `stop` fires.
    pub fn acquire(&self, stop: &Stop) -> Option<SlotGuard<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop.is_stopped() {
                return None;
            }
            if !free.is_empty() {
                // Lowest index first, so one run at a time always lands on slot 0 (GPU 0).
                let lowest = (0..free.len()).min_by_key(|&i| free[i]).unwrap_or(0);
                let slot = free.swap_remove(lowest);
                return Some(SlotGuard { pool: self, slot });
            }
            free = self
                .freed
                .wait_timeout(free, STOP_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn at_most_n_hold_a_slot_at_once_and_ids_are_distinct() {
        let pool = SlotPool::new(2);
        let stop = Stop::new();
        let holding = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let seen = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    let slot = pool.acquire(&stop).unwrap();
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    {
                        let mut seen = seen.lock().unwrap();
                        seen.push(slot.index());
                    }
                    std::thread::sleep(Duration::from_millis(30));
                    holding.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2, "two slots, two at once");
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, vec![0, 1], "slot ids are 0 and 1");
    }

    #[test]
    fn a_lone_run_always_gets_slot_zero() {
        let pool = SlotPool::new(3);
        let stop = Stop::new();
        for _ in 0..3 {
            assert_eq!(pool.acquire(&stop).unwrap().index(), 0);
        }
        let a = pool.acquire(&stop).unwrap();
        let b = pool.acquire(&stop).unwrap();
        assert_eq!((a.index(), b.index()), (0, 1));
        drop(a);
        assert_eq!(pool.acquire(&stop).unwrap().index(), 0);
    }

    #[test]
    fn waiting_for_a_slot_returns_when_the_loop_stops() {
        let pool = SlotPool::new(1);
        let stop = Stop::new();
        let _held = pool.acquire(&stop).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| pool.acquire(&stop).map(|g| g.index()));
            std::thread::sleep(Duration::from_millis(100));
            stop.request("test");
            assert_eq!(waiter.join().unwrap(), None);
        });
    }
}
