//! What `/healthz` and `/readyz` report: shared flags set by the consumer and the engine.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Liveness and readiness state.
#[derive(Debug, Default)]
pub struct Health {
    assigned: AtomicUsize,
    broker_up: AtomicBool,
    stopping: AtomicBool,
    restoring: AtomicUsize,
}

impl Health {
    /// Records how many input partitions this instance owns.
    pub fn set_assigned(&self, n: usize) {
        self.assigned.store(n, Ordering::Release);
    }

    /// Records whether a broker answers.
    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.store(up, Ordering::Release);
    }

    /// Marks the instance as shutting down: no longer ready.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// An assignment arrived (`true`) or its tasks were started (`false`): between the two the
    /// instance is not ready either (its tasks are about to restore).
    pub fn set_assigning(&self, arrived: bool) {
        self.set_restoring(arrived);
    }

    /// A task starts (`true`) or finishes (`false`) restoring its state.
    pub fn set_restoring(&self, started: bool) {
        if started {
            self.restoring.fetch_add(1, Ordering::AcqRel);
        } else {
            // Saturating: a straggler of a stopped engine incarnation (see `reset_engine`) must
            // not wrap the count around.
            let _ = self.restoring.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(1)));
        }
    }

    /// The engine stopped and will start again: no partitions, nothing restoring (whatever its
    /// last incarnation left counted), broker state unknown until it answers again.
    pub fn reset_engine(&self) {
        self.assigned.store(0, Ordering::Release);
        self.restoring.store(0, Ordering::Release);
    }

    /// Tasks restoring their state right now.
    pub fn restoring(&self) -> usize {
        self.restoring.load(Ordering::Acquire)
    }

    /// Input partitions owned.
    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::Acquire)
    }

    /// `Ok` when ready to serve; otherwise the reason.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Acquire) {
            Err("shutting down")
        } else if !self.broker_up.load(Ordering::Acquire) {
            Err("no Kafka broker answers")
        } else if self.assigned() == 0 {
            Err("no input partitions assigned yet")
        } else if self.restoring() > 0 {
            Err("restoring state")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_broker_and_partitions() {
        let h = Health::default();
        assert_eq!(h.ready(), Err("no Kafka broker answers"));
        h.set_broker_up(true);
        assert_eq!(h.ready(), Err("no input partitions assigned yet"));
        h.set_assigned(4);
        assert_eq!(h.ready(), Ok(()));
        h.set_restoring(true);
        h.set_restoring(true);
        assert_eq!(h.ready(), Err("restoring state"));
        h.set_restoring(false);
        assert_eq!(h.ready(), Err("restoring state"));
        h.set_restoring(false);
        assert_eq!(h.ready(), Ok(()));
        h.set_stopping();
        assert_eq!(h.ready(), Err("shutting down"));
    }
}
