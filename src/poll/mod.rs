//! Polling social platforms for audience counts: the schedule of every tracked page, rate and
//! concurrency limits per platform, and the platform clients.

pub mod dispatch;
pub mod facebook;
pub mod http;
pub mod limiter;
pub mod mastodon;
pub mod observation;
pub mod platform;
pub mod scheduler;
