//! Calling relays (PROTOCOL.md 15.2): short-lived TURN credentials made here for the
//! coturn relays that share our secret, and the relays' URLs, by name and by address.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::config::{Clock, TurnConfig};
use crate::domain::calling::{TurnCredentials, turn_credentials, urls_with_ips};
use crate::error::AppError;
use crate::identity::AuthenticatedDevice;
use crate::limits::{Limit, RateLimiter};

/// How long the relay host's addresses are reused before it is looked up again.
const ADDRESSES_FRESH_FOR: Duration = Duration::from_secs(60);
/// A lookup slower than this gives no IP URLs this time rather than a slow answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The relay host's addresses and when they were looked up.
type LookedUp = (Instant, Vec<IpAddr>);

/// One relay as `GET /v2/calling/relays` lists it.
#[derive(Clone, Debug)]
pub struct Relay {
    pub credentials: TurnCredentials,
    /// What the client is told to cache them for, in seconds.
    pub ttl_s: u64,
    pub urls: Vec<String>,
    pub urls_with_ips: Vec<String>,
    pub hostname: Option<String>,
}

#[derive(Clone)]
pub struct CallingService {
    turn: Option<Arc<TurnConfig>>,
    limiter: RateLimiter,
    clock: Clock,
    /// The relay host's last addresses and when they were looked up. A std mutex: held
    /// only to copy, never across an await.
    addresses: Arc<Mutex<Option<LookedUp>>>,
}

impl CallingService {
    pub fn new(turn: Option<TurnConfig>, limiter: RateLimiter, clock: Clock) -> Self {
        Self {
            turn: turn.map(Arc::new),
            limiter,
            clock,
            addresses: Arc::new(Mutex::new(None)),
        }
    }

    /// The relays this caller may use: none when no relay is configured. Limited per account
    /// (`getCallingRelays`) either way, as Signal does.
    pub async fn relays(&self, caller: AuthenticatedDevice) -> Result<Vec<Relay>, AppError> {
        self.limiter
            .check(Limit::GetCallingRelays, &caller.aci.to_string())
            .await?;
        let Some(turn) = &self.turn else {
            return Ok(Vec::new());
        };
        let ttl_s = turn.ttl.as_secs();
        // Valid twice as long as the client caches it, so a cached credential still works.
        let expires_at_s = self.clock.now_ms() / 1000 + 2 * ttl_s as i64;
        let mut tag = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut tag);
        let credentials = turn_credentials(turn.secret.expose().as_bytes(), expires_at_s, tag);
        let urls_with_ips = match &turn.hostname {
            Some(host) => urls_with_ips(&turn.urls_with_ips, &self.addresses_of(host).await),
            None => Vec::new(),
        };
        Ok(vec![Relay {
            credentials,
            ttl_s,
            urls: turn.urls.clone(),
            urls_with_ips,
            hostname: turn.hostname.clone(),
        }])
    }

    /// Every A and AAAA address of `host` (IPv4 first), from a minute-old lookup at most.
    async fn addresses_of(&self, host: &str) -> Vec<IpAddr> {
        if let Some((at, addresses)) = self.cached()
            && at.elapsed() < ADDRESSES_FRESH_FOR
        {
            return addresses;
        }
        let looked_up = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, 0)))
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match looked_up {
            Ok(found) => {
                let mut addresses: Vec<IpAddr> = Vec::new();
                for address in found.map(|a| a.ip()) {
                    if !addresses.contains(&address) {
                        addresses.push(address);
                    }
                }
                addresses.sort_by_key(|a| a.is_ipv6());
                if let Ok(mut cached) = self.addresses.lock() {
                    *cached = Some((Instant::now(), addresses.clone()));
                }
                addresses
            }
            Err(error) => {
                tracing::warn!(%host, %error, "the TURN host name did not resolve; no IP URLs this time");
                // The last addresses known, however old, beat none.
                self.cached().map(|(_, a)| a).unwrap_or_default()
            }
        }
    }

    fn cached(&self) -> Option<LookedUp> {
        self.addresses.lock().ok().and_then(|c| c.clone())
    }
}
