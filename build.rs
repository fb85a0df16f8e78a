//! Compiles `proto/strata/v1/*.proto` with `protox` (pure Rust, no system `protoc`).
//!
//! Outputs, all under `OUT_DIR`:
//! - `strata_descriptor.bin`: the encoded `FileDescriptorSet` (with source info,
//!   so comments show up), served by tonic-reflection.
//! - `client/strata.v1.rs`: every message and enum plus the gRPC clients. Included
//!   as `crate::proto::v1`.
//! - `server/strata.v1.rs`: the gRPC servers only. Every message type is taken
//!   from `crate::proto::v1` (extern path), except the three messages that have
//!   hand-written zero-copy server types in `crate::wire`. The servers encode
//!   with `crate::api::codec::ExactCodec`.

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "strata/v1/log.proto",
    "strata/v1/admin.proto",
    "strata/v1/groups.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{file}");
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTO_FILES)?;
    let fds = compiler.file_descriptor_set();
    std::fs::write(
        out_dir.join("strata_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // (a) Messages and clients, for the client library and the CLI.
    let client_dir = out_dir.join("client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .emit_rerun_if_changed(false)
        .out_dir(&client_dir)
        .compile_fds(fds.clone())?;

    // (b) Servers only. All message types come from (a) via the package-wide
    // extern path; prost-build resolves an exact extern path before any prefix
    // (see `ExternPaths::resolve_ident`), so the three more specific entries
    // below win and the server traits use the zero-copy wire types.
    let server_dir = out_dir.join("server");
    std::fs::create_dir_all(&server_dir)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .emit_rerun_if_changed(false)
        .out_dir(&server_dir)
        // One allocation of the exact size per response (see `api::codec`).
        .codec_path("crate::api::codec::ExactCodec")
        .extern_path(".strata.v1", "crate::proto::v1")
        .extern_path(
            ".strata.v1.ProduceRequest",
            "crate::wire::ProduceRequestWire",
        )
        .extern_path(".strata.v1.FetchResponse", "crate::wire::FetchResponseWire")
        .extern_path(".strata.v1.ConsumeEvent", "crate::wire::ConsumeEventWire")
        .compile_fds(fds)?;

    Ok(())
}
