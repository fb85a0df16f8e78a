//! Strata: an append-only, partitioned log broker.
//!
//! # Layout
//!
//! Layers talk one way: `api` → `broker` → `storage`.
//!
//! - [`storage`]: partition logs of memory-mapped segments with sparse
//!   offset and time indexes, CRC-checked frames, recovery and retention; no
//!   knowledge of gRPC, topics or groups.
//! - [`broker`]: topics and their metadata, produce/fetch/subscribe, the
//!   consumer-group coordinator, background flusher and retention.
//! - [`api`]: the gRPC services (`Log`, `Admin`, `Groups`, health,
//!   reflection) and the one error → status mapping.
//! - [`proto`]: generated code; [`wire`]: the hand-written zero-copy codecs
//!   for produce requests and fetch responses.
//! - [`auth`]: principals, permissions, tokens and quotas (the auth file).
//! - [`config`]: broker settings (defaults, TOML file, env, flags).
//! - [`metrics`]: the Prometheus endpoint (`--metrics-listen`).
//! - [`client`]: the Rust client library; [`cli`]: the `strata` command line,
//!   built on it; [`bench`]: the load generator behind `strata bench`.
//! - [`verify`]: the offline checker behind `strata verify`.
pub mod api;
pub mod auth;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod metrics;
pub mod proto;
pub mod storage;
pub mod verify;
pub mod wire;
