//! Simulated platforms for the quickstart, tests and benchmarks: deterministic audience
//! trajectories and one HTTP server, with configurable faults, that answers like the Graph API
//! and like a Mastodon instance's account lookup.

pub mod faults;
pub mod graph_api;
pub mod mastodon;
pub mod trajectory;
