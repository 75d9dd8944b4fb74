//! A local WebPush push service (RFC 8030), checking requests as ntfy or Mozilla autopush
//! do: a VAPID `Authorization` (RFC 8292) with a valid ES256 signature under its `k`, `aud`
//! this service's origin, `exp` ahead but at most 24 h, a `sub` contact; `Content-Encoding:
//! aes128gcm` and a `TTL`; a body that decrypts (RFC 8291) with the subscription's keys,
//! which only this service holds. Controls let a test make an endpoint answer otherwise
//! (gone, rate-limited, failing, redirecting) or never answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sealpost::domain::push::{WebPushRegistration, WebPushSubscription};
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256PublicKey};
use web_push_native::jwt_simple::claims::{Audiences, NoCustomClaims};
use web_push_native::jwt_simple::common::VerificationOptions;

use super::tls::{Received, TlsServer, empty_response};

/// A subscription as a browser or UnifiedPush distributor hands it to the app.
#[derive(Clone, Debug)]
pub struct TestSubscription {
    /// `https://127.0.0.1:<port>/push/<random id>`.
    pub endpoint: String,
    /// The receiver's P-256 point, base64url without padding (65 bytes).
    pub public_key: String,
    /// The receiver's auth secret, base64url without padding (16 bytes).
    pub auth: String,
}

impl TestSubscription {
    /// The registration sealpost would store for it.
    pub fn registration(&self, active: bool) -> WebPushRegistration {
        WebPushRegistration {
            subscription: WebPushSubscription::parse(&self.endpoint, &self.public_key, &self.auth)
                .expect("a valid subscription"),
            activation: uuid::Uuid::new_v4(),
            active,
        }
    }

    /// The same subscription reached under another host name (same port, same id).
    pub fn with_host(&self, host: &str) -> TestSubscription {
        TestSubscription {
            endpoint: self.endpoint.replacen("127.0.0.1", host, 1),
            ..self.clone()
        }
    }
}

/// A push the service accepted, decrypted.
#[derive(Clone, Debug)]
pub struct WebPushReceived {
    pub endpoint: String,
    pub plaintext: serde_json::Value,
    pub ttl: u64,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    /// The `k=` of the VAPID header: the sender's public key.
    pub vapid_key: String,
}

#[derive(Clone, Copy)]
enum Behaviour {
    Respond {
        status: u16,
        retry_after: Option<u64>,
    },
    Hang,
}

struct Keys {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

#[derive(Default)]
struct State {
    subscriptions: HashMap<String, Keys>,
    behaviour: HashMap<String, Behaviour>,
    received: Vec<WebPushReceived>,
    requests: usize,
}

/// The push service; it stops when dropped.
pub struct WebPushServer {
    server: TlsServer,
    state: Arc<Mutex<State>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn id_of(endpoint: &str) -> String {
    endpoint
        .rsplit_once("/push/")
        .map(|(_, id)| id.to_owned())
        .unwrap_or_default()
}

impl WebPushServer {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let port = Arc::new(OnceLock::<u16>::new());
        let (handler_state, handler_port) = (state.clone(), port.clone());
        let server = TlsServer::start(move |received| {
            let reply = handle(&handler_state, *handler_port.get().unwrap_or(&0), received);
            async move {
                match reply {
                    Some(response) => response,
                    None => std::future::pending().await,
                }
            }
        })
        .await;
        let _ = port.set(server.address.port());
        Self { server, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh subscription; the service keeps its private key and auth secret.
    pub fn new_subscription(&self) -> TestSubscription {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let auth: [u8; 16] = rand::random();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let subscription = TestSubscription {
            endpoint: format!("{}/push/{id}", self.server.url()),
            public_key: b64(secret.public_key().to_encoded_point(false).as_bytes()),
            auth: b64(&auth),
        };
        self.state().subscriptions.insert(id, Keys { secret, auth });
        subscription
    }

    /// From now on `endpoint` answers `status` (with `Retry-After` when given; a 3xx with a
    /// `Location` elsewhere on this service) without looking at the request.
    pub fn respond(&self, endpoint: &str, status: u16, retry_after: Option<u64>) {
        self.state().behaviour.insert(
            id_of(endpoint),
            Behaviour::Respond {
                status,
                retry_after,
            },
        );
    }

    /// From now on `endpoint` never answers.
    pub fn hang(&self, endpoint: &str) {
        self.state()
            .behaviour
            .insert(id_of(endpoint), Behaviour::Hang);
    }

    pub fn received(&self) -> Vec<WebPushReceived> {
        self.state().received.clone()
    }

    /// Every request that arrived, accepted or not.
    pub fn requests(&self) -> usize {
        self.state().requests
    }

    /// The accepted pushes once there are at least `n`; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<WebPushReceived> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} pushes after {timeout:?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The CA the service's certificate is signed by, PEM.
    pub fn ca_pem(&self) -> String {
        self.server.ca_pem.clone()
    }
}

/// The answer to one request; `None` never answers.
fn handle(state: &Mutex<State>, port: u16, request: Received) -> Option<Response<Full<Bytes>>> {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.requests += 1;
    let path = request.uri.path().to_owned();
    let Some(id) = path.strip_prefix("/push/").map(str::to_owned) else {
        return Some(empty_response(404, &[]));
    };
    if request.method != hyper::Method::POST {
        return Some(empty_response(405, &[]));
    }
    match state.behaviour.get(&id).copied() {
        Some(Behaviour::Hang) => return None,
        Some(Behaviour::Respond {
            status,
            retry_after,
        }) => {
            let retry_after = retry_after.map(|s| s.to_string());
            let location = format!("https://127.0.0.1:{port}/push/elsewhere");
            let mut headers = Vec::new();
            if let Some(seconds) = &retry_after {
                headers.push(("retry-after", seconds.as_str()));
            }
            if (300..400).contains(&status) {
                headers.push(("location", location.as_str()));
            }
            return Some(empty_response(status, &headers));
        }
        None => {}
    }
    let Some(keys) = state.subscriptions.get(&id) else {
        return Some(empty_response(404, &[]));
    };
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let origins = [
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
    ];
    let vapid_key = match check_vapid(header("authorization").as_deref(), &origins) {
        Ok(key) => key,
        Err(status) => return Some(empty_response(status, &[])),
    };
    if header("content-encoding").as_deref() != Some("aes128gcm") {
        return Some(empty_response(400, &[]));
    }
    let Some(ttl) = header("ttl").and_then(|t| t.trim().parse::<u64>().ok()) else {
        return Some(empty_response(400, &[]));
    };
    let auth = web_push_native::Auth::clone_from_slice(&keys.auth);
    let Ok(plaintext) = web_push_native::decrypt(request.body.to_vec(), &keys.secret, &auth) else {
        return Some(empty_response(400, &[]));
    };
    let Ok(plaintext) = serde_json::from_slice(&plaintext) else {
        return Some(empty_response(400, &[]));
    };
    let endpoint = format!("https://127.0.0.1:{port}{path}");
    state.received.push(WebPushReceived {
        endpoint,
        plaintext,
        ttl,
        urgency: header("urgency"),
        topic: header("topic"),
        vapid_key,
    });
    let location = format!("https://127.0.0.1:{port}/message/{}", state.received.len());
    Some(empty_response(201, &[("location", location.as_str())]))
}

/// The VAPID key (`k=`) of a valid `Authorization: vapid t=..,k=..`; else 401 (missing,
/// malformed, badly signed, expired) or 403 (signed, but not for us or not acceptable).
fn check_vapid(authorization: Option<&str>, origins: &[String]) -> Result<String, u16> {
    let (scheme, params) = authorization.ok_or(401u16)?.split_once(' ').ok_or(401u16)?;
    if !scheme.eq_ignore_ascii_case("vapid") {
        return Err(401);
    }
    let (mut token, mut key) = (None, None);
    for param in params.split(',') {
        let param = param.trim();
        if let Some(t) = param.strip_prefix("t=") {
            token = Some(t);
        } else if let Some(k) = param.strip_prefix("k=") {
            key = Some(k);
        }
    }
    let (token, key) = (token.ok_or(401u16)?, key.ok_or(401u16)?);
    let point = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key)
        .map_err(|_| 401u16)?;
    if point.len() != 65 || point[0] != 4 {
        return Err(401);
    }
    let public = ES256PublicKey::from_bytes(&point).map_err(|_| 401u16)?;
    let options = VerificationOptions {
        // VAPID needs no iat or nbf; exp is checked exactly, below and here.
        accept_future: true,
        time_tolerance: Some(Duration::ZERO.into()),
        ..Default::default()
    };
    let claims = public
        .verify_token::<NoCustomClaims>(token, Some(options))
        .map_err(|_| 401u16)?;
    match &claims.audiences {
        Some(Audiences::AsString(aud)) if origins.contains(aud) => {}
        _ => return Err(403),
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let exp = claims.expires_at.ok_or(403u16)?.as_secs();
    if exp <= now || exp > now + 24 * 3600 {
        return Err(403);
    }
    match claims.subject.as_deref() {
        Some(sub) if sub.starts_with("mailto:") || sub.starts_with("https:") => {}
        _ => return Err(403),
    }
    Ok(key.to_owned())
}
