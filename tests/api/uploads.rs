//! Resumable attachment uploads through the real server (PROTOCOL.md 12.3): the TUS 1.0.0
//! subset Signal clients speak, with the upload form's token on every call. Whole uploads,
//! resumes after a cut-off connection (on the same pod and on another one sharing the
//! stores), the checksum, one appender at a time, every bad input as a 4xx with a JSON body
//! that stores nothing and changes nothing stored, and the sweeper's retention.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use sealpost::client::DeviceCredentials;
use sealpost::config::Config;
use sealpost::domain::clock::Clock;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{Backend, TestApp, TestStores, register_with};

/// Where the objects are: memory (embedded), a directory (external), an S3 bucket (the
/// external stores plus a bucket on the in-process S3 server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Objects {
    Memory,
    Directory,
    S3,
}

impl Objects {
    fn backend(self) -> Backend {
        match self {
            Objects::Memory => Backend::Embedded,
            Objects::Directory | Objects::S3 => Backend::External,
        }
    }

    async fn stores(self) -> TestStores {
        match self {
            Objects::S3 => TestStores::with_s3(self.backend()).await,
            _ => TestStores::new(self.backend()).await,
        }
    }
}

/// Each test on memory, a directory and an S3 bucket.
macro_rules! on_object_stores {
    ($($name:ident),+ $(,)?) => {
        mod memory {
            $( #[tokio::test] async fn $name() { super::$name(super::Objects::Memory).await } )+
        }
        mod directory {
            $( #[tokio::test] async fn $name() { super::$name(super::Objects::Directory).await } )+
        }
        mod s3 {
            $( #[tokio::test] async fn $name() { super::$name(super::Objects::S3).await } )+
        }
    };
}

const MIB: usize = 1024 * 1024;

struct Form {
    key: String,
    /// The `uploadLength` the form was asked for.
    length: usize,
    authorization: String,
    metadata: String,
    location: String,
}

async fn form(app: &TestApp, who: &DeviceCredentials, length: usize) -> Form {
    let response = app
        .client
        .http()
        .get(app.client.url(&format!(
            "/v4/attachments/form/upload?uploadLength={length}"
        )))
        .header("Authorization", who.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    Form {
        key: body["key"].as_str().unwrap().to_owned(),
        length,
        authorization: body["headers"]["Authorization"]
            .as_str()
            .unwrap()
            .to_owned(),
        metadata: body["headers"]["Upload-Metadata"]
            .as_str()
            .unwrap()
            .to_owned(),
        location: body["signedUploadLocation"].as_str().unwrap().to_owned(),
    }
}

/// `len` bytes that differ with `seed` and position, so a misplaced byte shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

fn sha256_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// A body that sends `bytes` in 64 KiB chunks and then breaks the connection, after a
/// pause that lets what was sent reach the server.
fn cut_off(bytes: &[u8]) -> reqwest::Body {
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    chunks.push(Err(std::io::Error::other("the network went away")));
    let stream = futures_util::stream::iter(chunks).then(|chunk| async move {
        if chunk.is_err() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        chunk
    });
    reqwest::Body::wrap_stream(stream)
}

fn tus(builder: reqwest::RequestBuilder, form: &Form) -> reqwest::RequestBuilder {
    builder
        .header("Tus-Resumable", "1.0.0")
        .header("Authorization", &form.authorization)
}

async fn post(
    app: &TestApp,
    form: &Form,
    length: usize,
    body: impl Into<reqwest::Body>,
    extra: &[(&str, &str)],
) -> Result<reqwest::Response, reqwest::Error> {
    let mut request = tus(
        app.client
            .http()
            .post(app.client.url("/upload/attachments")),
        form,
    )
    .header("Upload-Metadata", &form.metadata)
    .header("Upload-Length", length.to_string())
    .header("Content-Type", "application/offset+octet-stream");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.body(body).send().await
}

/// Creates the form's upload with `body` as its first bytes, expecting 201.
async fn created(app: &TestApp, form: &Form, body: impl Into<reqwest::Body>) {
    let response = post(app, form, form.length, body, &[]).await.unwrap();
    assert_eq!(response.status(), 201, "the upload is created");
}

async fn head(app: &TestApp, form: &Form) -> reqwest::Response {
    tus(
        app.client
            .http()
            .head(app.client.url(&format!("/upload/attachments/{}", form.key))),
        form,
    )
    .send()
    .await
    .unwrap()
}

async fn patch(
    app: &TestApp,
    form: &Form,
    offset: usize,
    body: impl Into<reqwest::Body>,
) -> Result<reqwest::Response, reqwest::Error> {
    tus(
        app.client
            .http()
            .patch(app.client.url(&format!("/upload/attachments/{}", form.key))),
        form,
    )
    .header("Upload-Offset", offset.to_string())
    .header("Content-Type", "application/offset+octet-stream")
    .body(body)
    .send()
    .await
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn offset_of(app: &TestApp, form: &Form) -> usize {
    let response = head(app, form).await;
    assert_eq!(response.status(), 200);
    header(&response, "Upload-Offset").unwrap().parse().unwrap()
}

/// The object's bytes, fetched in ranges of `piece` bytes.
async fn download(app: &TestApp, key: &str, size: usize, piece: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(size);
    while bytes.len() < size {
        let end = (bytes.len() + piece).min(size) - 1;
        let response = app
            .client
            .http()
            .get(app.client.url(&format!("/attachments/{key}")))
            .header("Range", format!("bytes={}-{end}", bytes.len()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        bytes.extend_from_slice(&response.bytes().await.unwrap());
    }
    bytes
}

async fn download_status(app: &TestApp, key: &str) -> u16 {
    app.client
        .http()
        .get(app.client.url(&format!("/attachments/{key}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn upload_config(stores: &TestStores) -> Config {
    let mut config = stores.config();
    config.rate_limits.enabled = false;
    config
}

/// Sends `data[from..]` by `PATCH`es until the upload has it all, resuming from `HEAD`
/// whenever another request still holds the upload (423) or moved it on (409).
async fn finish(app: &TestApp, form: &Form, data: &[u8]) -> reqwest::Response {
    for _ in 0..50 {
        let offset = offset_of(app, form).await;
        let response = patch(app, form, offset, data[offset..].to_vec())
            .await
            .unwrap();
        match response.status().as_u16() {
            409 | 423 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return response,
        }
    }
    panic!("the upload never became free to resume");
}

async fn options_advertise_tus_1_0_0(objects: Objects) {
    let stores = objects.stores().await;
    let app = TestApp::start(upload_config(&stores)).await;
    let response = app
        .client
        .http()
        .request(
            reqwest::Method::OPTIONS,
            app.client.url("/upload/attachments"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "Tus-Resumable").as_deref(), Some("1.0.0"));
    assert_eq!(header(&response, "Tus-Version").as_deref(), Some("1.0.0"));
    assert_eq!(
        header(&response, "Tus-Max-Size").as_deref(),
        Some("104857600")
    );
    assert_eq!(
        header(&response, "Tus-Extension").as_deref(),
        Some("creation,creation-with-upload,expiration")
    );
}

async fn a_whole_upload_in_one_post_downloads_byte_for_byte(objects: Objects) {
    let stores = objects.stores().await;
    let app = TestApp::start(upload_config(&stores)).await;
    let (alice, _) = register_with(&app, None, false).await;
    let data = pattern(12 * MIB + 12_345, 1);
    let form = form(&app, &alice, data.len()).await;
    assert_eq!(form.location, format!("{}/upload/attachments", app.address));

    let response = post(
        &app,
        &form,
        data.len(),
        data.clone(),
        &[("X-Signal-Checksum-Sha256", &sha256_b64(&data))],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        header(&response, "Location").unwrap(),
        format!("{}/{}", form.location, form.key)
    );
    assert_eq!(
        header(&response, "Upload-Offset").unwrap(),
        data.len().to_string()
    );
    assert_eq!(header(&response, "Tus-Resumable").as_deref(), Some("1.0.0"));
    assert!(header(&response, "Upload-Expires").is_some());

    let head = head(&app, &form).await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "Upload-Offset").unwrap(),
        data.len().to_string()
    );
    assert_eq!(
        header(&head, "Upload-Length").unwrap(),
        data.len().to_string()
    );
    assert_eq!(download(&app, &form.key, data.len(), 5 * MIB).await, data);

    // Done is done: a PATCH at the end changes nothing; a new POST is refused and the
    // object stays as it was.
    let again = patch(&app, &form, data.len(), Vec::new()).await.unwrap();
    assert_eq!(again.status(), 204);
    let other = pattern(data.len(), 9);
    let refused = post(&app, &form, data.len(), other, &[]).await.unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(download(&app, &form.key, data.len(), 8 * MIB).await, data);
    assert!(
        app.stores
            .objects
            .head(&format!("uploads/{}/tail", form.key))
            .await
            .unwrap()
            .is_none()
    );
}

async fn json_error(response: reqwest::Response, status: u16, what: &str) {
    assert_eq!(response.status().as_u16(), status, "{what}");
    assert_eq!(
        header(&response, "Content-Type").as_deref(),
        Some("application/json"),
        "{what}"
    );
    assert_eq!(header(&response, "Tus-Resumable").as_deref(), Some("1.0.0"));
    if response.content_length() == Some(0) {
        // HEAD: the body GET would have, not sent.
        return;
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], status, "{what}: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

async fn bad_uploads_get_json_4xx_and_store_nothing(objects: Objects) {
    let stores = objects.stores().await;
    let config = upload_config(&stores);
    let clock = config.clock.clone();
    let app = TestApp::start(config).await;
    let (alice, _) = register_with(&app, None, false).await;
    let data = pattern(1000, 2);
    let http = app.client.http();
    let url = app.client.url("/upload/attachments");

    // A stored attachment that none of the below may change.
    let kept = form(&app, &alice, data.len()).await;
    let response = post(&app, &kept, data.len(), data.clone(), &[])
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let victim = form(&app, &alice, data.len()).await;
    let plain = |form: &Form| {
        http.post(&url)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Metadata", &form.metadata)
            .header("Upload-Length", "1000")
            .header("Content-Type", "application/offset+octet-stream")
    };
    json_error(
        plain(&victim).body(data.clone()).send().await.unwrap(),
        401,
        "no token",
    )
    .await;
    // A token signed with another secret.
    let forged = {
        use jsonwebtoken::{EncodingKey, Header};
        let claims = sealpost::domain::attachments::UploadClaims::new(
            &sealpost::domain::attachments::AttachmentKey::parse(&victim.key).unwrap(),
            1000,
            clock.now_ms() / 1000,
        );
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(&[7u8; 32]).unwrap(),
        )
        .unwrap();
        format!("Bearer {token}")
    };
    json_error(
        plain(&victim)
            .header("Authorization", &forged)
            .body(data.clone())
            .send()
            .await
            .unwrap(),
        401,
        "forged token",
    )
    .await;
    // The token of one form with the key of another.
    json_error(
        plain(&victim)
            .header("Authorization", &kept.authorization)
            .body(data.clone())
            .send()
            .await
            .unwrap(),
        401,
        "another key's token",
    )
    .await;
    json_error(
        post(&app, &victim, 1001, data.clone(), &[]).await.unwrap(),
        413,
        "over maxLen",
    )
    .await;
    json_error(
        post(&app, &victim, 1000, pattern(1001, 2), &[])
            .await
            .unwrap(),
        413,
        "a body over Upload-Length",
    )
    .await;
    json_error(
        post(&app, &victim, 0, Vec::new(), &[]).await.unwrap(),
        400,
        "zero length",
    )
    .await;
    // Requests with one header changed from a good creation's.
    let with = |name: &'static str, value: &'static str| {
        let mut headers: Vec<(&str, String)> = vec![
            ("Tus-Resumable", "1.0.0".into()),
            ("Authorization", victim.authorization.clone()),
            ("Upload-Metadata", victim.metadata.clone()),
            ("Upload-Length", "1000".into()),
            ("Content-Type", "application/offset+octet-stream".into()),
        ];
        headers.retain(|(n, _)| *n != name);
        if !value.is_empty() {
            headers.push((name, value.to_owned()));
        }
        let mut request = http.post(&url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.body(data.clone()).send()
    };
    for (name, value, status) in [
        ("Upload-Length", "ten", 400),
        ("Upload-Length", "", 400),
        ("Upload-Length", "-1", 400),
        ("X-Signal-Checksum-Sha256", "not-a-digest", 400),
        ("Upload-Metadata", "", 400),
        ("Upload-Metadata", "filename AAAA", 400),
        ("Tus-Resumable", "0.2.2", 412),
        ("Tus-Resumable", "", 412),
        ("Content-Type", "application/json", 415),
        ("Authorization", "Bearer nonsense", 401),
        ("Authorization", "Basic YTpi", 401),
    ] {
        json_error(
            with(name, value).await.unwrap(),
            status,
            &format!("{name}: {value:?}"),
        )
        .await;
    }
    // A wrong checksum drops the upload: nothing to resume, nothing to download.
    json_error(
        post(
            &app,
            &victim,
            1000,
            data.clone(),
            &[("X-Signal-Checksum-Sha256", &sha256_b64(b"other bytes"))],
        )
        .await
        .unwrap(),
        460,
        "a checksum mismatch",
    )
    .await;
    json_error(head(&app, &victim).await, 404, "a dropped upload").await;
    assert_eq!(download_status(&app, &victim.key).await, 404);

    // Resumes: an unknown key, a wrong offset, a malformed one.
    json_error(
        patch(&app, &victim, 0, data.clone()).await.unwrap(),
        404,
        "no such upload",
    )
    .await;
    let partial = form(&app, &alice, data.len()).await;
    let response = post(&app, &partial, data.len(), data[..400].to_vec(), &[])
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "Upload-Offset").as_deref(), Some("400"));
    json_error(
        patch(&app, &partial, 100, data[100..].to_vec())
            .await
            .unwrap(),
        409,
        "an offset that is not the upload's",
    )
    .await;
    json_error(
        patch(&app, &partial, 400, data[400..].repeat(2))
            .await
            .unwrap(),
        413,
        "a resume longer than what is missing",
    )
    .await;
    json_error(
        tus(
            http.patch(
                app.client
                    .url(&format!("/upload/attachments/{}", partial.key)),
            ),
            &partial,
        )
        .header("Upload-Offset", "-4")
        .header("Content-Type", "application/offset+octet-stream")
        .body(data[400..].to_vec())
        .send()
        .await
        .unwrap(),
        400,
        "a malformed offset",
    )
    .await;
    json_error(
        tus(
            http.head(app.client.url("/upload/attachments/not-a-key")),
            &partial,
        )
        .send()
        .await
        .unwrap(),
        404,
        "a path that is no key",
    )
    .await;
    assert_eq!(offset_of(&app, &partial).await, 400);
    assert_eq!(download_status(&app, &partial.key).await, 404);
    // Tokens expire after 24 hours, on the server's clock.
    clock.advance(Duration::from_secs(24 * 3600 + 60));
    json_error(head(&app, &partial).await, 401, "an expired token").await;

    assert_eq!(download(&app, &kept.key, data.len(), 600).await, data);
}

async fn an_upload_resumes_with_head_and_patch(objects: Objects) {
    let stores = objects.stores().await;
    let app = TestApp::start(upload_config(&stores)).await;
    let (alice, _) = register_with(&app, None, false).await;
    let data = pattern(12 * MIB, 3);
    let form = form(&app, &alice, data.len()).await;
    let checksum = sha256_b64(&data);

    // The first 7 MiB: a part and a tail.
    let response = post(
        &app,
        &form,
        data.len(),
        data[..7 * MIB].to_vec(),
        &[("X-Signal-Checksum-Sha256", &checksum)],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        header(&response, "Upload-Offset").unwrap(),
        (7 * MIB).to_string()
    );
    assert_eq!(offset_of(&app, &form).await, 7 * MIB);
    assert_eq!(download_status(&app, &form.key).await, 404);
    // Another 2 MiB, then the rest.
    let response = patch(&app, &form, 7 * MIB, data[7 * MIB..9 * MIB].to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        header(&response, "Upload-Offset").unwrap(),
        (9 * MIB).to_string()
    );
    assert_eq!(download_status(&app, &form.key).await, 404);
    let response = patch(&app, &form, 9 * MIB, data[9 * MIB..].to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        header(&response, "Upload-Offset").unwrap(),
        data.len().to_string()
    );
    assert_eq!(download(&app, &form.key, data.len(), 3 * MIB).await, data);
}

/// A 20 MiB upload cut off twice, resumed once on another pod (when the stores are shared)
/// and with its checksum checked at the end, downloads byte for byte in ranges.
async fn a_20_mib_upload_cut_off_twice_resumes_on_another_pod(objects: Objects) {
    let stores = objects.stores().await;
    let first = TestApp::start(upload_config(&stores)).await;
    let other = match objects.backend() {
        Backend::External => Some(TestApp::start(upload_config(&stores)).await),
        Backend::Embedded => None,
    };
    let second = other.as_ref().unwrap_or(&first);
    let (alice, _) = register_with(&first, None, false).await;
    let data = pattern(20 * MIB, 4);
    let form = form(&first, &alice, data.len()).await;

    let cut = post(
        &first,
        &form,
        data.len(),
        cut_off(&data[..8 * MIB]),
        &[("X-Signal-Checksum-Sha256", &sha256_b64(&data))],
    )
    .await;
    assert!(cut.is_err(), "the first request was cut off");
    // Resumed on the other pod, and cut off again.
    let mut offset = 0;
    for _ in 0..50 {
        offset = offset_of(second, &form).await;
        if offset >= 5 * MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (5 * MIB..=8 * MIB).contains(&offset),
        "the first 8 MiB were kept up to {offset}"
    );
    let second_cut = loop {
        let offset = offset_of(second, &form).await;
        match patch(second, &form, offset, cut_off(&data[offset..15 * MIB])).await {
            Ok(response) if matches!(response.status().as_u16(), 409 | 423) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => break other,
        }
    };
    assert!(second_cut.is_err(), "the second request was cut off");
    // Finished on the first pod.
    let done = finish(&first, &form, &data).await;
    assert_eq!(done.status(), 204);
    assert_eq!(
        header(&done, "Upload-Offset").unwrap(),
        data.len().to_string()
    );
    assert_eq!(download(second, &form.key, data.len(), 7 * MIB).await, data);
    assert_eq!(
        download(&first, &form.key, data.len(), 20 * MIB).await,
        data
    );
}

async fn ten_uploads_at_once_each_arrive_whole(objects: Objects) {
    let stores = objects.stores().await;
    let app = TestApp::start(upload_config(&stores)).await;
    let (alice, _) = register_with(&app, None, false).await;
    let mut uploads = Vec::new();
    for i in 0..10u8 {
        let data = pattern(MIB * 6 + usize::from(i) * 1000, 10 + i);
        uploads.push((form(&app, &alice, data.len()).await, data));
    }
    let results = futures_util::future::join_all(uploads.iter().map(|(form, data)| async {
        let checksum = sha256_b64(data);
        post(
            &app,
            form,
            data.len(),
            data.clone(),
            &[("X-Signal-Checksum-Sha256", &checksum)],
        )
        .await
    }))
    .await;
    for result in results {
        assert_eq!(result.unwrap().status(), 201);
    }
    for (form, data) in &uploads {
        assert_eq!(&download(&app, &form.key, data.len(), 4 * MIB).await, data);
    }
}

async fn one_request_at_a_time_appends_to_an_upload(objects: Objects) {
    let stores = objects.stores().await;
    let app = TestApp::start(upload_config(&stores)).await;
    let (alice, _) = register_with(&app, None, false).await;
    let data = pattern(3 * MIB, 5);
    let form = form(&app, &alice, data.len()).await;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_of(receiver));
    let slow = post(&app, &form, data.len(), body, &[]);
    let feeder = async {
        sender
            .send(Ok(Bytes::copy_from_slice(&data[..MIB])))
            .await
            .unwrap();
        // While the first request holds the upload, a resume is told to wait.
        let mut refused = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let response = patch(&app, &form, 0, data.clone()).await.unwrap();
            if response.status() == 423 {
                json_error(response, 423, "a second appender").await;
                refused = true;
                break;
            }
            // The POST may not have created the upload yet (404).
            assert_eq!(response.status(), 404);
        }
        assert!(refused, "a second appender was refused");
        sender
            .send(Ok(Bytes::copy_from_slice(&data[MIB..])))
            .await
            .unwrap();
        drop(sender);
    };
    let (response, ()) = tokio::join!(slow, feeder);
    assert_eq!(response.unwrap().status(), 201);
    assert_eq!(download(&app, &form.key, data.len(), 2 * MIB).await, data);
}

fn tokio_stream_of(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Makes the attachment `key` older than the retention: the embedded mode's objects carry
/// the server's clock (moved 46 days on); a directory's carry their file's time (set back
/// 46 days, and the clock moved past the uploads' 7-day lifetime).
fn age(objects: Objects, stores: &TestStores, clock: &Clock, key: &str) {
    match objects {
        Objects::Memory => clock.advance(Duration::from_secs(46 * 24 * 3600)),
        Objects::Directory | Objects::S3 => {
            let path = match &stores.s3 {
                Some(bucket) => bucket.object_file(&format!("attachments/{key}")),
                None => stores.data.0.join("objects/attachments").join(key),
            };
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(std::time::SystemTime::now() - Duration::from_secs(46 * 24 * 3600))
                .unwrap();
            clock.advance(Duration::from_secs(8 * 24 * 3600));
        }
    }
}

async fn the_sweeper_removes_what_is_past_retention_and_nothing_else(objects: Objects) {
    // A bucket without lifecycles (plain s3s-fs): the sweeper expires its attachments.
    let stores = match objects {
        Objects::S3 => TestStores {
            s3: Some(crate::common::s3::TestBucket::without_lifecycle().await),
            ..TestStores::new(Backend::External).await
        },
        _ => objects.stores().await,
    };
    let mut config = upload_config(&stores);
    config.attachments.sweep_interval = Duration::from_millis(100);
    let clock = config.clock.clone();
    let app = TestApp::start(config).await;
    let (alice, _) = register_with(&app, None, false).await;
    let data = pattern(6 * MIB, 6);

    let old = form(&app, &alice, data.len()).await;
    created(&app, &old, data.clone()).await;
    let stale = form(&app, &alice, data.len()).await;
    created(&app, &stale, data[..MIB].to_vec()).await;
    age(objects, &stores, &clock, &old.key);
    let fresh = form(&app, &alice, data.len()).await;
    created(&app, &fresh, data.clone()).await;
    let pending = form(&app, &alice, data.len()).await;
    created(&app, &pending, data[..MIB].to_vec()).await;

    let mut swept = false;
    for _ in 0..100 {
        if download_status(&app, &old.key).await == 404 {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swept, "the attachment past retention was deleted");
    for _ in 0..100 {
        if app.stores.uploads.get(&stale.key).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.stores.uploads.get(&stale.key).await.unwrap().is_none());
    assert!(
        app.stores
            .objects
            .head(&format!("uploads/{}/tail", stale.key))
            .await
            .unwrap()
            .is_none(),
        "the abandoned upload's tail is gone"
    );
    // What is younger stays: the fresh attachment and the pending upload.
    assert_eq!(download(&app, &fresh.key, data.len(), 6 * MIB).await, data);
    assert_eq!(
        app.stores
            .uploads
            .get(&pending.key)
            .await
            .unwrap()
            .map(|u| u.offset),
        Some(MIB as u64)
    );
}

/// A pod streams at most `max_concurrent_uploads` upload requests at once (each may hold a
/// 5 MiB part): one more is told to come back (503, `Retry-After`), before anything is
/// stored, and succeeds once a slot is free.
#[tokio::test]
async fn uploads_beyond_what_a_pod_streams_at_once_are_told_to_retry() {
    let stores = Objects::Memory.stores().await;
    let mut config = upload_config(&stores);
    config.attachments.max_concurrent_uploads = 1;
    let app = TestApp::start(config).await;
    let (alice, _) = register_with(&app, None, false).await;
    let data = pattern(2 * MIB, 8);
    let (first, second) = (
        form(&app, &alice, data.len()).await,
        form(&app, &alice, data.len()).await,
    );
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let slow = post(
        &app,
        &first,
        data.len(),
        reqwest::Body::wrap_stream(tokio_stream_of(receiver)),
        &[],
    );
    let other = async {
        sender
            .send(Ok(Bytes::copy_from_slice(&data[..MIB])))
            .await
            .unwrap();
        // The first request holds its slot once its upload exists.
        for _ in 0..100 {
            if app.stores.uploads.get(&first.key).await.unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let response = post(&app, &second, data.len(), data.clone(), &[])
            .await
            .unwrap();
        assert_eq!(
            header(&response, "Retry-After").as_deref(),
            Some("5"),
            "{}",
            response.status()
        );
        json_error(response, 503, "a stream over the pod's").await;
        assert!(app.stores.uploads.get(&second.key).await.unwrap().is_none());
        sender
            .send(Ok(Bytes::copy_from_slice(&data[MIB..])))
            .await
            .unwrap();
        drop(sender);
    };
    let (response, ()) = tokio::join!(slow, other);
    assert_eq!(response.unwrap().status(), 201);
    let response = post(&app, &second, data.len(), data.clone(), &[])
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(download(&app, &second.key, data.len(), MIB).await, data);
}

/// A bucket that took the lifecycle rule expires attachments itself: the sweeper leaves
/// them (s3s keeps the rule without enforcing it, so the aged object stays), and still
/// forgets uploads past their 7 days.
#[tokio::test]
async fn the_sweeper_leaves_retention_to_a_bucket_lifecycle() {
    let stores = Objects::S3.stores().await;
    let mut config = upload_config(&stores);
    config.attachments.sweep_interval = Duration::from_millis(100);
    let clock = config.clock.clone();
    let app = TestApp::start(config).await;
    let (alice, _) = register_with(&app, None, false).await;
    let data = pattern(MIB, 7);
    // The rule is applied in the background at start.
    for _ in 0..100 {
        if stores.s3.as_ref().unwrap().lifecycle().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stores.s3.as_ref().unwrap().lifecycle().is_some());
    let old = form(&app, &alice, data.len()).await;
    created(&app, &old, data.clone()).await;
    let stale = form(&app, &alice, data.len()).await;
    created(&app, &stale, data[..1000].to_vec()).await;
    age(Objects::S3, &stores, &clock, &old.key);
    for _ in 0..100 {
        if app.stores.uploads.get(&stale.key).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.stores.uploads.get(&stale.key).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(download(&app, &old.key, data.len(), MIB).await, data);
}

on_object_stores!(
    options_advertise_tus_1_0_0,
    a_whole_upload_in_one_post_downloads_byte_for_byte,
    bad_uploads_get_json_4xx_and_store_nothing,
    an_upload_resumes_with_head_and_patch,
    a_20_mib_upload_cut_off_twice_resumes_on_another_pod,
    ten_uploads_at_once_each_arrive_whole,
    one_request_at_a_time_appends_to_an_upload,
    the_sweeper_removes_what_is_past_retention_and_nothing_else,
);
