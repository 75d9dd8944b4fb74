//! Versioned encrypted profiles (PROTOCOL.md 13) through the real server: `PUT /v1/profile`
//! with every field and its sizes, nothing stored when one field is wrong, the three reads
//! with their shapes and auth rules, and the `profile` rate limit of authenticated reads.
//! Avatars (forms, uploads, replacement, deletion) are in `avatars`.

use reqwest::StatusCode;
use sealpost::api::profiles::CreateProfileJson;
use sealpost::client::{DeviceCredentials, profile_request};
use sealpost::domain::encoding::encode_base64;
use sealpost::limits::Limit;
use serde_json::Value;

use crate::common::{Backend, TestApp, TestStores, register_with, spawn_app};

const ACCESS_KEY: [u8; 16] = [7; 16];

fn access_key() -> (&'static str, String) {
    ("Unidentified-Access-Key", encode_base64(&ACCESS_KEY))
}

pub(crate) fn version(c: char) -> String {
    c.to_string().repeat(64)
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, String)]) -> (StatusCode, Value) {
    let mut request = app.client.http().get(app.client.url(path));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn basic(who: &DeviceCredentials) -> Vec<(&'static str, String)> {
    vec![("Authorization", who.authorization())]
}

async fn put(app: &TestApp, who: &DeviceCredentials, body: &Value) -> (StatusCode, Value) {
    let response = app
        .client
        .http()
        .put(app.client.url("/v1/profile"))
        .header("Authorization", who.authorization())
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn a_profile_is_stored_per_version_and_read_back_in_full(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (alice, alice_keys) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let request = profile_request(&version('a'), false, false);
    assert_eq!(
        app.client.set_profile(&alice, &request).await.unwrap(),
        None
    );

    let path = format!("/v1/profile/{}/{}", alice.aci, version('a'));
    let (status, body) = get(&app, &path, &basic(&bob)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uuid"], alice.aci.to_string());
    assert_eq!(body["badges"], serde_json::json!([]));
    assert_eq!(
        body["identityKey"],
        encode_base64(&alice_keys.identity_public())
    );
    for (field, sent) in [
        ("name", &request.name),
        ("about", &request.about),
        ("aboutEmoji", &request.about_emoji),
        ("paymentAddress", &request.payment_address),
        ("phoneNumberSharing", &request.phone_number_sharing),
    ] {
        assert_eq!(body[field].as_str(), sent.as_deref(), "{field}");
    }
    assert_eq!(body["avatar"], Value::Null);
    assert!(
        body.get("credential").is_none(),
        "only the credential form has it"
    );

    // The credential form: the same, with `credential` null (no zkgroup).
    let (status, with_credential) = get(
        &app,
        &format!("{path}/00ff?credentialType=expiringProfileKey"),
        &basic(&bob),
    )
    .await;
    assert_eq!(status, 200, "{with_credential}");
    assert_eq!(with_credential["credential"], Value::Null);
    assert!(with_credential.get("credential").is_some());
    assert_eq!(with_credential["name"], body["name"]);

    // The base form gains badges and uuid too.
    let (status, base) = get(&app, &format!("/v1/profile/{}", alice.aci), &basic(&bob)).await;
    assert_eq!(status, 200);
    assert_eq!(base["uuid"], alice.aci.to_string());
    assert_eq!(base["badges"], serde_json::json!([]));
    assert!(base.get("name").is_none());

    // A version never stored: every field null.
    let (status, unknown) = get(
        &app,
        &format!("/v1/profile/{}/{}", alice.aci, version('b')),
        &basic(&bob),
    )
    .await;
    assert_eq!(status, 200);
    for field in [
        "name",
        "about",
        "aboutEmoji",
        "paymentAddress",
        "phoneNumberSharing",
        "avatar",
    ] {
        assert_eq!(unknown[field], Value::Null, "{field}");
    }

    // A newer version becomes current: the older one keeps its fields but no longer shows
    // its payment address (PC).
    let newer = CreateProfileJson {
        name: Some(encode_base64(&[9; 285])),
        about: None,
        ..profile_request(&version('b'), false, false)
    };
    app.client.set_profile(&alice, &newer).await.unwrap();
    let (_, old) = get(&app, &path, &basic(&bob)).await;
    assert_eq!(old["name"].as_str(), request.name.as_deref());
    assert_eq!(old["paymentAddress"], Value::Null);
    let (_, current) = get(
        &app,
        &format!("/v1/profile/{}/{}", alice.aci, version('b')),
        &basic(&bob),
    )
    .await;
    assert_eq!(current["name"].as_str(), newer.name.as_deref());
    assert_eq!(current["about"], Value::Null);
    assert_eq!(
        current["paymentAddress"].as_str(),
        newer.payment_address.as_deref()
    );
    app.stop().await;
}

/// Each body differs from a valid one in one field; each is refused with a JSON 422 (400
/// for what is not JSON at all) and leaves nothing stored.
async fn a_profile_with_one_bad_field_is_refused_and_stores_nothing(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let valid = serde_json::to_value(profile_request(&version('c'), false, false)).unwrap();
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let b64 = |len: usize| Value::String(encode_base64(&vec![1; len]));
    let cases = [
        ("name 80 bytes", with("name", b64(80))),
        ("name missing", with("name", Value::Null)),
        ("name empty", with("name", b64(0))),
        ("aboutEmoji 59 bytes", with("aboutEmoji", b64(59))),
        ("about 157 bytes", with("about", b64(157))),
        ("paymentAddress 581 bytes", with("paymentAddress", b64(581))),
        (
            "phoneNumberSharing 28 bytes",
            with("phoneNumberSharing", b64(28)),
        ),
        ("commitment 96 bytes", with("commitment", b64(96))),
        ("commitment missing", with("commitment", Value::Null)),
        (
            "version 63 characters",
            with("version", "a".repeat(63).into()),
        ),
        ("version not hex", with("version", "g".repeat(64).into())),
        ("version missing", with("version", Value::Null)),
        // The URL-safe alphabet is another base64 variant: refused.
        ("name url-safe base64", with("name", "-_".repeat(54).into())),
        ("name not base64", with("name", "not base64!".into())),
        (
            "101 badge ids",
            with("badgeIds", serde_json::json!(vec!["b"; 101])),
        ),
        (
            "a badge id too long",
            with("badgeIds", serde_json::json!(["x".repeat(256)])),
        ),
    ];
    for (what, body) in cases {
        let (status, error) = put(&app, &alice, &body).await;
        assert_eq!(status, 422, "{what}: {error}");
        assert_eq!(error["code"], 422, "{what}: a JSON body");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let response = app
        .client
        .http()
        .put(app.client.url("/v1/profile"))
        .header("Authorization", alice.authorization())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], 400);

    let (_, read) = get(
        &app,
        &format!("/v1/profile/{}/{}", alice.aci, version('c')),
        &basic(&alice),
    )
    .await;
    assert_eq!(read["name"], Value::Null, "nothing was stored");
    assert_eq!(
        app.stores
            .profiles
            .current_version(alice.aci)
            .await
            .unwrap(),
        None
    );
    // The valid body itself is stored, padding or not.
    let mut unpadded = valid.clone();
    unpadded["name"] = valid["name"].as_str().unwrap().trim_end_matches('=').into();
    assert_eq!(put(&app, &alice, &unpadded).await.0, 200);
    app.stop().await;
}

/// The read rules beyond the authorization matrix: a Group-Send-Token is refused, the
/// credential form wants `expiringProfileKey` and a hex request, a path version must be a
/// version; an anonymous reader with the right access key reads the same fields.
async fn the_reads_refuse_what_sealpost_cannot_check(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (alice, _) = register_with(&app, Some(ACCESS_KEY), false).await;
    let (bob, _) = app.client.register_new().await.unwrap();
    app.client
        .set_profile(&alice, &profile_request(&version('d'), false, false))
        .await
        .unwrap();
    let base = format!("/v1/profile/{}", alice.aci);
    let versioned = format!("{base}/{}", version('d'));
    let token = ("Group-Send-Token", encode_base64(&[1; 64]));
    for path in [base.clone(), versioned.clone()] {
        let (status, body) = get(&app, &path, &[basic(&bob)[0].clone(), token.clone()]).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["code"], 401);
    }
    for (query, want) in [
        ("00ff?credentialType=other", 400),
        ("00ff", 400),
        ("xyz?credentialType=expiringProfileKey", 400),
        ("0?credentialType=expiringProfileKey", 400),
    ] {
        let (status, body) = get(&app, &format!("{versioned}/{query}"), &basic(&bob)).await;
        assert_eq!(status, want, "{query}: {body}");
        assert_eq!(body["code"], want);
    }
    let (status, body) = get(&app, &format!("{base}/not-a-version"), &basic(&bob)).await;
    assert_eq!(status, 400, "{body}");

    let (status, anonymous) = get(&app, &versioned, &[access_key()]).await;
    assert_eq!(status, 200, "{anonymous}");
    let (_, identified) = get(&app, &versioned, &basic(&bob)).await;
    assert_eq!(anonymous, identified);
    app.stop().await;
}

/// Authenticated reads of every form share the caller's `profile` bucket; anonymous reads
/// take none (PROTOCOL.md 13.2).
async fn authenticated_reads_take_the_readers_profile_permits(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config_with_limit(Limit::Profile, 2, 3_600_000.0)).await;
    let (alice, _) = register_with(&app, Some(ACCESS_KEY), false).await;
    let (bob, _) = app.client.register_new().await.unwrap();
    let base = format!("/v1/profile/{}", alice.aci);
    let versioned = format!("{base}/{}", version('e'));
    assert_eq!(get(&app, &base, &basic(&bob)).await.0, 200);
    assert_eq!(get(&app, &versioned, &basic(&bob)).await.0, 200);
    let (status, body) = get(&app, &versioned, &basic(&bob)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], 429);
    // Alice's own bucket is hers.
    assert_eq!(get(&app, &base, &basic(&alice)).await.0, 200);
    assert_eq!(get(&app, &versioned, &[access_key()]).await.0, 200);
    app.stop().await;
}

/// Each stored version takes one of the account's `profileSet` permits; a refused body
/// takes none.
async fn storing_profiles_takes_the_accounts_profile_set_permits(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config_with_limit(Limit::ProfileSet, 2, 3_600_000.0)).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let body = |v: char| serde_json::to_value(profile_request(&version(v), false, false)).unwrap();
    let mut bad = body('a');
    bad["name"] = "AAAA".into();
    assert_eq!(put(&app, &alice, &bad).await.0, 422);
    assert_eq!(put(&app, &alice, &body('a')).await.0, 200);
    assert_eq!(put(&app, &alice, &body('b')).await.0, 200);
    let (status, error) = put(&app, &alice, &body('c')).await;
    assert_eq!(status, 429, "{error}");
    assert_eq!(error["code"], 429);
    assert_eq!(
        app.stores
            .profiles
            .current_version(alice.aci)
            .await
            .unwrap()
            .map(|v| v.as_str().to_owned()),
        Some(version('b')),
        "the refused one stored nothing"
    );
    assert_eq!(
        put(&app, &bob, &body('c')).await.0,
        200,
        "Bob's permits are his"
    );
    app.stop().await;
}

on_both_backends!(
    storing_profiles_takes_the_accounts_profile_set_permits,
    a_profile_is_stored_per_version_and_read_back_in_full,
    a_profile_with_one_bad_field_is_refused_and_stores_nothing,
    the_reads_refuse_what_sealpost_cannot_check,
    authenticated_reads_take_the_readers_profile_permits,
);
