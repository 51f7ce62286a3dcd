//! Process-wide shutdown signal: triggered by SIGINT/SIGTERM or by a fatal error on any thread,
//! awaited by the loops that must stop.

use std::sync::Arc;

use tokio::sync::watch;

/// Why the engine is stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A signal or an operator asked for it: finish in-flight work, commit, exit 0.
    Requested,
    /// Something failed that makes going on unsafe (e.g. an output the broker refused): stop
    /// without committing past the failure, exit non-zero.
    Fatal(String),
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

    /// Triggers shutdown. The first reason wins, except that a fatal reason overrides a requested
    /// one (so the exit code reports the failure).
    pub fn trigger(&self, reason: Reason) {
        self.tx.send_if_modified(|cur| match (cur.as_ref(), &reason) {
            (None, _) | (Some(Reason::Requested), Reason::Fatal(_)) => {
                *cur = Some(reason.clone());
                true
            }
            _ => false,
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
