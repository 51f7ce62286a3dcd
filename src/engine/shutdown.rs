//! Process-wide shutdown signal: triggered by SIGINT/SIGTERM or by a fatal error on any thread,
//! awaited by the loops that must stop.

use std::sync::Arc;

use tokio::sync::watch;

/// Why the engine is stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A signal or an operator asked for it: finish in-flight work, commit, exit 0.
    Requested,
    /// Something failed that the engine recovers from by starting again in-process, from the
    /// last committed offsets and durable state (e.g. an output the broker refused after every
    /// retry, or a broker that lost its data): stop without committing past the failure, then
    /// start the engine again. The process, its HTTP endpoint and its metrics stay up.
    Restart {
        /// A metric label naming the kind of failure.
        kind: &'static str,
        /// What happened, for the log.
        why: String,
    },
    /// Something failed that a restart would not fix (e.g. a broker without transactions in
    /// exactly-once mode): stop without committing past the failure, exit non-zero.
    Fatal(String),
}

impl Reason {
    /// Rank for [`Shutdown::trigger`]: a stronger reason replaces a weaker one.
    fn rank(&self) -> u8 {
        match self {
            Reason::Requested => 0,
            Reason::Restart { .. } => 1,
            Reason::Fatal(_) => 2,
        }
    }
}

/// A cloneable handle: trigger from anywhere, await in async code.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<Option<Reason>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A fresh, untriggered signal.
    pub fn new() -> Self {
        Self { tx: Arc::new(watch::channel(None).0) }
    }

    /// Triggers shutdown. The first reason wins, except that a failure overrides a requested stop
    /// and a fatal failure overrides a recoverable one (so the outcome reports the worst).
    pub fn trigger(&self, reason: Reason) {
        self.tx.send_if_modified(|cur| match cur.as_ref() {
            Some(c) if c.rank() >= reason.rank() => false,
            _ => {
                *cur = Some(reason.clone());
                true
            }
        });
    }

    /// The reason, if triggered.
    pub fn reason(&self) -> Option<Reason> {
        self.tx.borrow().clone()
    }

    /// Completes once triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we hold it.
        let _ = rx.wait_for(|r| r.is_some()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart() -> Reason {
        Reason::Restart { kind: "delivery_failed", why: "x".into() }
    }

    #[test]
    fn the_worst_reason_wins() {
        let s = Shutdown::new();
        assert_eq!(s.reason(), None);
        s.trigger(Reason::Requested);
        s.trigger(restart());
        assert_eq!(s.reason(), Some(restart()), "a failure overrides a requested stop");
        s.trigger(Reason::Requested);
        s.trigger(Reason::Restart { kind: "task_failed", why: "y".into() });
        assert_eq!(s.reason(), Some(restart()), "the first of equal rank stays");
        s.trigger(Reason::Fatal("z".into()));
        s.trigger(restart());
        assert_eq!(s.reason(), Some(Reason::Fatal("z".into())), "fatal overrides everything");
    }
}
