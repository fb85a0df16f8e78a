//! Generated gRPC code for package `strata.v1` (see `proto/strata/v1/` and `build.rs`).
//!
//! - [`v1`]: every message and enum, and the gRPC clients. This is what client code
//!   (the client library, the CLI, tests) uses.
//! - [`server`]: the gRPC server traits and services. They use the types of [`v1`],
//!   except for three messages the server handles without decoding or re-encoding
//!   records: `ProduceRequest` is received as [`crate::wire::ProduceRequestWire`],
//!   `FetchResponse` is sent as [`crate::wire::FetchResponseWire`] and `ConsumeEvent`
//!   as [`crate::wire::ConsumeEventWire`]. On the wire they are identical to the
//!   generated messages.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for server reflection.

/// Messages, enums and gRPC clients of package `strata.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rustdoc::all,
    unreachable_pub
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/client/strata.v1.rs"));
}

/// gRPC servers of package `strata.v1` (messages come from [`v1`] and [`crate::wire`]).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rustdoc::all,
    unreachable_pub
)]
pub mod server {
    include!(concat!(env!("OUT_DIR"), "/server/strata.v1.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of all Strata protos (with
/// comments), for `tonic_reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));

#[cfg(test)]
mod tests {
    /// The descriptor set parses and can back the reflection service.
    #[test]
    fn descriptor_set_serves_reflection() {
        assert!(tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(super::FILE_DESCRIPTOR_SET)
            .build_v1()
            .is_ok());
    }

    /// Enum zero values are the API defaults.
    #[test]
    fn enum_defaults() {
        assert_eq!(super::v1::Acks::default(), super::v1::Acks::Leader);
        assert_eq!(
            super::v1::OffsetSpec::default(),
            super::v1::OffsetSpec::Earliest
        );
        assert_eq!(super::v1::ResetTo::default(), super::v1::ResetTo::Earliest);
        assert_eq!(
            super::v1::AutoOffsetReset::default(),
            super::v1::AutoOffsetReset::Earliest
        );
    }
}
