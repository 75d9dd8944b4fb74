//! A local APNs (issue 16): HTTP/2 only, and checking a request the way Apple documents it
//! ("Sending notification requests to APNs", "Handling notification responses"): the
//! provider token (ES256 under the team's key, its key id, team and age), the topic, push
//! type, priority, expiration, collapse id and payload size. Accepted pushes are recorded;
//! tests can make a token unregistered or bad, or have the next request refused.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sealpost::push::apns::ApnsSettings;
use serde::Deserialize;
use serde_json::{Value, json};

use super::tls::{Received, TlsServer};

/// Apple's limit for a regular notification's payload.
const MAX_PAYLOAD: usize = 4096;
/// Apple refuses a provider token older than an hour.
const PROVIDER_TOKEN_MAX_AGE: u64 = 3600;
const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
];

/// One push APNs accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct ApnsReceived {
    pub token: String,
    pub push_type: String,
    /// `apns-priority`; Apple's default, 10, when absent.
    pub priority: u8,
    pub collapse_id: Option<String>,
    pub topic: String,
    pub expiration: Option<u64>,
    pub payload: Value,
}

/// A new P-256 key as Apple hands it out: a PKCS#8 PEM `.p8` file.
pub fn p8_key() -> String {
    rcgen::KeyPair::generate()
        .expect("a P-256 key")
        .serialize_pem()
}

#[derive(Default)]
struct State {
    received: Vec<ApnsReceived>,
    requests: usize,
    provider_tokens: HashSet<String>,
    unregistered: HashMap<String, i64>,
    bad_tokens: HashSet<String>,
    refusals: VecDeque<(u16, String)>,
}

/// What a request is checked against.
struct Team {
    public_key: DecodingKey,
    key_id: String,
    team_id: String,
    bundle_id: String,
}

struct Refusal {
    status: u16,
    reason: String,
    timestamp: Option<i64>,
}

fn refuse(status: u16, reason: &str) -> Refusal {
    Refusal {
        status,
        reason: reason.to_string(),
        timestamp: None,
    }
}

pub struct ApnsServer {
    server: TlsServer,
    /// The `.p8` the server trusts.
    pub key_pem: String,
    pub key_id: String,
    pub team_id: String,
    pub bundle_id: String,
    state: Arc<Mutex<State>>,
}

impl ApnsServer {
    pub async fn start() -> Self {
        let key = rcgen::KeyPair::generate().expect("a P-256 key");
        let suffix = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let team = Arc::new(Team {
            public_key: DecodingKey::from_ec_pem(key.public_key_pem().as_bytes())
                .expect("a public key"),
            key_id: suffix[..10].to_string(),
            team_id: suffix[10..20].to_string(),
            bundle_id: format!("org.sealpost.test{}", &suffix[20..26]).to_lowercase(),
        });
        let state = Arc::new(Mutex::new(State::default()));
        let server = {
            let (team, state) = (team.clone(), state.clone());
            // Apple offers only h2 by ALPN; a client that offers no ALPN at all still gets
            // an HTTP/1.1 connection here, and is refused by the handler.
            TlsServer::start_with_alpn(&[b"h2"], move |request| {
                let response = handle(&team, &state, request);
                async move { response }
            })
            .await
        };
        Self {
            server,
            key_pem: key.serialize_pem(),
            key_id: team.key_id.clone(),
            team_id: team.team_id.clone(),
            bundle_id: team.bundle_id.clone(),
            state,
        }
    }

    /// Settings that reach this server with its team's key.
    pub fn settings(&self) -> ApnsSettings {
        ApnsSettings {
            key_pem: self.key_pem.clone().into_bytes(),
            key_id: self.key_id.clone(),
            team_id: self.team_id.clone(),
            bundle_id: self.bundle_id.clone(),
            sandbox: false,
            base_url: Some(self.server.url()),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn ca_pem(&self) -> String {
        self.server.ca_pem.clone()
    }

    /// From now on `token` is answered 410 `Unregistered` with this invalidation time.
    pub fn unregister(&self, token: &str, timestamp_ms: i64) {
        self.lock().unregistered.insert(token.into(), timestamp_ms);
    }

    /// From now on `token` is answered 400 `BadDeviceToken`.
    pub fn bad_token(&self, token: &str) {
        self.lock().bad_tokens.insert(token.into());
    }

    /// The next request that passes the checks is refused with `status` and `reason`.
    pub fn fail_next(&self, status: u16, reason: &str) {
        self.lock().refusals.push_back((status, reason.into()));
    }

    /// The pushes accepted so far.
    pub fn received(&self) -> Vec<ApnsReceived> {
        self.lock().received.clone()
    }

    /// Every request that reached the server, refused ones included.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// How many different valid provider tokens were presented.
    pub fn provider_tokens(&self) -> usize {
        self.lock().provider_tokens.len()
    }

    /// Waits until `n` pushes have been accepted; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ApnsReceived> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("APNs got {} of {n} pushes in {timeout:?}", received.len());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn handle(team: &Team, state: &Mutex<State>, request: Received) -> Response<Full<Bytes>> {
    let mut state = state.lock().unwrap();
    state.requests += 1;
    match check(team, &mut state, &request) {
        Ok(push) => {
            state.received.push(push);
            answer(200, None)
        }
        Err(refusal) => {
            let mut body = json!({ "reason": refusal.reason });
            if let Some(timestamp) = refusal.timestamp {
                body["timestamp"] = json!(timestamp);
            }
            answer(refusal.status, Some(body))
        }
    }
}

/// Every answer carries an `apns-id`, as Apple's do; refusals a JSON body.
fn answer(status: u16, body: Option<Value>) -> Response<Full<Bytes>> {
    let builder = Response::builder()
        .status(status)
        .header("apns-id", uuid::Uuid::new_v4().to_string());
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string()))),
        None => builder.body(Full::new(Bytes::new())),
    }
    .expect("a response")
}

fn header<'a>(request: &'a Received, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

fn check(team: &Team, state: &mut State, request: &Received) -> Result<ApnsReceived, Refusal> {
    if request.version != hyper::Version::HTTP_2 {
        // Not an Apple reason: Apple never gets this far with HTTP/1.1 (ALPN is h2 only).
        return Err(refuse(505, "HTTP2Required"));
    }
    if request.method != hyper::Method::POST {
        return Err(refuse(405, "MethodNotAllowed"));
    }
    let token = request
        .uri
        .path()
        .strip_prefix("/3/device/")
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .ok_or_else(|| refuse(404, "BadPath"))?;
    check_provider_token(team, state, request)?;
    let topic = header(request, "apns-topic").ok_or_else(|| refuse(400, "MissingTopic"))?;
    if topic != team.bundle_id {
        return Err(refuse(400, "DeviceTokenNotForTopic"));
    }
    let push_type = header(request, "apns-push-type")
        .filter(|t| PUSH_TYPES.contains(t))
        .ok_or_else(|| refuse(400, "InvalidPushType"))?;
    let priority = match header(request, "apns-priority") {
        None => 10,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| [1, 5, 10].contains(p))
            .ok_or_else(|| refuse(400, "BadPriority"))?,
    };
    // "You must use priority 5 for background notifications; 10 is an error."
    if push_type == "background" && priority != 5 {
        return Err(refuse(400, "BadPriority"));
    }
    let expiration = match header(request, "apns-expiration") {
        None => None,
        Some(e) => Some(
            e.parse::<u64>()
                .map_err(|_| refuse(400, "BadExpirationDate"))?,
        ),
    };
    let collapse_id = header(request, "apns-collapse-id").map(str::to_string);
    if collapse_id.as_ref().is_some_and(|c| c.len() > 64) {
        return Err(refuse(400, "BadCollapseId"));
    }
    if request.body.is_empty() {
        return Err(refuse(400, "PayloadEmpty"));
    }
    if request.body.len() > MAX_PAYLOAD {
        return Err(refuse(413, "PayloadTooLarge"));
    }
    let payload: Value = serde_json::from_slice(&request.body)
        .ok()
        .filter(|p: &Value| p.get("aps").is_some_and(Value::is_object))
        // Not an Apple reason word: its list has none for a payload that is not JSON.
        .ok_or_else(|| refuse(400, "BadPayload"))?;
    if !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(refuse(400, "BadDeviceToken"));
    }
    if let Some((status, reason)) = state.refusals.pop_front() {
        return Err(refuse(status, &reason));
    }
    if state.bad_tokens.contains(token) {
        return Err(refuse(400, "BadDeviceToken"));
    }
    if let Some(timestamp) = state.unregistered.get(token) {
        return Err(Refusal {
            status: 410,
            reason: "Unregistered".into(),
            timestamp: Some(*timestamp),
        });
    }
    Ok(ApnsReceived {
        token: token.to_string(),
        push_type: push_type.to_string(),
        priority,
        collapse_id,
        topic: topic.to_string(),
        expiration,
        payload,
    })
}

#[derive(Deserialize)]
struct ProviderClaims {
    iss: String,
    iat: u64,
}

/// `authorization: bearer <JWT>`: ES256, `kid` the key id, `iss` the team, `iat` within
/// the hour, signed by the team's key.
fn check_provider_token(team: &Team, state: &mut State, request: &Received) -> Result<(), Refusal> {
    let value =
        header(request, "authorization").ok_or_else(|| refuse(403, "MissingProviderToken"))?;
    let invalid = || refuse(403, "InvalidProviderToken");
    let (scheme, jwt) = value.split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid());
    }
    let head = jsonwebtoken::decode_header(jwt).map_err(|_| invalid())?;
    if head.alg != Algorithm::ES256 || head.kid.as_deref() != Some(team.key_id.as_str()) {
        return Err(invalid());
    }
    // Apple's tokens carry no `exp`; their age is judged by `iat`.
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<ProviderClaims>(jwt, &team.public_key, &validation)
        .map_err(|_| invalid())?
        .claims;
    if claims.iss != team.team_id {
        return Err(invalid());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims.iat > now + 60 {
        return Err(invalid());
    }
    if now.saturating_sub(claims.iat) > PROVIDER_TOKEN_MAX_AGE {
        return Err(refuse(403, "ExpiredProviderToken"));
    }
    state.provider_tokens.insert(jwt.to_string());
    Ok(())
}
