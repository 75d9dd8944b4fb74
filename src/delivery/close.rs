//! Why a socket closes: the one close-code type of every socket kind, with the numbers it
//! sends and the bounded metric labels it counts under.

/// A WebSocket close code, as the server sends it or as a client closed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the client stayed silent for the idle timeout.
    Idle,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: a frame the WebSocket protocol refuses.
    ProtocolError,
    /// 1005: the client closed without a code.
    NoStatus,
    /// 1007: a binary frame that is not a `WebSocketMessage`.
    Malformed,
    /// 1008: the client read nothing for the write timeout while the server wrote.
    Stalled,
    /// 1009: a frame or message over the size bound.
    TooBig,
    /// 1011: the server could not go on (a store did not answer); the client reconnects.
    Unavailable,
    /// 4401: the device or account was removed.
    Removed,
    /// 4409: a newer socket for the same device opened.
    Displaced,
    /// Any other code a client closed with.
    Other(u16),
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Idle => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::NoStatus => 1005,
            CloseCode::Malformed => 1007,
            CloseCode::Stalled => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Unavailable => 1011,
            CloseCode::Removed => 4401,
            CloseCode::Displaced => 4409,
            CloseCode::Other(code) => code,
        }
    }

    pub fn from_code(code: u16) -> Self {
        match code {
            1000 => CloseCode::Idle,
            1001 => CloseCode::GoingAway,
            1002 => CloseCode::ProtocolError,
            1005 => CloseCode::NoStatus,
            1007 => CloseCode::Malformed,
            1008 => CloseCode::Stalled,
            1009 => CloseCode::TooBig,
            1011 => CloseCode::Unavailable,
            4401 => CloseCode::Removed,
            4409 => CloseCode::Displaced,
            other => CloseCode::Other(other),
        }
    }

    /// The code as a bounded metric label: its number, or `other`.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Idle => "1000",
            CloseCode::GoingAway => "1001",
            CloseCode::ProtocolError => "1002",
            CloseCode::NoStatus => "1005",
            CloseCode::Malformed => "1007",
            CloseCode::Stalled => "1008",
            CloseCode::TooBig => "1009",
            CloseCode::Unavailable => "1011",
            CloseCode::Removed => "4401",
            CloseCode::Displaced => "4409",
            CloseCode::Other(_) => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CloseCode;

    #[test]
    fn codes_round_trip_and_unknown_ones_share_one_label() {
        for code in [
            1000, 1001, 1002, 1005, 1007, 1008, 1009, 1011, 4401, 4409, 3000,
        ] {
            let close = CloseCode::from_code(code);
            assert_eq!(close.code(), code);
            let label = close.label();
            assert!(label == code.to_string() || label == "other");
        }
        assert_eq!(CloseCode::from_code(4000).label(), "other");
        assert_eq!(CloseCode::from_code(4409).label(), "4409");
    }
}
