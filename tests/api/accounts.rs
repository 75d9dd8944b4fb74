//! Accounts through the real server over HTTP: registration, whoami, attributes, deletion,
//! authentication, and the error contract. Every test runs embedded and on Postgres+Redis.

use crate::common::{Backend, spawn_app};
use reqwest::StatusCode;
use sealpost::api::entities::ErrorJson;
use sealpost::client::{
    AccountKeys, DeviceCredentials, basic_auth, default_attributes, random_password,
};
use sealpost::domain::encoding::encode_base64;
use sealpost::domain::ids::DeviceId;
use serde_json::{Value, json};

async fn error_body(response: reqwest::Response) -> ErrorJson {
    response.json().await.expect("a JSON error body")
}

async fn registering_returns_a_new_aci_that_whoami_confirms(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let keys = AccountKeys::generate();
    let password = random_password();
    let response = app
        .client
        .http()
        .post(app.client.url("/v1/registration"))
        .header("Authorization", basic_auth("ignored", &password))
        .json(&keys.registration_request(default_attributes()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-signal-timestamp"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["number"], Value::Null);
    assert_eq!(body["pni"], Value::Null);
    assert_eq!(body["storageCapable"], json!(false));
    assert_eq!(body["reregistration"], json!(false));
    let aci = body["uuid"].as_str().unwrap().to_owned();

    let credentials = DeviceCredentials {
        aci: aci.parse().unwrap(),
        device: DeviceId::PRIMARY,
        password: password.clone(),
    };
    let me = app.client.whoami(&credentials).await.unwrap();
    assert_eq!(me.uuid.to_string(), aci);
    assert_eq!(me.number, None);

    // Without a device suffix the username means the primary device.
    let response = app
        .client
        .http()
        .get(app.client.url("/v1/accounts/whoami"))
        .header("Authorization", basic_auth(&aci, &password))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

async fn wrong_missing_or_malformed_credentials_get_401_with_a_json_body(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (credentials, _) = app.client.register_new().await.unwrap();
    let url = app.client.url("/v1/accounts/whoami");
    let wrong_password = basic_auth(&credentials.aci.to_string(), "not-the-password-at-all");
    let unknown_account = basic_auth(&uuid::Uuid::new_v4().to_string(), &credentials.password);
    let other_device = basic_auth(&format!("{}.2", credentials.aci), &credentials.password);
    for header in [
        None,
        Some(wrong_password.as_str()),
        Some(unknown_account.as_str()),
        Some(other_device.as_str()),
        Some("Basic !!!not-base64"),
        Some("Bearer token"),
    ] {
        let mut request = app.client.http().get(&url);
        if let Some(header) = header {
            request = request.header("Authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        assert!(response.headers().contains_key("x-signal-timestamp"));
        let body = error_body(response).await;
        assert_eq!(body.code, 401);
        assert!(!body.message.is_empty());
    }
    app.stop().await;
}

async fn an_unknown_account_pays_the_same_argon2_verification_as_a_wrong_password(
    backend: Backend,
) {
    let (app, _stores) = spawn_app(backend).await;
    let (credentials, _) = app.client.register_new().await.unwrap();
    let sample = "sealpost_auth_password_verifications_total";
    let before = app.metric(sample).await;

    let mut wrong = credentials.clone();
    wrong.password = random_password();
    assert_eq!(
        app.client.whoami(&wrong).await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let after_wrong = app.metric(sample).await;

    let mut unknown = credentials.clone();
    unknown.aci = sealpost::domain::ids::Aci::random();
    assert_eq!(
        app.client.whoami(&unknown).await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let after_unknown = app.metric(sample).await;

    assert_eq!(after_wrong - before, 1.0);
    assert_eq!(after_unknown - after_wrong, 1.0);
    assert_eq!(
        app.metric("sealpost_auth_attempts_total{outcome=\"bad_password\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("sealpost_auth_attempts_total{outcome=\"unknown_device\"}")
            .await,
        1.0
    );
    app.stop().await;
}

async fn repeated_requests_are_served_from_the_credential_cache(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (credentials, _) = app.client.register_new().await.unwrap();
    app.client.whoami(&credentials).await.unwrap();
    let sample = "sealpost_auth_password_verifications_total";
    let verified = app.metric(sample).await;
    for _ in 0..20 {
        app.client.whoami(&credentials).await.unwrap();
    }
    assert_eq!(
        app.metric(sample).await,
        verified,
        "no argon2 after warm-up"
    );
    assert_eq!(
        app.metric("sealpost_auth_attempts_total{outcome=\"ok_cached\"}")
            .await,
        20.0
    );
    // A wrong password for a cached device is still checked in full, and refused.
    let mut wrong = credentials.clone();
    wrong.password.push('x');
    assert_eq!(
        app.client.whoami(&wrong).await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    app.stop().await;
}

async fn a_bad_signature_gets_422_and_stores_nothing(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let keys = AccountKeys::generate();
    let password = random_password();

    let mut bad_ec = keys.registration_request(default_attributes());
    let other = AccountKeys::generate();
    bad_ec.aci_signed_pre_key.signature = other.signed_pre_key_json(1).signature;
    let mut bad_kem = keys.registration_request(default_attributes());
    let mut sig = sealpost::domain::encoding::decode_base64(
        "s",
        &bad_kem.aci_pq_last_resort_pre_key.signature,
    )
    .unwrap();
    sig[63] ^= 0x80; // the Edwards sign bit
    bad_kem.aci_pq_last_resort_pre_key.signature = encode_base64(&sig);

    for request in [bad_ec, bad_kem] {
        let response = app
            .client
            .http()
            .post(app.client.url("/v1/registration"))
            .header("Authorization", basic_auth("", &password))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = error_body(response).await;
        assert_eq!(body.code, 422);
        assert!(body.message.contains("signature"), "{}", body.message);
    }
    assert_eq!(
        app.metric("sealpost_accounts_registrations_total").await,
        0.0
    );
    app.stop().await;
}

async fn malformed_registrations_get_clear_400s(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let keys = AccountKeys::generate();
    let password = random_password();
    let good = serde_json::to_value(keys.registration_request(default_attributes())).unwrap();

    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut v = good.clone();
    v["aciIdentityKey"] = json!("***");
    cases.push((v, "aciIdentityKey is not valid base64"));
    let mut v = good.clone();
    v["aciIdentityKey"] = json!(encode_base64(&[5u8; 32]));
    cases.push((v, "aciIdentityKey must be 33 bytes"));
    let mut v = good.clone();
    let mut wrong_type = keys.identity_public();
    wrong_type[0] = 0x08;
    v["aciIdentityKey"] = json!(encode_base64(&wrong_type));
    cases.push((v, "key type 0x08"));
    let mut v = good.clone();
    v["aciPqLastResortPreKey"]["publicKey"] = json!(encode_base64(&keys.identity_public()));
    cases.push((v, "aciPqLastResortPreKey.publicKey must be 1569 bytes"));
    let mut v = good.clone();
    v["aciSignedPreKey"]["keyId"] = json!(2_147_483_648i64);
    cases.push((v, "out of range"));
    let mut v = good.clone();
    v["accountAttributes"]["registrationId"] = json!(16384);
    cases.push((v, "registrationId 16384 is out of range"));
    let mut v = good.clone();
    v["accountAttributes"]["unidentifiedAccessKey"] = json!(encode_base64(&[1u8; 15]));
    cases.push((v, "unidentifiedAccessKey must be 16 bytes"));
    let mut v = good.clone();
    v["accountAttributes"]["name"] = json!(encode_base64(&[1u8; 226]));
    cases.push((v, "name must be at most 225 bytes"));
    let mut v = good.clone();
    v["accountAttributes"]["capabilities"] = json!({"storage": "yes"});
    cases.push((v, "invalid JSON"));
    let mut v = good.clone();
    v["accountAttributes"]["capabilities"] = serde_json::to_value(
        (0..65)
            .map(|i| (format!("c{i}"), true))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap();
    cases.push((v, "at most 64"));
    // NUL (which Postgres's jsonb cannot hold) and other control characters name no
    // capability: 400 on every backend, never a 500 on one and 200 on another.
    for name in ["nul\u{0}name", "bell\u{7}", "line\nbreak"] {
        let mut v = good.clone();
        v["accountAttributes"]["capabilities"] = json!({ name: true });
        cases.push((v, "control characters"));
    }
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("aciSignedPreKey");
    cases.push((v, "aciSignedPreKey"));

    for (body, expected) in cases {
        let response = app
            .client
            .http()
            .post(app.client.url("/v1/registration"))
            .header("Authorization", basic_auth("", &password))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{expected}");
        let error = error_body(response).await;
        assert_eq!(error.code, 400);
        assert!(
            error.message.contains(expected),
            "{:?} should mention {expected:?}",
            error.message
        );
    }

    // Not JSON at all, and a password that is too short.
    let response = app
        .client
        .http()
        .post(app.client.url("/v1/registration"))
        .header("Authorization", basic_auth("", &password))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(error_body(response).await.message.contains("invalid JSON"));
    let response = app
        .client
        .http()
        .post(app.client.url("/v1/registration"))
        .header("Authorization", basic_auth("", "short"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(error_body(response).await.message.contains("password"));
    // Too large a body: 413 with the JSON error body.
    let response = app
        .client
        .http()
        .post(app.client.url("/v1/registration"))
        .header("Authorization", basic_auth("", &password))
        .header("Content-Type", "application/json")
        .body(format!(
            "{{\"pad\":\"{}\"}}",
            "x".repeat(sealpost::api::JSON_LIMIT)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_body(response).await.code, 413);
    // No credentials at all.
    let response = app
        .client
        .http()
        .post(app.client.url("/v1/registration"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(
        app.metric("sealpost_accounts_registrations_total").await,
        0.0
    );
    app.stop().await;
}

async fn attributes_are_replaced_and_validated(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (credentials, _) = app.client.register_new().await.unwrap();
    let mut attributes = default_attributes();
    attributes.registration_id = 4242;
    attributes.name = Some(encode_base64(b"encrypted name"));
    attributes
        .capabilities
        .insert("someFutureCapability".into(), true);
    attributes.unrestricted_unidentified_access = true;
    app.client
        .set_attributes(&credentials, &attributes)
        .await
        .unwrap();

    // The trailing-slash-less form is the same endpoint.
    let response = app
        .client
        .http()
        .put(app.client.url("/v1/accounts/attributes"))
        .header("Authorization", credentials.authorization())
        .json(&attributes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let mut bad = attributes.clone();
    bad.registration_id = 0;
    let err = app
        .client
        .set_attributes(&credentials, &bad)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    let response = app
        .client
        .http()
        .put(app.client.url("/v1/accounts/attributes/"))
        .json(&attributes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn deleting_the_account_makes_its_credentials_fail(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (credentials, _) = app.client.register_new().await.unwrap();
    let (bystander, _) = app.client.register_new().await.unwrap();
    app.client.whoami(&credentials).await.unwrap();
    app.client.delete_account(&credentials).await.unwrap();
    assert_eq!(
        app.client.whoami(&credentials).await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        app.client
            .delete_account(&credentials)
            .await
            .unwrap_err()
            .status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    app.client.whoami(&bystander).await.unwrap();
    assert_eq!(app.metric("sealpost_accounts_deleted_total").await, 1.0);
    app.stop().await;
}

async fn unknown_paths_and_methods_get_json_errors(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let response = app
        .client
        .http()
        .get(app.client.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().contains_key("x-signal-timestamp"));
    assert_eq!(error_body(response).await.code, 404);
    let response = app
        .client
        .http()
        .get(app.client.url("/v1/registration"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_body(response).await.code, 405);
    app.stop().await;
}

async fn metrics_count_requests_by_route_template_without_identities(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (credentials, _) = app.client.register_new().await.unwrap();
    app.client.whoami(&credentials).await.unwrap();
    let metrics = app.metrics().await;
    assert!(metrics.contains(
        "sealpost_http_requests_total{method=\"GET\",route=\"/v1/accounts/whoami\",status=\"200\"} 1"
    ), "{metrics}");
    assert!(metrics.contains("sealpost_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("sealpost_accounts_registrations_total 1"));
    assert!(metrics.contains("sealpost_build_info"));
    assert!(!metrics.contains(&credentials.aci.to_string()));
    app.stop().await;
}

/// A capability name with a NUL or another control character is refused with a JSON 400 on
/// both backends, over HTTP and through the WebSocket tunnel, and the stored attributes are
/// untouched.
async fn a_control_character_in_a_capability_name_is_a_400_on_every_backend(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (credentials, _) = app.client.register_new().await.unwrap();
    let before = serde_json::to_value(app.client.whoami(&credentials).await.unwrap()).unwrap();
    let mut bad = default_attributes();
    bad.capabilities.insert("nul\u{0}".into(), true);
    let response = app
        .client
        .http()
        .put(app.client.url("/v1/accounts/attributes/"))
        .header("Authorization", credentials.authorization())
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error = error_body(response).await;
    assert!(
        error.message.contains("control characters"),
        "{}",
        error.message
    );

    let ws = sealpost::client::ws::WsClient::connect(&app.address, Some(&credentials))
        .await
        .unwrap();
    let response = ws
        .request_json("PUT", "/v1/accounts/attributes/", &bad, vec![])
        .await
        .unwrap();
    assert_eq!(response.status, 400);
    let error: ErrorJson = response.json().unwrap();
    assert!(
        error.message.contains("control characters"),
        "{}",
        error.message
    );

    // Nothing stored changed: the same identity, and the credentials still work.
    let after = serde_json::to_value(app.client.whoami(&credentials).await.unwrap()).unwrap();
    assert_eq!(before, after);
    app.stop().await;
}

on_both_backends!(
    a_control_character_in_a_capability_name_is_a_400_on_every_backend,
    registering_returns_a_new_aci_that_whoami_confirms,
    wrong_missing_or_malformed_credentials_get_401_with_a_json_body,
    an_unknown_account_pays_the_same_argon2_verification_as_a_wrong_password,
    repeated_requests_are_served_from_the_credential_cache,
    a_bad_signature_gets_422_and_stores_nothing,
    malformed_registrations_get_clear_400s,
    attributes_are_replaced_and_validated,
    deleting_the_account_makes_its_credentials_fail,
    unknown_paths_and_methods_get_json_errors,
    metrics_count_requests_by_route_template_without_identities,
);
