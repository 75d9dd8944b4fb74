//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so that building
//! sealpost needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/websocket.proto",
        "proto/envelope.proto",
        "proto/sealed_sender.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
