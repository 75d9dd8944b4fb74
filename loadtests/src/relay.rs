//! The bare relay: the ceiling every throughput figure is compared with. A minimal
//! tokio-tungstenite WebSocket server with no authentication, no storage and no protobuf
//! tunnel: a client connects as `/?id=N`, and each binary frame it sends is forwarded to the
//! named peer. It keeps the same frame count per message as sealpost (the send is answered,
//! the delivery acknowledged), so the same client load runs against both. TCP_NODELAY and
//! 4 KiB read buffers, as BENCHMARKS.md found necessary.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The relay's frames: a kind byte, then big-endian u64s, then the payload.
/// The 4 KiB read buffer both ends use, the relay and every load-generator socket
/// (tungstenite's default is 128 KiB per socket).
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

pub mod frame {
    use super::*;

    /// client -> relay: `[1][to][request][payload]`
    pub const SEND: u8 = 1;
    /// relay -> peer: `[2][from][request][payload]`
    pub const DELIVER: u8 = 2;
    /// relay -> sender: `[3][request]`, the send was forwarded
    pub const OK: u8 = 3;
    /// relay -> sender: `[4][request]`, nobody is connected under that id
    pub const NO_PEER: u8 = 4;
    /// peer -> relay: `[5][request]`, the delivery was received (dropped by the relay)
    pub const ACK: u8 = 5;
    pub const SEND_HEADER: usize = 17;

    pub enum Parsed<'a> {
        Send {
            to: u64,
            request: u64,
            payload: &'a [u8],
        },
        Deliver {
            request: u64,
            payload: &'a [u8],
        },
        Ok {
            request: u64,
        },
        NoPeer {
            request: u64,
        },
        Ack,
    }

    fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    }

    pub fn parse(bytes: &[u8]) -> Option<Parsed<'_>> {
        match *bytes.first()? {
            SEND => Some(Parsed::Send {
                to: u64_at(bytes, 1)?,
                request: u64_at(bytes, 9)?,
                payload: &bytes[SEND_HEADER..],
            }),
            DELIVER => Some(Parsed::Deliver {
                request: u64_at(bytes, 9)?,
                payload: bytes.get(SEND_HEADER..)?,
            }),
            OK => Some(Parsed::Ok {
                request: u64_at(bytes, 1)?,
            }),
            NO_PEER => Some(Parsed::NoPeer {
                request: u64_at(bytes, 1)?,
            }),
            ACK => Some(Parsed::Ack),
            _ => None,
        }
    }

    pub fn short(kind: u8, request: u64) -> Bytes {
        let mut frame = BytesMut::with_capacity(9);
        frame.put_u8(kind);
        frame.put_u64(request);
        frame.freeze()
    }

    pub fn ack(request: u64) -> Bytes {
        short(ACK, request)
    }
}

type Peers = Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>;

/// Serves the relay on `listener` until `stop` resolves.
pub async fn serve(listener: TcpListener, stop: impl Future<Output = ()>) {
    let peers = Peers::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(connection(stream, peers.clone()));
            }
        }
    }
}

/// Removes a peer's entry however its task ends (unless a newer socket took the id).
struct Registered {
    peers: Peers,
    id: u64,
    sender: mpsc::Sender<Message>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut peers) = self.peers.lock()
            && peers
                .get(&self.id)
                .is_some_and(|s| s.same_channel(&self.sender))
        {
            peers.remove(&self.id);
        }
    }
}

async fn connection(stream: TcpStream, peers: Peers) {
    let _ = stream.set_nodelay(true);
    let mut id = None;
    // tungstenite's callback signature fixes the (large) error type.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        id = request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("id="))
            .and_then(|v| v.parse::<u64>().ok());
        Ok(response)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(websocket_config()))
            .await
    else {
        return;
    };
    let Some(id) = id else { return };
    let (tx, mut outgoing) = mpsc::channel::<Message>(256);
    // std Mutex: a hash-map operation, never held across an await.
    if let Ok(mut map) = peers.lock() {
        map.insert(id, tx.clone());
    }
    let _registered = Registered {
        peers: peers.clone(),
        id,
        sender: tx.clone(),
    };
    let (mut sink, mut stream) = ws.split();
    let writer = async move {
        while let Some(message) = outgoing.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(more) = outgoing.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        while let Some(Ok(message)) = stream.next().await {
            let Message::Binary(bytes) = message else {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                continue;
            };
            if let Some(frame::Parsed::Send {
                to,
                request,
                payload,
            }) = frame::parse(&bytes)
            {
                let target = peers.lock().ok().and_then(|p| p.get(&to).cloned());
                let answer = match target {
                    Some(target) => {
                        let mut deliver = BytesMut::with_capacity(bytes.len());
                        deliver.put_u8(frame::DELIVER);
                        deliver.put_u64(id);
                        deliver.put_u64(request);
                        deliver.put_slice(payload);
                        match target.send(Message::Binary(deliver.freeze())).await {
                            Ok(()) => frame::OK,
                            Err(_) => frame::NO_PEER,
                        }
                    }
                    None => frame::NO_PEER,
                };
                if tx
                    .send(Message::Binary(frame::short(answer, request)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
}
