//! Issue 18's whole story in Signal's wire shapes, as a client written to them sends it:
//! Alice registers, sets a versioned profile with an avatar (the S3 POST-policy form against
//! the object store), reserves and confirms a username with a link; Bob, who knows neither
//! her ACI nor anything but the username, finds her by its hash and by the link, and reads
//! her versioned profile and avatar. On both backends, with sealpost's own cdn-0 and with a
//! real S3-compatible bucket.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use sealpost::api::profiles::AvatarUploadJson;
use sealpost::client::{DeviceCredentials, random_username_hash};
use serde_json::{Value, json};

use super::avatars::upload;
use crate::common::{Backend, TestApp, TestStores, register_with, s3};

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    who: Option<&DeviceCredentials>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.http().request(method, app.client.url(path));
    if let Some(who) = who {
        request = request.header("Authorization", who.authorization());
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn alice_is_found_by_her_username_and_link_and_bob_reads_her_profile(
    app: &TestApp,
    cdn0: &str,
) {
    use reqwest::Method;
    let (alice, _) = register_with(app, Some([7; 16]), false).await;
    let (bob, _) = register_with(app, None, false).await;

    // Alice's profile: every field at a size Signal's client produces, and a new avatar.
    let version = "ab".repeat(32);
    let name = STANDARD.encode([1u8; 81]);
    let about = STANDARD.encode([2u8; 156]);
    let (status, form) = call(
        app,
        Method::PUT,
        "/v1/profile",
        Some(&alice),
        Some(json!({
            "version": version,
            "commitment": STANDARD.encode([3u8; 97]),
            "name": name,
            "about": about,
            "aboutEmoji": STANDARD.encode([4u8; 60]),
            "paymentAddress": null,
            "phoneNumberSharing": STANDARD.encode([5u8; 29]),
            "avatar": true,
            "sameAvatar": false,
            "badgeIds": [],
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{form}");
    let form: AvatarUploadJson = serde_json::from_value(form).expect("an avatar upload form");
    let avatar = vec![0xa5u8; 4096];
    let uploaded = upload(cdn0, &form, &form.key, &avatar).await;
    assert!(uploaded.is_success(), "{uploaded}");

    // Her username: the first free of two hashes, confirmed with a link.
    let (taken, mine) = (random_username_hash(), random_username_hash());
    let (other, _) = register_with(app, None, false).await;
    let (status, _) = call(
        app,
        Method::PUT,
        "/v1/accounts/username_hash/reserve",
        Some(&other),
        Some(json!({"usernameHashes": [URL_SAFE_NO_PAD.encode(taken)]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, reserved) = call(
        app,
        Method::PUT,
        "/v1/accounts/username_hash/reserve",
        Some(&alice),
        Some(json!({"usernameHashes": [URL_SAFE_NO_PAD.encode(taken), URL_SAFE_NO_PAD.encode(mine)]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    assert_eq!(reserved["usernameHash"], URL_SAFE_NO_PAD.encode(mine));
    let encrypted = URL_SAFE_NO_PAD.encode([9u8; 48]);
    let (status, confirmed) = call(
        app,
        Method::PUT,
        "/v1/accounts/username_hash/confirm",
        Some(&alice),
        Some(json!({
            "usernameHash": URL_SAFE_NO_PAD.encode(mine),
            "zkProof": URL_SAFE_NO_PAD.encode([8u8; 128]),
            "encryptedUsername": encrypted,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    let handle = confirmed["usernameLinkHandle"]
        .as_str()
        .expect("a link handle")
        .to_owned();
    let (_, whoami) = call(app, Method::GET, "/v1/accounts/whoami", Some(&alice), None).await;
    assert_eq!(whoami["usernameHash"], URL_SAFE_NO_PAD.encode(mine));
    assert_eq!(whoami["usernameLinkHandle"], handle.as_str());

    // Bob finds her, anonymously, by the hash and by the link.
    let (status, found) = call(
        app,
        Method::GET,
        &format!(
            "/v1/accounts/username_hash/{}",
            URL_SAFE_NO_PAD.encode(mine)
        ),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, &found),
        (StatusCode::OK, &json!({"uuid": alice.aci.to_string()}))
    );
    let (status, link) = call(
        app,
        Method::GET,
        &format!("/v1/accounts/username_link/{handle}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(link["usernameLinkEncryptedValue"], encrypted.as_str());

    // And reads her versioned profile, then her avatar, which needs no credentials.
    let aci = found["uuid"].as_str().unwrap();
    let (status, profile) = call(
        app,
        Method::GET,
        &format!("/v1/profile/{aci}/{version}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["uuid"], aci);
    assert_eq!(profile["name"], name.as_str());
    assert_eq!(profile["about"], about.as_str());
    assert_eq!(profile["badges"], json!([]));
    assert_eq!(profile["avatar"], form.key.as_str());
    let path = profile["avatar"].as_str().unwrap();
    let read = reqwest::get(format!("{cdn0}/{path}")).await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().await.unwrap().to_vec(), avatar);
    // With her access key instead of an account, the same profile.
    let response = app
        .client
        .http()
        .get(app.client.url(&format!("/v1/profile/{aci}/{version}")))
        .header("Unidentified-Access-Key", STANDARD.encode([7u8; 16]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let anonymous: Value = response.json().await.unwrap();
    assert_eq!(anonymous["name"], name.as_str());
}

async fn with_sealpost_s_own_cdn0(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    let cdn0 = app.client.url("/cdn0");
    alice_is_found_by_her_username_and_link_and_bob_reads_her_profile(&app, &cdn0).await;
    app.stop().await;
}

async fn with_a_bucket(backend: Backend) {
    let stores = TestStores::with_s3(backend).await;
    let app = TestApp::start(stores.config()).await;
    let bucket = s3::settings(&stores.s3.as_ref().expect("a bucket").config)
        .bucket_url()
        .unwrap();
    let cdn0 = bucket.as_str().trim_end_matches('/').to_owned();
    alice_is_found_by_her_username_and_link_and_bob_reads_her_profile(&app, &cdn0).await;
    app.stop().await;
}

on_both_backends!(with_sealpost_s_own_cdn0, with_a_bucket);
