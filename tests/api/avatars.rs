//! Avatars (PROTOCOL.md 13.1, 13.4) through the real server and a real S3-compatible
//! server: the form `PUT /v1/profile` hands out is an S3 POST policy the bucket itself
//! accepts (signature, key, 10 MiB range), the avatar is read anonymously, and replaced,
//! cleared or deleted-with-the-account avatars leave the bucket.

use reqwest::StatusCode;
use sealpost::api::profiles::AvatarUploadJson;
use sealpost::client::{DeviceCredentials, profile_request};
use sealpost::limits::Limit;
use serde_json::Value;

use super::profiles::version;
use crate::common::{Backend, TestApp, TestStores, s3};

const BOUNDARY: &str = "sealpost-avatar-boundary-7d3f";

/// A multipart form as Signal's clients post it (`PushServiceSocket.uploadToCdn0`): the
/// form's fields, `Content-Type`, then the file.
fn multipart(form: &AvatarUploadJson, key: &str, file: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in [
        ("acl", form.acl.as_str()),
        ("key", key),
        ("policy", form.policy.as_str()),
        ("Content-Type", "application/octet-stream"),
        ("x-amz-algorithm", form.algorithm.as_str()),
        ("x-amz-credential", form.credential.as_str()),
        ("x-amz-date", form.date.as_str()),
        ("x-amz-signature", form.signature.as_str()),
    ] {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"file\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Posts the avatar to the cdn-0 base as a client does (`<cdn0>/`); the status.
pub(super) async fn upload(
    cdn0: &str,
    form: &AvatarUploadJson,
    key: &str,
    file: &[u8],
) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{cdn0}/"))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(multipart(form, key, file))
        .send()
        .await
        .expect("the cdn-0 answers")
        .status()
}

async fn avatar_form(app: &TestApp, who: &DeviceCredentials, v: char) -> AvatarUploadJson {
    app.client
        .set_profile(who, &profile_request(&version(v), true, false))
        .await
        .unwrap()
        .expect("a form for a new avatar")
}

async fn exists(app: &TestApp, key: &str) -> bool {
    app.stores.objects.head(key).await.unwrap().is_some()
}

/// The avatar path a version of Alice's profile names.
async fn avatar_of(app: &TestApp, who: &DeviceCredentials, v: char) -> Value {
    let response = app
        .client
        .http()
        .get(
            app.client
                .url(&format!("/v1/profile/{}/{}", who.aci, version(v))),
        )
        .header("Authorization", who.authorization())
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["avatar"].clone()
}

/// Anonymous read through sealpost's `GET /cdn0/profiles/{id}`.
async fn read(app: &TestApp, key: &str) -> (StatusCode, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(app.client.url(&format!("/cdn0/{key}")))
        .send()
        .await
        .unwrap();
    (response.status(), response.bytes().await.unwrap().to_vec())
}

/// With a bucket, clients post straight to it (cdn-0 = the bucket's URL) under forms signed
/// with its credentials.
async fn the_whole_avatar_life_against_a_bucket(backend: Backend) {
    let stores = TestStores::with_s3(backend).await;
    let app = TestApp::start(stores.config()).await;
    let bucket = s3::settings(&stores.s3.as_ref().expect("a bucket").config)
        .bucket_url()
        .unwrap();
    let cdn0 = bucket.as_str().trim_end_matches('/').to_owned();
    avatar_life(&app, &cdn0, s3::ACCESS_KEY).await;

    // Clients read `<cdn0>/profiles/<id>` from the bucket itself: the policy sealpost gave
    // it at start lets anyone GET avatars, and nothing else.
    let (bob, _) = app.client.register_new().await.unwrap();
    let form = avatar_form(&app, &bob, 'a').await;
    assert!(
        upload(&cdn0, &form, &form.key, b"bob's avatar")
            .await
            .is_success()
    );
    let anonymous = reqwest::Client::new();
    let direct = format!("{cdn0}/{}", form.key);
    let mut status = StatusCode::FORBIDDEN;
    // The policy is applied in the background at start: give it a moment.
    for _ in 0..50 {
        let response = anonymous.get(&direct).send().await.unwrap();
        status = response.status();
        if status.is_success() {
            assert_eq!(&response.bytes().await.unwrap()[..], b"bob's avatar");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "an anonymous read of the avatar from the bucket"
    );
    app.stores
        .objects
        .put("attachments/AAAAAAAAAAAAAAAAAAAA", "secret".into())
        .await
        .unwrap();
    let other = anonymous
        .get(format!("{cdn0}/attachments/AAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403, "only profiles/* is public");
    let listing = anonymous.get(format!("{cdn0}/")).send().await.unwrap();
    assert_eq!(listing.status(), 403, "no anonymous listing");
    app.stop().await;
}

/// Without a bucket (memory in the embedded mode, the data directory otherwise), sealpost
/// is the cdn-0 (`<public URL>/cdn0`) and checks the same forms, signed with a server secret.
async fn the_whole_avatar_life_against_sealpost_s_own_cdn0(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    let cdn0 = app.client.url("/cdn0");
    avatar_life(&app, &cdn0, "sealpost").await;
    app.stop().await;
}

async fn avatar_life(app: &TestApp, cdn0: &str, access_key_id: &str) {
    let (alice, _) = app.client.register_new().await.unwrap();

    let form = avatar_form(app, &alice, 'a').await;
    assert!(form.key.starts_with("profiles/"), "{}", form.key);
    assert_eq!(form.acl, "private");
    assert_eq!(form.algorithm, "AWS4-HMAC-SHA256");
    assert!(form.credential.starts_with(&format!("{access_key_id}/")));
    assert_eq!(avatar_of(app, &alice, 'a').await, form.key.as_str());

    // The bucket checks the policy: another key or a file over 10 MiB is refused.
    let other = "profiles/AAAAAAAAAAAAAAAAAAAAAA==";
    assert!(upload(cdn0, &form, other, b"x").await.is_client_error());
    assert!(!exists(app, other).await);
    let too_large = vec![0u8; 10 * 1024 * 1024 + 1];
    assert!(
        upload(cdn0, &form, &form.key, &too_large)
            .await
            .is_client_error()
    );
    assert!(!exists(app, &form.key).await);
    let mut forged = form.clone();
    forged.signature = "0".repeat(64);
    assert!(
        upload(cdn0, &forged, &form.key, b"x")
            .await
            .is_client_error()
    );

    let avatar = vec![42u8; 1000];
    let status = upload(cdn0, &form, &form.key, &avatar).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(read(app, &form.key).await, (StatusCode::OK, avatar.clone()));

    // sameAvatar keeps it under the same version.
    let same = app
        .client
        .set_profile(&alice, &profile_request(&version('a'), true, true))
        .await
        .unwrap();
    assert_eq!(same, None, "no form: nothing to upload");
    assert_eq!(avatar_of(app, &alice, 'a').await, form.key.as_str());
    assert!(exists(app, &form.key).await);

    // A new avatar for the same version: the old object goes.
    let second = avatar_form(app, &alice, 'a').await;
    assert_ne!(second.key, form.key);
    assert!(
        !exists(app, &form.key).await,
        "the replaced avatar is deleted"
    );
    assert_eq!(read(app, &form.key).await.0, 404);
    assert!(
        upload(cdn0, &second, &second.key, b"second")
            .await
            .is_success()
    );

    // A new version with sameAvatar has none (it must re-upload); the old version keeps its.
    app.client
        .set_profile(&alice, &profile_request(&version('b'), true, true))
        .await
        .unwrap();
    assert_eq!(avatar_of(app, &alice, 'b').await, Value::Null);
    assert!(exists(app, &second.key).await);

    // Clearing version a's avatar deletes it.
    app.client
        .set_profile(&alice, &profile_request(&version('a'), false, false))
        .await
        .unwrap();
    assert_eq!(avatar_of(app, &alice, 'a').await, Value::Null);
    assert!(!exists(app, &second.key).await);

    // Deleting the account deletes every avatar of every version.
    let c = avatar_form(app, &alice, 'c').await;
    let d = avatar_form(app, &alice, 'd').await;
    assert!(upload(cdn0, &c, &c.key, b"c").await.is_success());
    assert!(upload(cdn0, &d, &d.key, b"d").await.is_success());
    app.client.delete_account(&alice).await.unwrap();
    assert!(!exists(app, &c.key).await);
    assert!(!exists(app, &d.key).await);
    assert_eq!(
        app.stores
            .profiles
            .current_version(alice.aci)
            .await
            .unwrap(),
        None
    );
}

/// sealpost's cdn-0 answers what S3 would refuse with clear JSON errors, and holds each
/// client address to its `avatarUpload` permits.
async fn sealpost_s_cdn0_refuses_bad_forms_with_json_errors(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config_with_limit(Limit::AvatarUpload, 7, 3_600_000.0)).await;
    let cdn0 = app.client.url("/cdn0");
    let (alice, _) = app.client.register_new().await.unwrap();
    let form = avatar_form(&app, &alice, 'a').await;
    let post = |content_type: String, body: Vec<u8>| {
        let url = format!("{cdn0}/");
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("Content-Type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let multipart_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let mut forged = form.clone();
    forged.signature = "0".repeat(64);
    let mut without_file = multipart(&form, &form.key, b"");
    let cut = without_file.len() - format!("--{BOUNDARY}--\r\n").len();
    without_file.truncate(cut);
    let cases = [
        (
            "not multipart",
            "application/json".to_owned(),
            b"{}".to_vec(),
            400,
        ),
        (
            "forged",
            multipart_type.clone(),
            multipart(&forged, &form.key, b"x"),
            403,
        ),
        (
            "another key",
            multipart_type.clone(),
            multipart(&form, "profiles/x", b"x"),
            403,
        ),
        (
            "empty file",
            multipart_type.clone(),
            multipart(&form, &form.key, b""),
            400,
        ),
        (
            "over 10 MiB",
            multipart_type.clone(),
            multipart(&form, &form.key, &vec![0; 10 * 1024 * 1024 + 1]),
            413,
        ),
        ("unfinished form", multipart_type.clone(), without_file, 400),
        (
            "a 5 KiB field",
            multipart_type.clone(),
            multipart(&form, &"k".repeat(5 * 1024), b"x"),
            400,
        ),
    ];
    for (what, content_type, body, want) in cases {
        let (status, error) = post(content_type, body).await;
        assert_eq!(status, want, "{what}: {error}");
        assert_eq!(error["code"], want, "{what}: a JSON body");
    }
    assert!(!exists(&app, &form.key).await, "nothing stored");
    let (status, error) = post(multipart_type, multipart(&form, &form.key, b"x")).await;
    assert_eq!(status, 429, "the eighth form from this address: {error}");
    app.stop().await;
}

on_both_backends!(
    the_whole_avatar_life_against_a_bucket,
    the_whole_avatar_life_against_sealpost_s_own_cdn0,
    sealpost_s_cdn0_refuses_bad_forms_with_json_errors,
);
