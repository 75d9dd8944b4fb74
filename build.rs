//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so that building
//! sealpost needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/websocket.proto",
        "proto/envelope.proto",
        "proto/sealed_sender.proto",
        "proto/provisioning.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // `bytes` fields as `Bytes`: envelopes are passed along without copying their content.
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
