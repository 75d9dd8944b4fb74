//! Prekey uploads through the real server (`PUT /v2/keys`): non-empty lists replace, absent
//! ones are kept; a bad signature anywhere is a 422 that changes nothing; malformed uploads
//! get clear 400s; and the key check compares the digest of the stored keys. Every test runs
//! embedded and on Postgres+Redis.

use crate::common::{Backend, TestApp};
use reqwest::StatusCode;
use sealpost::api::entities::{ErrorJson, SetKeysRequestJson};
use sealpost::client::{AccountKeys, DeviceCredentials};
use sealpost::domain::encoding::{decode_base64, encode_base64};
use sealpost::domain::keys::{EcPublicKey, key_digest};
use serde_json::json;

use super::keys::{app, upload};

async fn put_keys_raw(
    app: &TestApp,
    credentials: &DeviceCredentials,
    body: serde_json::Value,
) -> (StatusCode, Option<ErrorJson>) {
    let response = app
        .client
        .http()
        .put(app.client.url("/v2/keys"))
        .header("Authorization", credentials.authorization())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.ok())
}

async fn uploads_replace_non_empty_lists_and_keep_absent_ones(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (me, keys) = app.client.register_new().await.unwrap();
    let counts = app.client.key_counts(&me).await.unwrap();
    assert_eq!((counts.count, counts.pq_count), (0, 0));

    app.client
        .upload_keys(&me, &upload(&keys, 1..11, 100..105))
        .await
        .unwrap();
    let counts = app.client.key_counts(&me).await.unwrap();
    assert_eq!((counts.count, counts.pq_count), (10, 5));

    // An empty EC list and an absent Kyber list keep what is stored.
    let keep = SetKeysRequestJson {
        pre_keys: Some(vec![]),
        ..Default::default()
    };
    app.client.upload_keys(&me, &keep).await.unwrap();
    let counts = app.client.key_counts(&me).await.unwrap();
    assert_eq!((counts.count, counts.pq_count), (10, 5));

    // A non-empty list replaces its type only.
    let replace = SetKeysRequestJson {
        pre_keys: Some(keys.one_time_pre_keys(50..53)),
        ..Default::default()
    };
    app.client.upload_keys(&me, &replace).await.unwrap();
    let counts = app.client.key_counts(&me).await.unwrap();
    assert_eq!((counts.count, counts.pq_count), (3, 5));
    assert_eq!(
        app.metric("sealpost_prekeys_stored_total{kind=\"ec\"}")
            .await,
        13.0
    );
    assert_eq!(
        app.metric("sealpost_prekeys_stored_total{kind=\"kem\"}")
            .await,
        5.0
    );
    app.stop().await;
}

async fn a_bad_signature_anywhere_gets_422_and_changes_nothing(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (me, keys) = app.client.register_new().await.unwrap();
    app.client
        .upload_keys(&me, &upload(&keys, 1..4, 1..4))
        .await
        .unwrap();
    let stranger = AccountKeys::generate();

    let mut bad_kem = upload(&keys, 10..20, 10..20);
    bad_kem.pq_pre_keys.as_mut().unwrap()[5].signature = stranger.kem_pre_key_json(1).signature;
    let mut bad_signed = upload(&keys, 10..20, 10..20);
    bad_signed.signed_pre_key = Some(stranger.signed_pre_key_json(9));
    let mut flipped = keys.kem_pre_key_json(2);
    let mut sig = decode_base64("s", &flipped.signature).unwrap();
    sig[63] ^= 0x80;
    flipped.signature = encode_base64(&sig);
    let bad_last_resort = SetKeysRequestJson {
        pre_keys: Some(keys.one_time_pre_keys(10..20)),
        pq_last_resort_pre_key: Some(flipped),
        ..Default::default()
    };

    for body in [bad_kem, bad_signed, bad_last_resort] {
        let err = app.client.upload_keys(&me, &body).await.unwrap_err();
        assert_eq!(
            err.status(),
            Some(StatusCode::UNPROCESSABLE_ENTITY),
            "{err}"
        );
    }
    let counts = app.client.key_counts(&me).await.unwrap();
    assert_eq!((counts.count, counts.pq_count), (3, 3));
    let digest = key_digest(
        &EcPublicKey::parse("i", &keys.identity_public()).unwrap(),
        &keys.signed_pre_key_json(1).to_ec("s").unwrap(),
        &keys.kem_pre_key_json(1).to_kem("k").unwrap(),
    );
    assert!(
        app.client.check_keys(&me, &digest).await.unwrap(),
        "signed keys unchanged"
    );
    assert_eq!(
        app.metric("sealpost_prekeys_signature_rejections_total")
            .await,
        3.0
    );
    app.stop().await;
}

async fn malformed_uploads_get_clear_400s(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (me, keys) = app.client.register_new().await.unwrap();
    let ec = |ids: std::ops::Range<i64>| serde_json::to_value(keys.one_time_pre_keys(ids)).unwrap();
    let mut wrong_type = keys.identity_public();
    wrong_type[0] = 0x08;
    let cases = [
        (json!({"preKeys": ec(0..101)}), "at most 100"),
        (
            json!({"pqPreKeys": serde_json::to_value(keys.one_time_pq_pre_keys(0..101)).unwrap()}),
            "at most 100",
        ),
        (
            json!({"preKeys": [{"keyId": 1, "publicKey": encode_base64(&keys.identity_public())}, {"keyId": 1, "publicKey": encode_base64(&keys.identity_public())}]}),
            "repeats key id 1",
        ),
        (
            json!({"preKeys": [{"keyId": -1, "publicKey": encode_base64(&keys.identity_public())}]}),
            "out of range",
        ),
        (
            json!({"preKeys": [{"keyId": 1, "publicKey": encode_base64(&wrong_type)}]}),
            "key type 0x08",
        ),
        (
            json!({"preKeys": [{"keyId": 1, "publicKey": "%%%"}]}),
            "not valid base64",
        ),
        (
            json!({"pqLastResortPreKey": {"keyId": 1, "publicKey": encode_base64(&keys.identity_public()), "signature": encode_base64(&[0u8; 64])}}),
            "1569 bytes",
        ),
        (
            json!({"signedPreKey": {"keyId": 1, "publicKey": encode_base64(&keys.identity_public()), "signature": encode_base64(&[0u8; 12])}}),
            "64 bytes",
        ),
        (json!({"preKeys": "nope"}), "invalid JSON"),
    ];
    for (body, expected) in cases {
        let (status, error) = put_keys_raw(&app, &me, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{expected}");
        let message = error.unwrap().message;
        assert!(
            message.contains(expected),
            "{message:?} should mention {expected:?}"
        );
    }
    let response = app
        .client
        .http()
        .get(app.client.url("/v2/keys?identity=pni"))
        .header("Authorization", me.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let counts = app.client.key_counts(&me).await.unwrap();
    assert_eq!((counts.count, counts.pq_count), (0, 0));
    app.stop().await;
}

async fn the_key_check_compares_the_digest_of_the_stored_keys(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (me, keys) = app.client.register_new().await.unwrap();
    let identity = EcPublicKey::parse("i", &keys.identity_public()).unwrap();
    let digest = key_digest(
        &identity,
        &keys.signed_pre_key_json(1).to_ec("s").unwrap(),
        &keys.kem_pre_key_json(1).to_kem("k").unwrap(),
    );
    assert!(app.client.check_keys(&me, &digest).await.unwrap());
    let mut other = digest;
    other[0] ^= 1;
    assert!(!app.client.check_keys(&me, &other).await.unwrap());

    let new_signed = keys.signed_pre_key_json(2);
    let new_last_resort = keys.kem_pre_key_json(3);
    let body = SetKeysRequestJson {
        signed_pre_key: Some(new_signed.clone()),
        pq_last_resort_pre_key: Some(new_last_resort.clone()),
        ..Default::default()
    };
    app.client.upload_keys(&me, &body).await.unwrap();
    assert!(!app.client.check_keys(&me, &digest).await.unwrap());
    let new_digest = key_digest(
        &identity,
        &new_signed.to_ec("s").unwrap(),
        &new_last_resort.to_kem("k").unwrap(),
    );
    assert!(app.client.check_keys(&me, &new_digest).await.unwrap());

    for (identity_type, digest, status) in [
        ("pni", encode_base64(&new_digest), StatusCode::BAD_REQUEST),
        ("aci", encode_base64(&[0u8; 31]), StatusCode::BAD_REQUEST),
    ] {
        let response = app
            .client
            .http()
            .post(app.client.url("/v2/keys/check"))
            .header("Authorization", me.authorization())
            .json(&json!({"identityType": identity_type, "digest": digest}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    app.stop().await;
}

on_both_backends!(
    uploads_replace_non_empty_lists_and_keep_absent_ones,
    a_bad_signature_anywhere_gets_422_and_changes_nothing,
    malformed_uploads_get_clear_400s,
    the_key_check_compares_the_digest_of_the_stored_keys,
);
