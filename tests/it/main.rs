//! The one integration-test binary (linking is slow on two cores, so every
//! integration test lives in a module here).

mod storage_basic;
