//! `holdfast-bench`: load against a running Holdfast (or a baseline) over HTTP, the baselines
//! themselves, and the `compare` orchestration that runs them side by side.
//!
//! The pure parts (histogram summaries, the per-second timeline, the audit rules, argument
//! parsing, the HTML report) are plain functions with unit tests; the I/O parts are thin shells
//! around them.

pub mod args;
pub mod audit;
pub mod baseline;
pub mod client;
pub mod compare;
pub mod cpu;
pub mod journey;
pub mod load;
pub mod queue;
pub mod report;
pub mod scenario;
pub mod setup;
pub mod stats;
pub mod storm;
