//! The attachment upload form through the real server (PROTOCOL.md 12.1, 12.3): `cdn: 3`, a
//! 20-character key, an HS256 upload token whose claims name that key and length and expire
//! in 24 h, the `Upload-Metadata` header, the TUS location; 400 and 413 for bad lengths; the
//! `attachmentCreate` and `attachmentCreateBytes` limits; the public download with one
//! `Range` (200, 206, 416, `HEAD`, 404), from a bucket too, and redirected to a presigned
//! bucket URL when asked. Who may call them is in the authorization matrix.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sealpost::client::DeviceCredentials;
use sealpost::domain::attachments::{DEFAULT_MAX_ATTACHMENT_BYTES, UploadClaims};
use sealpost::limits::Limit;
use sealpost::service::attachments::UPLOAD_SECRET;
use serde_json::Value;

use crate::common::{Backend, TestApp, TestStores, register_with};

async fn form(app: &TestApp, who: &DeviceCredentials, query: &str) -> (u16, Value) {
    let response = app
        .client
        .http()
        .get(
            app.client
                .url(&format!("/v4/attachments/form/upload{query}")),
        )
        .header("Authorization", who.authorization())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn claims(app: &TestApp, body: &Value) -> UploadClaims {
    let secret = app.stores.secrets.secret(UPLOAD_SECRET).await.unwrap();
    let token = body["headers"]["Authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .expect("a bearer token");
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&["attachments"]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    jsonwebtoken::decode::<UploadClaims>(
        token,
        &DecodingKey::from_secret(&secret).unwrap(),
        &validation,
    )
    .expect("the token verifies under the server's secret")
    .claims
}

async fn the_form_is_signals_cdn3_descriptor(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.rate_limits.enabled = false;
    let app = TestApp::start(config).await;
    let (alice, _) = register_with(&app, None, false).await;

    let (status, body) = form(&app, &alice, "?uploadLength=12345").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cdn"], 3);
    let key = body["key"].as_str().unwrap();
    assert_eq!(key.len(), 20);
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(
        body["signedUploadLocation"],
        format!("{}/upload/attachments", app.address)
    );
    let metadata = base64::engine::general_purpose::STANDARD.encode(key);
    assert_eq!(
        body["headers"]["Upload-Metadata"],
        format!("filename {metadata}")
    );
    let claims = claims(&app, &body).await;
    assert_eq!(
        (claims.aud.as_str(), claims.sub.as_str()),
        ("attachments", key)
    );
    assert_eq!(claims.max_len, 12345);
    assert_eq!(claims.exp - claims.iat, 24 * 3600);

    // No length: the maximum; each form a fresh key.
    let (status, other) = form(&app, &alice, "").await;
    assert_eq!(status, 200);
    assert_ne!(other["key"], body["key"]);
    assert_eq!(claims_of(&app, &other).await, DEFAULT_MAX_ATTACHMENT_BYTES);

    for (query, expected) in [
        ("?uploadLength=0", 400),
        ("?uploadLength=-1", 400),
        ("?uploadLength=ten", 400),
        (
            &*format!("?uploadLength={}", DEFAULT_MAX_ATTACHMENT_BYTES + 1),
            413,
        ),
    ] {
        let (status, body) = form(&app, &alice, query).await;
        assert_eq!(status, expected, "{query}: {body}");
        assert_eq!(body["code"], expected, "a JSON body: {body}");
    }
    app.stop().await;
}

async fn claims_of(app: &TestApp, body: &Value) -> u64 {
    claims(app, body).await.max_len
}

async fn forms_are_limited_by_count_and_by_bytes(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config_with_limit(Limit::AttachmentCreate, 2, 60_000.0)).await;
    let (alice, _) = register_with(&app, None, false).await;
    assert_eq!(form(&app, &alice, "").await.0, 200);
    assert_eq!(form(&app, &alice, "").await.0, 200);
    let (status, body) = form(&app, &alice, "").await;
    assert_eq!(status, 429, "{body}");
    app.stop().await;

    let stores = TestStores::new(backend).await;
    let app =
        TestApp::start(stores.config_with_limit(Limit::AttachmentCreateBytes, 1000, 60_000.0))
            .await;
    let (bob, _) = register_with(&app, None, false).await;
    assert_eq!(form(&app, &bob, "?uploadLength=600").await.0, 200);
    assert_eq!(form(&app, &bob, "?uploadLength=600").await.0, 429);
    // A form without a length charges no bytes.
    assert_eq!(form(&app, &bob, "").await.0, 200);
    app.stop().await;

    // A form refused for its bytes costs no count permit (Signal returns it).
    let stores = TestStores::new(backend).await;
    let mut config = stores.config_with_limit(Limit::AttachmentCreate, 2, 60_000.0);
    config.rate_limits.specs.insert(
        Limit::AttachmentCreateBytes,
        sealpost::limits::BucketSpec {
            bucket_size: 1000,
            permit_period_ms: 60_000.0,
        },
    );
    let app = TestApp::start(config).await;
    let (carol, _) = register_with(&app, None, false).await;
    for _ in 0..3 {
        assert_eq!(form(&app, &carol, "?uploadLength=5000").await.0, 429);
    }
    assert_eq!(form(&app, &carol, "").await.0, 200);
    assert_eq!(form(&app, &carol, "").await.0, 200);
    assert_eq!(form(&app, &carol, "").await.0, 429);
    app.stop().await;
}

/// Stores `bytes` as the attachment `key`, as a finished upload leaves it.
async fn stored(app: &TestApp, key: &str, bytes: &[u8]) {
    let objects = &app.stores.objects;
    let name = format!("attachments/{key}");
    let upload = objects.start_upload(&name).await.unwrap();
    let part = objects
        .put_part(&name, &upload, 1, bytes::Bytes::copy_from_slice(bytes))
        .await
        .unwrap();
    objects
        .complete_upload(&name, &upload, &[part])
        .await
        .unwrap();
}

async fn fetch(app: &TestApp, method: &str, key: &str, range: Option<&str>) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app
        .client
        .http()
        .request(method, app.client.url(&format!("/attachments/{key}")));
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn downloads_are_public_and_honour_one_range(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    let key = "AbCdEfGhIjKlMnOpQr-_";
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    stored(&app, key, &bytes).await;

    let whole = fetch(&app, "GET", key, None).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(header(&whole, "accept-ranges").as_deref(), Some("bytes"));
    assert_eq!(header(&whole, "content-length").as_deref(), Some("100000"));
    assert_eq!(whole.bytes().await.unwrap(), bytes);

    let part = fetch(&app, "GET", key, Some("bytes=10-19")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        header(&part, "content-range").as_deref(),
        Some("bytes 10-19/100000")
    );
    assert_eq!(part.bytes().await.unwrap(), bytes[10..20]);
    let tail = fetch(&app, "GET", key, Some("bytes=-5")).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), bytes[99_995..]);
    let from = fetch(&app, "GET", key, Some("bytes=99990-")).await;
    assert_eq!(from.bytes().await.unwrap(), bytes[99_990..]);

    let outside = fetch(&app, "GET", key, Some("bytes=100000-")).await;
    assert_eq!(outside.status(), 416);
    assert_eq!(
        header(&outside, "content-range").as_deref(),
        Some("bytes */100000")
    );
    let body: Value = outside.json().await.unwrap();
    assert_eq!(body["code"], 416);

    let head = fetch(&app, "HEAD", key, None).await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length").as_deref(), Some("100000"));
    assert!(head.bytes().await.unwrap().is_empty());

    for missing in ["ZZZZZZZZZZZZZZZZZZZZ", "short", "..%2F..%2Fetc%2Fpasswd"] {
        let response = fetch(&app, "GET", missing, None).await;
        assert_eq!(response.status(), 404, "{missing}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], 404);
    }
    app.stop().await;
}

async fn downloads_are_limited_per_client_address(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app =
        TestApp::start(stores.config_with_limit(Limit::AttachmentDownload, 2, 60_000.0)).await;
    let key = "AbCdEfGhIjKlMnOpQr-_";
    stored(&app, key, b"sealed bytes").await;
    assert_eq!(fetch(&app, "GET", key, None).await.status(), 200);
    assert_eq!(fetch(&app, "HEAD", key, None).await.status(), 200);
    let refused = fetch(&app, "GET", key, None).await;
    assert_eq!(refused.status(), 429);
    assert!(header(&refused, "retry-after").is_some());
    app.stop().await;
}

/// A client that shows redirects instead of following them.
fn not_following() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn downloads_are_streamed_from_a_bucket(backend: Backend) {
    let stores = TestStores::with_s3(backend).await;
    let app = TestApp::start(stores.config()).await;
    let key = "AbCdEfGhIjKlMnOpQr-_";
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    stored(&app, key, &bytes).await;
    let bucket = &stores.s3.as_ref().unwrap().config;
    let listed = app
        .stores
        .objects
        .list_older("attachments/", i64::MAX, None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![format!("attachments/{key}")],
        "in {}",
        bucket.bucket
    );

    let whole = fetch(&app, "GET", key, None).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap(), bytes);
    let part = fetch(&app, "GET", key, Some("bytes=10-19")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), bytes[10..20]);
    assert_eq!(
        fetch(&app, "GET", key, Some("bytes=100000-"))
            .await
            .status(),
        416
    );
    app.stop().await;
}

async fn downloads_redirect_to_a_presigned_bucket_url_when_asked(backend: Backend) {
    let stores = TestStores::with_s3(backend).await;
    let mut config = stores.config();
    config.attachments.redirect = true;
    let app = TestApp::start(config).await;
    let key = "AbCdEfGhIjKlMnOpQr-_";
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
    stored(&app, key, &bytes).await;
    let url = app.client.url(&format!("/attachments/{key}"));

    let redirected = not_following().get(&url).send().await.unwrap();
    assert_eq!(redirected.status(), 302);
    let location = header(&redirected, "location").expect("a Location");
    let bucket = &stores.s3.as_ref().unwrap().config;
    assert!(
        location.starts_with(&format!(
            "{}/{}/attachments/{key}?",
            bucket.endpoint, bucket.bucket
        )),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(!location.contains(bucket.secret_access_key.expose()));
    let fetched = reqwest::get(&location).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap(), bytes);

    // HEAD is still answered by sealpost itself.
    let head = fetch(&app, "HEAD", key, None).await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length").as_deref(), Some("70000"));

    for missing in ["ZZZZZZZZZZZZZZZZZZZZ", "short"] {
        let response = not_following()
            .get(app.client.url(&format!("/attachments/{missing}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{missing}");
        assert!(header(&response, "location").is_none());
    }
    app.stop().await;
}

on_both_backends!(
    downloads_are_streamed_from_a_bucket,
    downloads_redirect_to_a_presigned_bucket_url_when_asked,
    downloads_are_limited_per_client_address,
    the_form_is_signals_cdn3_descriptor,
    forms_are_limited_by_count_and_by_bytes,
    downloads_are_public_and_honour_one_range,
);
