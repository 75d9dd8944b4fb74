//! The `WebSocketMessage` frames a socket writes and the client frames it reads.

use bytes::Bytes;
use prost::Message as _;

use crate::proto::textsecure::{
    WebSocketMessage, WebSocketRequestMessage, WebSocketResponseMessage, web_socket_message,
};

fn encode(message: WebSocketMessage) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// A server request (`PUT path`), with the `X-Signal-Timestamp` header when `timestamped`.
pub(super) fn request(id: u64, path: &str, body: Option<Bytes>, timestamped: bool) -> Bytes {
    let headers = if timestamped {
        vec![format!(
            "X-Signal-Timestamp:{}",
            crate::domain::clock::now_ms()
        )]
    } else {
        Vec::new()
    };
    encode(WebSocketMessage {
        r#type: Some(web_socket_message::Type::Request as i32),
        request: Some(WebSocketRequestMessage {
            verb: Some("PUT".into()),
            path: Some(path.into()),
            body,
            headers,
            id: Some(id),
        }),
        response: None,
    })
}

/// The answer to a client's request.
pub(super) fn response(response: WebSocketResponseMessage) -> Bytes {
    encode(WebSocketMessage {
        r#type: Some(web_socket_message::Type::Response as i32),
        request: None,
        response: Some(response),
    })
}

/// What a binary frame from the client is. Pure, so the fuzz target `websocket_frame` drives
/// exactly the decoding the socket task does.
#[derive(Debug)]
pub enum ClientFrame {
    Request(WebSocketRequestMessage),
    Response(WebSocketResponseMessage),
    /// Not a `WebSocketMessage`, or a type without its part: the socket closes with 1007.
    Malformed,
}

impl ClientFrame {
    pub fn decode(bytes: Bytes) -> Self {
        let Ok(message) = WebSocketMessage::decode(bytes) else {
            return Self::Malformed;
        };
        match (message.r#type, message.request, message.response) {
            (Some(t), Some(request), _) if t == web_socket_message::Type::Request as i32 => {
                Self::Request(request)
            }
            (Some(t), _, Some(response)) if t == web_socket_message::Type::Response as i32 => {
                Self::Response(response)
            }
            _ => Self::Malformed,
        }
    }
}
