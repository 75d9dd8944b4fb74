//! A binary WebSocket frame as the server handles it: `ClientFrame::decode` (the socket
//! task's protobuf decode and request/response dispatch), then for a request the tunnel's
//! conversion into the HTTP request the application serves. Must never panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sealpost::ws::frames::ClientFrame;
use sealpost::ws::tunnel::{TunnelIdentity, to_http_request};

fuzz_target!(|data: &[u8]| {
    match ClientFrame::decode(Bytes::copy_from_slice(data)) {
        ClientFrame::Request(request) => {
            let id = request.id;
            let request_headers = request.headers.len();
            if let Ok(http) = to_http_request(request, TunnelIdentity::Anonymous, None) {
                // The request is well formed for actix: path and headers read back.
                let head = http.head();
                assert!(head.uri.path().starts_with('/'));
                assert!(head.headers.len() <= request_headers);
            }
            let _ = id;
        }
        ClientFrame::Response(response) => {
            // What `on_response` reads: the id and the status.
            let _ = (response.id, response.status.unwrap_or(0));
        }
        ClientFrame::Malformed => {}
    }
});
