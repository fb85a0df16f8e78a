//! Strata: an append-only, partitioned log broker.
//!
//! # Layout
//!
//! - [`storage`]: partition logs of memory-mapped segments; no knowledge of
//!   gRPC, topics or groups.
pub mod storage;
pub mod proto;
pub mod wire;
pub mod broker;
pub mod config;
pub mod api;
pub mod client;
pub mod cli;
