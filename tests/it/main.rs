//! The one integration-test binary (linking is slow on two cores, so every
//! integration test lives in a module here).

mod admin_api;
mod bench_child;
mod cli;
mod consumer_member;
mod corruption;
mod crash;
mod disk_full;
mod floods;
mod flush_failure;
mod groups_api;
mod harness;
mod http2_abuse;
mod inflight;
mod limits;
mod load;
mod log_api;
mod malformed;
mod metrics;
mod producer;
mod security;
mod slow_consumers;
mod soak;
mod storage_basic;
mod storage_crash;
mod storage_idempotence;
mod storage_model;
mod storage_recovery;
