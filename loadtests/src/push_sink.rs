//! The push sink: a local stand-in for FCM that sealpost is pointed at (`SEALPOST_FCM_URL`,
//! and the `token_uri` of the service-account JSON it writes), so the `push` scenario can
//! count the wake-ups a pod sends. It answers Google's OAuth token endpoint (the JWT-bearer
//! grant) and the HTTP v1 `messages:send`, counts only well-formed messages that name a
//! token, and serves the counts at `GET /count`. A benchmark sink, not a test of the
//! sender: the assertion's signature is not checked (the server's own tests do that against
//! a strict stand-in); what it must not be is expensive, since it shares the cores with the
//! pod it measures. Plain HTTP, or HTTPS under a CA made for the run.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Access tokens the sink issues start with this; a send must carry one.
const TOKEN_PREFIX: &str = "sink-";
/// Bodies larger than this are refused unread (an FCM message is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;
/// Google's service-account keys are 2048-bit RSA.
const KEY_BITS: usize = 2048;

/// What `GET /count` answers: accepted messages, issued access tokens, refused requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCount {
    pub pushes: u64,
    pub tokens: u64,
    /// Sends refused (no access token of ours, another project, no `message.token`).
    #[serde(default)]
    pub rejected: u64,
}

#[derive(Default)]
struct Counts {
    pushes: AtomicU64,
    tokens: AtomicU64,
    rejected: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> SinkCount {
        SinkCount {
            pushes: self.pushes.load(Ordering::Relaxed),
            tokens: self.tokens.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// A bound sink: where it listens and the credentials that point a server at it.
pub struct PushSink {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    /// `http(s)://127.0.0.1:<port>`: `SEALPOST_FCM_URL`.
    pub url: String,
    /// The service-account JSON (`SEALPOST_FCM_CREDENTIALS_FILE`), its `token_uri` here.
    pub credentials_json: Vec<u8>,
    /// With HTTPS: the CA that signed the sink's certificate (`SEALPOST_PUSH_CA_FILE`).
    pub ca_pem: Option<String>,
    project_id: Arc<str>,
    counts: Arc<Counts>,
}

impl PushSink {
    /// Binds `address` (loopback only) and makes the service account; with `tls`, also a CA
    /// and a certificate for `127.0.0.1` and `localhost` it signed.
    pub async fn bind(address: &str, tls: bool) -> anyhow::Result<Self> {
        crate::options::ensure_loopback(&format!("http://{address}"))?;
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        let (tls, ca_pem) = if tls {
            let (acceptor, ca) = tls_acceptor()?;
            (Some(acceptor), Some(ca))
        } else {
            (None, None)
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{local}");
        let project_id = format!(
            "sealpost-bench-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let credentials_json = service_account(&project_id, &format!("{url}/token"))?;
        Ok(Self {
            listener,
            tls,
            url,
            credentials_json,
            ca_pem,
            project_id: project_id.into(),
            counts: Arc::default(),
        })
    }

    pub fn count(&self) -> SinkCount {
        self.counts.snapshot()
    }

    /// Serves every connection until `stop` resolves.
    pub async fn serve(self, stop: impl Future<Output = ()>) {
        let handler = Arc::new(Handler {
            project_id: self.project_id,
            counts: self.counts,
        });
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                _ = &mut stop => break,
                accepted = self.listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let (handler, tls) = (handler.clone(), self.tls.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler.handle(request).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    }
}

/// The counts of the sink at `base` (`GET /count`).
pub async fn read_count(client: &reqwest::Client, base: &str) -> anyhow::Result<SinkCount> {
    let response = client
        .get(format!("{}/count", base.trim_end_matches('/')))
        .send()
        .await?
        .error_for_status()?;
    Ok(response.json().await?)
}

/// A service-account JSON as Google's console downloads it, with a fresh key.
fn service_account(project_id: &str, token_uri: &str) -> anyhow::Result<Vec<u8>> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, KEY_BITS)?;
    let pem = key.to_pkcs8_pem(LineEnding::LF)?;
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": uuid::Uuid::new_v4().simple().to_string(),
        "private_key": pem.as_str(),
        "client_email": format!("push@{project_id}.iam.gserviceaccount.com"),
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    });
    Ok(serde_json::to_vec_pretty(&json)?)
}

/// A TLS acceptor (HTTP/2 and HTTP/1.1 by ALPN) and the PEM of the CA behind it.
fn tls_acceptor() -> anyhow::Result<(TlsAcceptor, String)> {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sealpost push sink CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?
        .signed_by(&leaf_key, &issuer)?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), ca.pem()))
}

struct Handler {
    project_id: Arc<str>,
    counts: Arc<Counts>,
}

/// The one field of a `messages:send` body the sink needs (serde skips the rest).
#[derive(Deserialize)]
struct SendRequest {
    message: SendMessage,
}

#[derive(Deserialize)]
struct SendMessage {
    token: String,
}

impl Handler {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (head, body) = request.into_parts();
        let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
        };
        let body = body.to_bytes();
        let path = head.uri.path();
        match (&head.method, path) {
            (&Method::GET, "/count") => json(StatusCode::OK, &self.counts.snapshot()),
            (&Method::POST, "/token") => self.token(&body),
            (&Method::POST, _) if send_path(path).is_some() => {
                let authorization = head
                    .headers
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                self.send(path, authorization, &body)
            }
            _ => error(StatusCode::NOT_FOUND, "NOT_FOUND"),
        }
    }

    /// The JWT-bearer grant: a form with the grant type and a JWT-shaped assertion.
    fn token(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let form = String::from_utf8_lossy(body);
        let field = |name: &str| {
            form.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| percent_decode(value))
        };
        let grant_ok = field("grant_type").as_deref() == Some(GRANT_TYPE);
        let assertion_ok = field("assertion").is_some_and(|a| a.split('.').count() == 3);
        if !(grant_ok && assertion_ok) {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_grant", "error_description": "not a JWT-bearer grant"}),
            );
        }
        let n = self.counts.tokens.fetch_add(1, Ordering::Relaxed) + 1;
        json(
            StatusCode::OK,
            &serde_json::json!({
                "access_token": format!("{TOKEN_PREFIX}{n}"),
                "expires_in": 3600,
                "token_type": "Bearer",
            }),
        )
    }

    /// `POST /v1/projects/{project}/messages:send`, counted when well-formed.
    fn send(&self, path: &str, authorization: Option<&str>, body: &[u8]) -> Response<Full<Bytes>> {
        let ours = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| t.starts_with(TOKEN_PREFIX));
        if !ours {
            self.counts.rejected.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
        }
        if send_path(path) != Some(&*self.project_id) {
            self.counts.rejected.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::NOT_FOUND, "NOT_FOUND");
        }
        match serde_json::from_slice::<SendRequest>(body) {
            Ok(send) if !send.message.token.is_empty() => {
                let n = self.counts.pushes.fetch_add(1, Ordering::Relaxed) + 1;
                let name = format!("projects/{}/messages/{n}", self.project_id);
                json(StatusCode::OK, &serde_json::json!({ "name": name }))
            }
            _ => {
                self.counts.rejected.fetch_add(1, Ordering::Relaxed);
                error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
            }
        }
    }
}

/// The project of a `/v1/projects/{project}/messages:send` path (its colon may come
/// percent-encoded).
fn send_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/projects/")?;
    ["/messages:send", "/messages%3Asend", "/messages%3asend"]
        .into_iter()
        .find_map(|suffix| rest.strip_suffix(suffix))
}

/// `%XX` and `+` of a form value (what reqwest's form encoding produces).
fn percent_decode(value: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 2;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(body).unwrap_or_default(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Google's error shape: `{"error":{"code":..,"message":..,"status":..}}`.
fn error(status: StatusCode, name: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({"error": {"code": status.as_u16(), "message": name, "status": name}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_path_names_its_project_with_or_without_an_encoded_colon() {
        assert_eq!(send_path("/v1/projects/p-1/messages:send"), Some("p-1"));
        assert_eq!(send_path("/v1/projects/p-1/messages%3Asend"), Some("p-1"));
        assert_eq!(send_path("/v1/projects/p-1/messages"), None);
        assert_eq!(send_path("/v2/projects/p-1/messages:send"), None);
    }

    #[test]
    fn form_values_are_percent_decoded() {
        assert_eq!(
            percent_decode("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"),
            GRANT_TYPE
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
