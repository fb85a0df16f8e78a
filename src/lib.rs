//! Strata: an append-only, partitioned log broker.
//!
//! # Layout
//!
//! - [`storage`]: partition logs of memory-mapped segments; no knowledge of
//!   gRPC, topics or groups.
pub mod api;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod proto;
pub mod storage;
pub mod wire;
