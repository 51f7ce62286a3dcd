//! Simulated platforms for the quickstart, tests and benchmarks: deterministic audience
//! trajectories and a Graph-API-compatible HTTP server with configurable faults.

pub mod graph_api;
pub mod trajectory;
