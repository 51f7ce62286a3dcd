//! One way to stop things: every part of a running engine is a [`Part`] that stops when asked,
//! by a deadline; an engine is an ordered list of parts ([`Parts`]) stopped front to back.
//!
//! The order is the contract (see `app`): nothing is asked to stop while something before it in
//! the list may still hand it work. Threads of their own (the polling thread, global table
//! readers, the membership watchdog) are [`Worker`]s: a stop flag they check, and a join.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::time::Instant;

/// What stopping a part returns: a future on the engine's (single-threaded) runtime.
pub type Stopping = Pin<Box<dyn Future<Output = ()>>>;

/// A part of a running engine.
pub trait Part {
    /// Its name, for the log.
    fn name(&self) -> &'static str;

    /// Stops it, finishing what it holds if it can by `deadline`; returns once it has stopped
    /// or the deadline passed (then what it had not finished is redone by the next owner).
    fn stop(self: Box<Self>, deadline: Instant) -> Stopping;
}

/// The parts of an engine, in the order they stop.
#[derive(Default)]
pub struct Parts(Vec<Box<dyn Part>>);

impl Parts {
    /// No parts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `part`: it stops after every part pushed before it.
    pub fn push(&mut self, part: impl Part + 'static) {
        self.0.push(Box::new(part));
    }

    /// Stops every part in order, each by `deadline`.
    pub async fn stop(self, deadline: Instant) {
        for part in self.0 {
            let name = part.name();
            tracing::debug!(part = name, "stopping");
            part.stop(deadline).await;
            if Instant::now() > deadline {
                tracing::warn!(part = name, "stopped after the shutdown deadline");
            }
        }
    }
}

/// A thread of its own that runs until its stop flag is set.
pub struct Worker {
    name: &'static str,
    stop: Arc<AtomicBool>,
    join: JoinHandle<()>,
}

impl Worker {
    /// A worker `name` whose thread `join` ends once `stop` is set.
    pub fn new(name: &'static str, stop: Arc<AtomicBool>, join: JoinHandle<()>) -> Self {
        Self { name, stop, join }
    }

    /// Starts `body` on a thread named `thread`, handing it the stop flag to watch.
    pub fn spawn(
        name: &'static str,
        thread: String,
        body: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let join = std::thread::Builder::new().name(thread).spawn(move || body(flag))?;
        Ok(Self { name, stop, join })
    }
}

impl Part for Worker {
    fn name(&self) -> &'static str {
        self.name
    }

    fn stop(self: Box<Self>, _deadline: Instant) -> Stopping {
        self.stop.store(true, Ordering::Release);
        // Workers check their flag at least every 100 ms; joining blocks that long at most.
        if self.join.join().is_err() {
            tracing::error!(part = self.name, "the thread panicked");
        }
        Box::pin(async {})
    }
}

/// A part whose stop is an async step.
pub struct Step<F> {
    name: &'static str,
    step: Option<F>,
}

impl<F> Step<F> {
    /// A part `name` that runs `step(deadline)` to stop.
    pub fn new(name: &'static str, step: F) -> Self {
        Self { name, step: Some(step) }
    }
}

impl<F, Fut> Part for Step<F>
where
    F: FnOnce(Instant) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn stop(mut self: Box<Self>, deadline: Instant) -> Stopping {
        match self.step.take() {
            Some(step) => Box::pin(step(deadline)),
            None => Box::pin(async {}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test]
    async fn parts_stop_in_order_and_workers_see_their_flag() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut parts = Parts::new();
        let l = log.clone();
        parts.push(
            Worker::spawn("worker", "t-worker".into(), move |stop| {
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                l.lock().expect("log").push("worker");
            })
            .expect("thread"),
        );
        let l = log.clone();
        parts.push(Step::new("step", move |_deadline| async move {
            l.lock().expect("log").push("step");
        }));
        parts.stop(Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(*log.lock().expect("log"), vec!["worker", "step"]);
    }
}
