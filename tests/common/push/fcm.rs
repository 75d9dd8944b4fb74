//! A local FCM (issue 16): Google's OAuth token endpoint for service accounts (the
//! JWT-bearer grant, checked as Google does: RS256 under the account's key, issuer,
//! audience, scope, an hour at most) and the HTTP v1 `messages:send` (an issued access
//! token, the project, a valid message), with Google's error bodies. Accepted messages
//! are recorded; tests can make a token unregistered, revoke access tokens, or have the
//! next send refused.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::Generate;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use sealpost::push::fcm::FcmSettings;
use serde::Deserialize;
use serde_json::{Value, json};

use super::tls::{Received, TlsServer, json_response};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// One message FCM accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct FcmReceived {
    pub token: String,
    pub data: BTreeMap<String, String>,
    /// `android.priority`.
    pub priority: Option<String>,
    /// `android.ttl`.
    pub ttl: Option<String>,
    /// The whole request body.
    pub body: Value,
}

/// A new RSA private key as a service-account JSON holds it (PKCS#8 PEM).
pub fn rsa_key_pem() -> String {
    rsa::PrivateKey::generate()
        .to_pkcs8_pem(LineEnding::LF)
        .expect("a PEM")
        .to_string()
}

#[derive(Default)]
struct State {
    received: Vec<FcmReceived>,
    requests: usize,
    token_requests: usize,
    issued: HashSet<String>,
    unregistered: HashSet<String>,
    refusals: VecDeque<(u16, Option<u64>)>,
}

/// What requests are checked against.
struct Account {
    public_key: DecodingKey,
    project_id: String,
    client_email: String,
    private_key_id: String,
    /// Set once the server knows its port.
    token_uri: Mutex<String>,
}

pub struct FcmServer {
    server: TlsServer,
    pub project_id: String,
    /// The service-account JSON, as Google's console downloads it.
    pub credentials_json: Vec<u8>,
    state: Arc<Mutex<State>>,
}

impl FcmServer {
    pub async fn start() -> Self {
        let key = rsa::PrivateKey::generate();
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("a public PEM");
        let private_pem = key.to_pkcs8_pem(LineEnding::LF).expect("a PEM").to_string();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let project_id = format!("sealpost-test-{}", &suffix[..8]);
        let account = Arc::new(Account {
            public_key: DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("a public key"),
            client_email: format!("push@{project_id}.iam.gserviceaccount.com"),
            private_key_id: suffix[8..].to_string(),
            project_id: project_id.clone(),
            token_uri: Mutex::new(String::new()),
        });
        let state = Arc::new(Mutex::new(State::default()));
        let server = {
            let (account, state) = (account.clone(), state.clone());
            TlsServer::start(move |request| {
                let response = handle(&account, &state, request);
                async move { response }
            })
            .await
        };
        let token_uri = format!("{}/token", server.url());
        *account.token_uri.lock().unwrap() = token_uri.clone();
        let credentials = json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": account.private_key_id,
            "private_key": private_pem,
            "client_email": account.client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        });
        Self {
            server,
            project_id,
            credentials_json: serde_json::to_vec_pretty(&credentials).unwrap(),
            state,
        }
    }

    /// Settings that reach this server with its service account.
    pub fn settings(&self) -> FcmSettings {
        FcmSettings {
            credentials_json: self.credentials_json.clone(),
            base_url: Some(self.server.url()),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn ca_pem(&self) -> String {
        self.server.ca_pem.clone()
    }

    /// From now on `token` is answered 404 `UNREGISTERED`.
    pub fn unregister(&self, token: &str) {
        self.lock().unregistered.insert(token.into());
    }

    /// The next valid send is refused with `status` (Google's body for it) and, when
    /// given, `Retry-After`.
    pub fn fail_next(&self, status: u16, retry_after: Option<u64>) {
        self.lock().refusals.push_back((status, retry_after));
    }

    /// Every access token issued so far stops being accepted (401), as after a revocation.
    pub fn revoke_access_tokens(&self) {
        self.lock().issued.clear();
    }

    pub fn received(&self) -> Vec<FcmReceived> {
        self.lock().received.clone()
    }

    /// Every `messages:send` request, refused ones included.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Every token request, refused ones included.
    pub fn token_requests(&self) -> usize {
        self.lock().token_requests
    }

    /// Waits until `n` messages have been accepted; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<FcmReceived> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("FCM got {} of {n} messages in {timeout:?}", received.len());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn handle(account: &Account, state: &Mutex<State>, request: Received) -> Response<Full<Bytes>> {
    let mut state = state.lock().unwrap();
    if request.uri.path() == "/token" {
        state.token_requests += 1;
        return match grant(account, &request) {
            Ok(()) => {
                let access_token = format!("ya29.test-{}", uuid::Uuid::new_v4().simple());
                state.issued.insert(access_token.clone());
                json_response(
                    200,
                    // Google's tokens last an hour, announced as 3599 seconds.
                    json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}),
                )
            }
            Err((error, description)) => json_response(
                400,
                json!({"error": error, "error_description": description}),
            ),
        };
    }
    state.requests += 1;
    match send(account, &mut state, &request) {
        Ok(push) => {
            state.received.push(push);
            let id = rand::random::<u64>();
            json_response(
                200,
                json!({"name": format!("projects/{}/messages/0:{id}", account.project_id)}),
            )
        }
        Err(refused) => google_response(refused),
    }
}

#[derive(Deserialize)]
struct GrantClaims {
    scope: String,
    iat: u64,
    exp: u64,
}

/// The JWT-bearer grant (RFC 7523) as Google's token endpoint checks it.
fn grant(account: &Account, request: &Received) -> Result<(), (&'static str, &'static str)> {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect();
    if request.method != hyper::Method::POST {
        return Err(("invalid_request", "Invalid request method."));
    }
    if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
        return Err(("unsupported_grant_type", "Invalid grant_type."));
    }
    let assertion = form
        .get("assertion")
        .ok_or(("invalid_request", "Missing required parameter: assertion"))?;
    let signature = ("invalid_grant", "Invalid JWT Signature.");
    let head = jsonwebtoken::decode_header(assertion).map_err(|_| signature)?;
    if head.alg != Algorithm::RS256
        || head
            .kid
            .as_ref()
            .is_some_and(|kid| *kid != account.private_key_id)
    {
        return Err(signature);
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    validation.set_issuer(&[&account.client_email]);
    validation.set_audience(&[account.token_uri.lock().unwrap().as_str()]);
    let claims = jsonwebtoken::decode::<GrantClaims>(assertion, &account.public_key, &validation)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => signature,
            _ => ("invalid_grant", "Invalid JWT: claims."),
        })?
        .claims;
    if claims.exp.saturating_sub(claims.iat) > 3600 {
        return Err((
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        ));
    }
    if !claims.scope.split(' ').any(|s| s == SCOPE) {
        return Err((
            "invalid_scope",
            "Invalid oauth scope or ID token audience provided.",
        ));
    }
    Ok(())
}

/// A refused send: answered with Google's error body for `status`.
struct GoogleError {
    status: u16,
    message: &'static str,
    retry_after: Option<u64>,
    /// FCM's `errorCode` detail.
    fcm_code: Option<&'static str>,
}

/// A refusal with the error code FCM gives with `status` (none for 401, 403 and 404: a
/// 404 is `UNREGISTERED` only for a token, see [`unregistered`]).
fn google_error(status: u16, message: &'static str) -> GoogleError {
    let fcm_code = match status {
        400 => Some("INVALID_ARGUMENT"),
        401 | 403 | 404 => None,
        429 => Some("QUOTA_EXCEEDED"),
        503 => Some("UNAVAILABLE"),
        _ => Some("INTERNAL"),
    };
    GoogleError {
        status,
        message,
        retry_after: None,
        fcm_code,
    }
}

/// FCM's answer for a token that is no more, as FCM words it.
fn unregistered() -> GoogleError {
    GoogleError {
        fcm_code: Some("UNREGISTERED"),
        ..google_error(404, "Requested entity was not found.")
    }
}

/// Google's error body.
fn google_response(refused: GoogleError) -> Response<Full<Bytes>> {
    let status = refused.status;
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let mut error = json!({"code": status, "message": refused.message, "status": name});
    if let Some(code) = refused.fcm_code {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code,
        }]);
    }
    let mut response = json_response(status, json!({ "error": error }));
    if let Some(seconds) = refused.retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}

fn send(
    account: &Account,
    state: &mut State,
    request: &Received,
) -> Result<FcmReceived, GoogleError> {
    let project = request
        .uri
        .path()
        .strip_prefix("/v1/projects/")
        .and_then(|rest| rest.strip_suffix("/messages:send"))
        .filter(|_| request.method == hyper::Method::POST)
        .ok_or_else(|| google_error(404, "The requested URL was not found on this server."))?;
    let bearer = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|token| state.issued.contains(token)) {
        return Err(google_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project.",
        ));
    }
    if project != account.project_id {
        return Err(google_error(
            403,
            "Permission 'cloudmessaging.messages.create' denied on resource (or it may not exist).",
        ));
    }
    let push = message(&request.body).map_err(|why| google_error(400, why))?;
    if let Some((status, retry_after)) = state.refusals.pop_front() {
        return Err(GoogleError {
            retry_after,
            ..google_error(status, "Refused as the test asked.")
        });
    }
    if state.unregistered.contains(&push.token) {
        return Err(unregistered());
    }
    Ok(push)
}

/// A v1 `Message` with a token target, string data and a valid Android config.
fn message(body: &[u8]) -> Result<FcmReceived, &'static str> {
    let body: Value = serde_json::from_slice(body).map_err(|_| "Invalid JSON payload received.")?;
    let message = body
        .get("message")
        .and_then(Value::as_object)
        .ok_or("Invalid JSON payload received. Unknown name or missing \"message\".")?;
    if message.contains_key("topic") || message.contains_key("condition") {
        return Err("Exactly one of token, topic or condition must be specified.");
    }
    let token = message
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("The registration token is not a valid FCM registration token")?;
    let mut data = BTreeMap::new();
    if let Some(values) = message.get("data") {
        let values = values
            .as_object()
            .ok_or("Invalid value at 'message.data'")?;
        for (key, value) in values {
            let value = value
                .as_str()
                .ok_or("Invalid value at 'message.data' (type.googleapis.com/google.protobuf.Map), a string is required")?;
            data.insert(key.clone(), value.to_string());
        }
    }
    let android = message.get("android");
    let priority = match android.and_then(|a| a.get("priority")) {
        None => None,
        Some(p) => Some(
            p.as_str()
                .filter(|p| ["HIGH", "NORMAL"].contains(p))
                .ok_or("Invalid value at 'message.android.priority'")?
                .to_string(),
        ),
    };
    let ttl = match android.and_then(|a| a.get("ttl")) {
        None => None,
        Some(t) => {
            let t = t.as_str().ok_or("Invalid value at 'message.android.ttl'")?;
            let seconds = t
                .strip_suffix('s')
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| *s >= 0.0)
                .ok_or("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)")?;
            // FCM keeps a message at most four weeks.
            if seconds > 2_419_200.0 {
                return Err("Invalid value at 'message.android.ttl': at most 28 days");
            }
            Some(t.to_string())
        }
    };
    Ok(FcmReceived {
        token: token.to_string(),
        data,
        priority,
        ttl,
        body,
    })
}
