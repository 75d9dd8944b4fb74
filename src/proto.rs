//! Protobuf messages generated from `proto/` at build time (see `build.rs`).

/// `textsecure`: the WebSocket tunnel and the envelope.
pub mod textsecure {
    include!(concat!(env!("OUT_DIR"), "/textsecure.rs"));
}

/// `sealed_sender`: server and sender certificates.
pub mod sealed_sender {
    include!(concat!(env!("OUT_DIR"), "/sealed_sender.rs"));
}
