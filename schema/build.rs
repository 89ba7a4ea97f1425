//! Generate the tonic client and server for the Ingest service, with the raw
//! codec (no protobuf): see wirefold.proto for the contract.
fn main() {
    let ingest = tonic_build::manual::Service::builder()
        .name("Ingest")
        .package("wirefold.v1")
        .method(
            tonic_build::manual::Method::builder()
                .name("stream")
                .route_name("Stream")
                .input_type("crate::rpc::FlowBatchBytes")
                .output_type("crate::rpc::Ack")
                .codec_path("crate::rpc::WireCodec")
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().compile(&[ingest]);
    println!("cargo:rerun-if-changed=build.rs");
}
