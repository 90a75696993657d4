//! A counting semaphore whose waiters give up when the loop stops.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::executor::budget::Stop;

pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A taken slot; dropping it gives the slot back.
pub struct Slot<'a> {
    slots: &'a Slots,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot; `None` when `stop` fires first.
    pub fn acquire(&self, stop: &Stop) -> Option<Slot<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop.is_stopped() {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Slot { slots: self });
            }
            // Woken by a freed slot, or after a while to look at `stop` again.
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.slots.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_holders_than_slots_and_stop_ends_a_wait() {
        let slots = Slots::new(2);
        let holding = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    let _slot = slots.acquire(&Stop::never()).unwrap();
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    holding.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);

        let one = Slots::new(1);
        let _held = one.acquire(&Stop::never()).unwrap();
        let stop = Stop::new();
        stop.request("test");
        assert!(one.acquire(&stop).is_none());
    }
}
