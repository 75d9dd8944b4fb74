//! PROTOCOL.md section 16 through the real server: the account identity of `whoami` and
//! registration, the link answer's `pni`, `createdAtCiphertext` (opened with the identity
//! private key), renaming devices, the wait for a linked device (across pods too), the
//! `optionalPhoneNumber` rule, the provisioning keepalive and the existence check.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, TestStores, spawn_app};
use sealpost::api::devices::{DeviceJson, DeviceListJson};
use sealpost::client::ws::WsClient;
use sealpost::client::{
    AccountKeys, DeviceCredentials, basic_auth, default_attributes, random_password,
};
use sealpost::domain::created_at;
use sealpost::domain::ids::{DeviceId, RegistrationId};
use sealpost::limits::Limit;

fn std_nopad(value: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value)
        .expect("std-nopad base64")
}

/// Links a device with `attributes` through the API; the raw answer.
async fn link_raw(
    app: &TestApp,
    primary: &DeviceCredentials,
    keys: &AccountKeys,
    attributes: Value,
) -> (StatusCode, Value, String, String) {
    let code = app.client.link_code(primary).await.unwrap();
    let (status, body, password) =
        link_with_code(app, &code.verification_code, keys, attributes).await;
    (status, body, password, code.token_identifier)
}

async fn link_with_code(
    app: &TestApp,
    code: &str,
    keys: &AccountKeys,
    attributes: Value,
) -> (StatusCode, Value, String) {
    let password = random_password();
    let response = app
        .client
        .http()
        .put(app.client.url("/v1/devices/link"))
        .header("Authorization", basic_auth("", &password))
        .json(&json!({
            "verificationCode": code,
            "accountAttributes": attributes,
            "aciSignedPreKey": keys.signed_pre_key_json(2),
            "aciPqLastResortPreKey": keys.kem_pre_key_json(3),
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        password,
    )
}

fn attributes_json() -> Value {
    serde_json::to_value(default_attributes()).unwrap()
}

async fn devices(app: &TestApp, who: &DeviceCredentials) -> Vec<DeviceJson> {
    let list: DeviceListJson = app
        .client
        .http()
        .get(app.client.url("/v1/devices"))
        .header("Authorization", who.authorization())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.devices
}

async fn whoami_and_registration_carry_every_field_of_the_account_identity(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let keys = AccountKeys::generate();
    let password = random_password();
    let registered: Value = app
        .client
        .http()
        .post(app.client.url("/v1/registration"))
        .header("Authorization", basic_auth("", &password))
        .json(&keys.registration_request(default_attributes()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let aci = registered["uuid"].as_str().unwrap().to_owned();
    let salt = registered["authCredentialSalt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&salt)
            .expect("std-pad base64")
            .len(),
        16
    );
    let identity = json!({
        "uuid": aci,
        "number": null,
        "pni": null,
        "usernameHash": null,
        "usernameLinkHandle": null,
        "storageCapable": false,
        "entitlements": {"badges": [], "backup": null},
        "authCredentialSalt": salt,
    });
    let mut expected = identity.clone();
    expected["reregistration"] = json!(false);
    assert_eq!(registered, expected, "every field, absent ones null");
    let response = app
        .client
        .http()
        .get(app.client.url("/v1/accounts/whoami"))
        .header("Authorization", basic_auth(&format!("{aci}.1"), &password))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let whoami: Value = response.json().await.unwrap();
    assert_eq!(whoami, identity, "the salt is kept, the same shape");

    // Another account gets another salt.
    let (bob, _) = app.client.register_new().await.unwrap();
    let bob = app.client.whoami(&bob).await.unwrap();
    assert_ne!(bob.auth_credential_salt, Some(salt));
}

async fn a_linked_device_s_creation_time_opens_with_the_identity_key_only(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (alice, keys) = app.client.register_new().await.unwrap();
    let (status, linked, _, _) = link_raw(&app, &alice, &keys, attributes_json()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        linked,
        json!({"uuid": alice.aci.to_string(), "pni": null, "deviceId": 2})
    );
    let listed = devices(&app, &alice).await;
    assert_eq!(listed.len(), 2);
    let now = sealpost::domain::clock::now_ms();
    for device in &listed {
        let sealed = std_nopad(&device.created_at_ciphertext);
        assert_eq!(sealed.len(), 57);
        assert_eq!(sealed[0], 0x01, "libsignal's suite byte");
        let id = DeviceId::new(u32::from(device.id)).unwrap();
        let registration = RegistrationId::new(i64::from(device.registration_id)).unwrap();
        let created = created_at::open(&keys.identity.to_bytes(), &sealed, id, registration)
            .expect("the identity private key opens it");
        assert!(created <= now && created > now - 60_000);
        let other = AccountKeys::generate();
        assert!(
            created_at::open(&other.identity.to_bytes(), &sealed, id, registration).is_err(),
            "another key does not"
        );
        let wrong = RegistrationId::new(i64::from(device.registration_id % 16383) + 1).unwrap();
        assert!(
            created_at::open(&keys.identity.to_bytes(), &sealed, id, wrong).is_err(),
            "another registration id (the associated data) does not"
        );
    }
    // Sealed once: the same bytes on every listing.
    assert_eq!(devices(&app, &alice).await, listed);
}

/// A device stored before sealpost kept the sealed time (straight in Postgres, as V0005
/// leaves older rows) gets one on its first listing, kept from then on.
#[tokio::test]
async fn an_older_device_is_sealed_on_its_first_listing_and_keeps_it() {
    let (app, stores) = spawn_app(Backend::External).await;
    let (alice, keys) = app.client.register_new().await.unwrap();
    crate::common::add_device(&stores, &alice, 2, 99).await;
    let first = devices(&app, &alice).await;
    assert_eq!(first.len(), 2);
    let sealed = std_nopad(&first[1].created_at_ciphertext);
    let created = created_at::open(
        &keys.identity.to_bytes(),
        &sealed,
        DeviceId::new(2).unwrap(),
        RegistrationId::new(99).unwrap(),
    );
    assert_eq!(created, Ok(0), "the row's creation time");
    assert_eq!(devices(&app, &alice).await, first, "the same bytes again");
}

async fn linking_without_the_optional_phone_number_capability_is_refused(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (alice, keys) = app.client.register_new().await.unwrap();
    let code = app.client.link_code(&alice).await.unwrap();
    let mut without = attributes_json();
    without["capabilities"] = json!({"storage": true});
    let (status, body, _) = link_with_code(&app, &code.verification_code, &keys, without).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("optionalPhoneNumber")
    );
    let mut refused = attributes_json();
    refused["capabilities"] = json!({"optionalPhoneNumber": false});
    let (status, _, _) = link_with_code(&app, &code.verification_code, &keys, refused).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(devices(&app, &alice).await.len(), 1, "nothing linked");
    // The code was not used up.
    let (status, _, _) =
        link_with_code(&app, &code.verification_code, &keys, attributes_json()).await;
    assert_eq!(status, StatusCode::OK);
}

async fn rename(
    app: &TestApp,
    who: &DeviceCredentials,
    query: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = app
        .client
        .http()
        .put(app.client.url(&format!("/v1/accounts/name/{query}")))
        .header("Authorization", who.authorization())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn renames_are_limited_per_device(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config_with_limit(Limit::SetDeviceName, 2, 60_000.0)).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let (bob, _) = app.client.register_new().await.unwrap();
    let name =
        json!({"deviceName": base64::engine::general_purpose::STANDARD_NO_PAD.encode(b"phone")});
    assert_eq!(
        rename(&app, &alice, "", name.clone()).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        rename(&app, &alice, "", name.clone()).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = rename(&app, &alice, "", name.clone()).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!(429))
    );
    assert_eq!(
        rename(&app, &bob, "", name).await.0,
        StatusCode::NO_CONTENT,
        "its own bucket"
    );
    app.stop().await;
}

async fn devices_are_renamed_by_themselves_or_by_the_primary(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (alice, keys) = app.client.register_new().await.unwrap();
    let laptop = app
        .client
        .link_device(
            &app.client
                .link_code(&alice)
                .await
                .unwrap()
                .verification_code,
            &keys,
            default_attributes(),
        )
        .await
        .unwrap();
    let name = |bytes: &[u8]| json!({"deviceName": base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)});
    assert_eq!(
        rename(&app, &alice, "", name(b"phone")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        rename(&app, &alice, "?deviceId=2", name(b"laptop")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        rename(&app, &laptop, "", name(b"my laptop")).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = rename(&app, &laptop, "?deviceId=1", name(b"mine")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], 403);
    let (status, body) = rename(&app, &alice, "?deviceId=3", name(b"ghost")).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!(404))
    );
    // Bad input: each a clear 4xx with a JSON body, nothing stored.
    for (query, body, expected) in [
        (
            "",
            json!({"deviceName": "not base64!"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "",
            json!({"deviceName": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("", name(&[7; 226]), StatusCode::UNPROCESSABLE_ENTITY),
        ("", json!({}), StatusCode::BAD_REQUEST),
        ("?deviceId=abc", name(b"x"), StatusCode::BAD_REQUEST),
        ("?deviceId=0", name(b"x"), StatusCode::BAD_REQUEST),
    ] {
        let (status, error) = rename(&app, &alice, query, body.clone()).await;
        assert_eq!(status, expected, "{query} {body}");
        assert_eq!(error["code"], expected.as_u16(), "{query} {body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let names: Vec<Option<Vec<u8>>> = devices(&app, &alice)
        .await
        .iter()
        .map(|d| {
            d.name.as_deref().map(|n| {
                base64::engine::general_purpose::STANDARD
                    .decode(n)
                    .expect("std-pad")
            })
        })
        .collect();
    assert_eq!(
        names,
        vec![Some(b"phone".to_vec()), Some(b"my laptop".to_vec())]
    );
    // The body is bounded (a 225-byte name fits many times over in 1 KiB).
    let (status, error) = rename(&app, &alice, "", json!({"deviceName": "A".repeat(2000)})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["code"], 413);
    // Only 225 bytes fit, and 225 do.
    assert_eq!(
        rename(&app, &alice, "", name(&[7; 225])).await.0,
        StatusCode::NO_CONTENT
    );
}

async fn wait(
    client: &sealpost::client::Client,
    who: &DeviceCredentials,
    token: &str,
    query: &str,
) -> (StatusCode, Value) {
    let response = client
        .http()
        .get(client.url(&format!(
            "/v1/devices/wait_for_linked_device/{token}{query}"
        )))
        .header("Authorization", who.authorization())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn a_primary_waiting_for_its_link_hears_of_the_device(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (alice, keys) = app.client.register_new().await.unwrap();
    let code = app.client.link_code(&alice).await.unwrap();
    // The identifier is url-nopad SHA-256 of the code's text.
    let digest = <sha2::Sha256 as sha2::Digest>::digest(code.verification_code.as_bytes());
    assert_eq!(
        code.token_identifier,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    );
    let waiter = {
        let (app_client, alice, token) = (
            app.client.clone(),
            alice.clone(),
            code.token_identifier.clone(),
        );
        tokio::spawn(async move { wait(&app_client, &alice, &token, "?timeout=20").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, _) =
        link_with_code(&app, &code.verification_code, &keys, attributes_json()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, info) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the wait ends when the device links")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let listed = devices(&app, &alice).await;
    assert_eq!(
        info,
        serde_json::to_value(&listed[1]).unwrap(),
        "its DeviceInfo"
    );
    // Kept: a later wait answers at once.
    let (status, again) = wait(&app.client, &alice, &code.token_identifier, "").await;
    assert_eq!((status, again), (StatusCode::OK, info));

    // Another account does not learn of it.
    let (bob, _) = app.client.register_new().await.unwrap();
    let (status, _) = wait(&app.client, &bob, &code.token_identifier, "?timeout=1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Nothing linked within the timeout: 204.
    let unknown = "u".repeat(43);
    let (status, body) = wait(&app.client, &alice, &unknown, "?timeout=1").await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    // Bad input.
    for (token, query) in [
        ("short".to_owned(), ""),
        ("x".repeat(65), ""),
        (format!("{}.", "a".repeat(42)), ""),
        (unknown.clone(), "?timeout=0"),
        (unknown.clone(), "?timeout=3601"),
        (unknown.clone(), "?timeout=soon"),
    ] {
        let (status, error) = wait(&app.client, &alice, &token, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{token}{query}");
        assert_eq!(error["code"], 400);
    }
    let anonymous = app
        .client
        .http()
        .get(
            app.client
                .url(&format!("/v1/devices/wait_for_linked_device/{unknown}")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

async fn waits_are_limited_per_account(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app =
        TestApp::start(stores.config_with_limit(Limit::WaitForLinkedDevice, 2, 600_000.0)).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let token = "w".repeat(43);
    for _ in 0..2 {
        assert_eq!(
            wait(&app.client, &alice, &token, "?timeout=1").await.0,
            StatusCode::NO_CONTENT
        );
    }
    let (status, error) = wait(&app.client, &alice, &token, "?timeout=1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["code"], 429);
}

/// Two pods on the same Postgres and Redis: the primary waits on one, the device links
/// on the other.
#[tokio::test]
async fn a_wait_on_one_pod_hears_a_link_made_on_another() {
    let stores = TestStores::new(Backend::External).await;
    let one = TestApp::start(stores.config()).await;
    let two = TestApp::start(stores.config()).await;
    let (alice, keys) = one.client.register_new().await.unwrap();
    let code = one.client.link_code(&alice).await.unwrap();
    let waiter = {
        let (client, alice, token) = (
            one.client.clone(),
            alice.clone(),
            code.token_identifier.clone(),
        );
        tokio::spawn(async move { wait(&client, &alice, &token, "?timeout=20").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, linked, _) =
        link_with_code(&two, &code.verification_code, &keys, attributes_json()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, info) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("pod one hears of the link made on pod two")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["id"], linked["deviceId"]);
    one.stop().await;
    two.stop().await;
}

async fn a_wait_ends_when_its_server_shuts_down(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let waiter = {
        let (client, alice) = (app.client.clone(), alice.clone());
        tokio::spawn(async move {
            client
                .http()
                .get(client.url(&format!(
                    "/v1/devices/wait_for_linked_device/{}?timeout=3600",
                    "s".repeat(43)
                )))
                .header("Authorization", alice.authorization())
                .send()
                .await
                .map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `stop` fails the test unless the server drains within 10 s: the hour-long wait must
    // not hold it up.
    app.stop().await;
    let status = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the wait was answered")
        .unwrap()
        .expect("an answer, not a dropped connection");
    assert_eq!(status, StatusCode::NO_CONTENT);
}

async fn the_provisioning_keepalive_answers_over_http_and_on_the_provisioning_socket(
    backend: Backend,
) {
    let (app, _stores) = spawn_app(backend).await;
    let response = app
        .client
        .http()
        .get(app.client.url("/v1/keepalive/provisioning"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut socket = WsClient::connect_provisioning(&app.address).await.unwrap();
    socket
        .next_request(Duration::from_secs(5))
        .await
        .expect("the address");
    let alive = socket
        .request("GET", "/v1/keepalive/provisioning", None, vec![])
        .await
        .unwrap();
    assert_eq!(alive.status, 200);
    assert!(alive.header("X-Signal-Timestamp").is_some());
    let other = socket
        .request("GET", "/v1/devices", None, vec![])
        .await
        .unwrap();
    assert_eq!(other.status, 404, "nothing else is served there");
    socket.close().await;
}

async fn exists(app: &TestApp, service_id: &str, authorization: Option<String>) -> StatusCode {
    let mut request = app.client.http().head(
        app.client
            .url(&format!("/v1/accounts/account/{service_id}")),
    );
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    request.send().await.unwrap().status()
}

async fn the_existence_check_is_anonymous_and_limited_per_client_address(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app =
        TestApp::start(stores.config_with_limit(Limit::CheckAccountExistence, 5, 600_000.0)).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let aci = alice.aci.to_string();
    assert_eq!(exists(&app, &aci, None).await, StatusCode::OK);
    assert_eq!(
        exists(&app, &format!("ACI:{aci}"), None).await,
        StatusCode::OK
    );
    assert_eq!(
        exists(&app, &uuid::Uuid::new_v4().to_string(), None).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        exists(&app, "not-a-uuid", None).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        exists(&app, &format!("PNI:{aci}"), None).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        exists(&app, &aci, Some(alice.authorization())).await,
        StatusCode::BAD_REQUEST,
        "authenticated callers are refused"
    );
    // Five permits: the three lookups above took one each (refused input takes none).
    assert_eq!(exists(&app, &aci, None).await, StatusCode::OK);
    assert_eq!(exists(&app, &aci, None).await, StatusCode::OK);
    assert_eq!(
        exists(&app, &aci, None).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

on_both_backends!(
    whoami_and_registration_carry_every_field_of_the_account_identity,
    a_linked_device_s_creation_time_opens_with_the_identity_key_only,
    linking_without_the_optional_phone_number_capability_is_refused,
    devices_are_renamed_by_themselves_or_by_the_primary,
    renames_are_limited_per_device,
    a_primary_waiting_for_its_link_hears_of_the_device,
    waits_are_limited_per_account,
    a_wait_ends_when_its_server_shuts_down,
    the_provisioning_keepalive_answers_over_http_and_on_the_provisioning_socket,
    the_existence_check_is_anonymous_and_limited_per_client_address,
);
