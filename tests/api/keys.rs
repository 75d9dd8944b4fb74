//! Prekey fetches through the real server (`GET /v2/keys`): atomic one-time claims with
//! exhaustion and the last-resort fallback, valid signatures on what is handed out, access
//! by credentials or access key, the `prekeys` limit, deletion with the account, and no key
//! handed out twice across two processes. Uploads and the key check are in
//! `key_uploads.rs`. Every test runs embedded and on Postgres+Redis.

use std::collections::HashSet;

use crate::common::{Backend, TestApp, TestStores};
use reqwest::StatusCode;
use sealpost::api::entities::SetKeysRequestJson;
use sealpost::client::{AccountKeys, KeyAccess};
use sealpost::domain::encoding::{decode_base64, encode_base64};
use sealpost::domain::ids::Aci;
use sealpost::domain::keys::{EcPublicKey, KemPublicKey, Signature, SignedPreKey};
use sealpost::limits::Limit;

async fn app_with_prekey_bucket(backend: Backend, bucket_size: u64) -> (TestApp, TestStores) {
    let stores = TestStores::new(backend).await;
    let config = stores.config_with_limit(Limit::PreKeys, bucket_size, 600_000.0);
    (TestApp::start(config).await, stores)
}

pub(super) async fn app(backend: Backend) -> (TestApp, TestStores) {
    app_with_prekey_bucket(backend, 10_000).await
}

pub(super) fn upload(
    keys: &AccountKeys,
    ec: std::ops::Range<i64>,
    kem: std::ops::Range<i64>,
) -> SetKeysRequestJson {
    SetKeysRequestJson {
        pre_keys: Some(keys.one_time_pre_keys(ec)),
        pq_pre_keys: Some(keys.one_time_pq_pre_keys(kem)),
        ..Default::default()
    }
}

async fn fetches_consume_one_key_of_each_kind_then_fall_back(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (target, keys) = app.client.register_new().await.unwrap();
    let (caller, _) = app.client.register_new().await.unwrap();
    let uploaded = upload(&keys, 7..9, 40..41);
    app.client.upload_keys(&target, &uploaded).await.unwrap();
    let access = KeyAccess::Device(&caller);

    let first = app
        .client
        .fetch_keys(access, &target.aci, "1")
        .await
        .unwrap();
    assert_eq!(first.identity_key, encode_base64(&keys.identity_public()));
    let device = &first.devices[0];
    assert_eq!(device.device_id, 1);
    // Signatures are randomized: compare what was registered by id and key.
    let registered = keys.signed_pre_key_json(1);
    assert_eq!(
        (
            device.signed_pre_key.key_id,
            &device.signed_pre_key.public_key
        ),
        (registered.key_id, &registered.public_key)
    );
    assert_eq!(
        device.pre_key.as_ref(),
        Some(&uploaded.pre_keys.as_ref().unwrap()[0])
    );
    assert_eq!(
        device.pq_pre_key.as_ref(),
        Some(&uploaded.pq_pre_keys.as_ref().unwrap()[0])
    );

    // The Kyber one-time keys are gone: the last-resort key stands in.
    let second = app
        .client
        .fetch_keys(access, &target.aci, "*")
        .await
        .unwrap();
    let device = &second.devices[0];
    assert_eq!(
        device.pre_key.as_ref(),
        Some(&uploaded.pre_keys.as_ref().unwrap()[1])
    );
    let last_resort = keys.kem_pre_key_json(1);
    let pq = device.pq_pre_key.as_ref().unwrap();
    assert_eq!(
        (pq.key_id, &pq.public_key),
        (last_resort.key_id, &last_resort.public_key)
    );

    // Out of EC keys too: preKey is null (present in the JSON, as null).
    let raw: serde_json::Value = app
        .client
        .http()
        .get(app.client.url(&format!("/v2/keys/{}/1", target.aci)))
        .header("Authorization", caller.authorization())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["devices"][0]["preKey"], serde_json::Value::Null);
    assert!(
        raw["devices"][0]
            .as_object()
            .unwrap()
            .contains_key("preKey")
    );
    assert!(raw["devices"][0]["registrationId"].as_u64().is_some());

    let counts = app.client.key_counts(&target).await.unwrap();
    assert_eq!((counts.count, counts.pq_count), (0, 0));
    assert_eq!(
        app.metric("sealpost_prekeys_exhausted_total{kind=\"ec\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("sealpost_prekeys_exhausted_total{kind=\"kem\"}")
            .await,
        2.0
    );
    assert_eq!(
        app.metric("sealpost_prekeys_fetches_total{access=\"authenticated\"}")
            .await,
        3.0
    );
    app.stop().await;
}

async fn handed_out_keys_carry_valid_signatures(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (target, keys) = app.client.register_new().await.unwrap();
    let (caller, _) = app.client.register_new().await.unwrap();
    app.client
        .upload_keys(&target, &upload(&keys, 1..2, 1..2))
        .await
        .unwrap();
    let fetched = app
        .client
        .fetch_keys(KeyAccess::Device(&caller), &target.aci, "1")
        .await
        .unwrap();
    let identity = EcPublicKey::parse(
        "identity",
        &decode_base64("i", &fetched.identity_key).unwrap(),
    )
    .unwrap();
    let device = &fetched.devices[0];
    let signed = SignedPreKey {
        key_id: device.signed_pre_key.key_id as u32,
        public_key: EcPublicKey::parse(
            "k",
            &decode_base64("k", &device.signed_pre_key.public_key).unwrap(),
        )
        .unwrap(),
        signature: Signature::parse(
            "s",
            &decode_base64("s", &device.signed_pre_key.signature).unwrap(),
        )
        .unwrap(),
    };
    signed.verify(&identity, "signedPreKey").unwrap();
    let pq = device.pq_pre_key.as_ref().unwrap();
    let kem = SignedPreKey {
        key_id: pq.key_id as u32,
        public_key: KemPublicKey::parse("k", decode_base64("k", &pq.public_key).unwrap()).unwrap(),
        signature: Signature::parse("s", &decode_base64("s", &pq.signature).unwrap()).unwrap(),
    };
    kem.verify(&identity, "pqPreKey").unwrap();
    app.stop().await;
}

async fn fetch_access_follows_credentials_or_the_access_key(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (target, keys) = app.client.register_new().await.unwrap();
    let (caller, _) = app.client.register_new().await.unwrap();
    app.client
        .upload_keys(&target, &upload(&keys, 1..50, 1..50))
        .await
        .unwrap();
    let url = |path: &str| app.client.url(path);
    let get = |path: String, headers: Vec<(&'static str, String)>| {
        let mut request = app.client.http().get(url(&path));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        async move { request.send().await.unwrap().status() }
    };
    let auth = || vec![("Authorization", caller.authorization())];
    let unknown = Aci::random();

    // The access key set at registration opens the target; anything else is 401.
    let mut attributes = sealpost::client::default_attributes();
    attributes.unidentified_access_key = Some(encode_base64(&[9u8; 16]));
    let keyed = app
        .client
        .register(
            &AccountKeys::generate().registration_request(attributes),
            &sealpost::client::random_password(),
        )
        .await
        .unwrap()
        .identity
        .uuid;
    let ok = app
        .client
        .fetch_keys(KeyAccess::AccessKey(&[9u8; 16]), &keyed, "1")
        .await
        .unwrap();
    assert_eq!(ok.devices.len(), 1);
    assert_eq!(
        app.metric("sealpost_prekeys_fetches_total{access=\"access_key\"}")
            .await,
        1.0
    );
    let uak = |bytes: &[u8]| vec![("Unidentified-Access-Key", encode_base64(bytes))];
    assert_eq!(
        get(format!("/v2/keys/{keyed}/1"), uak(&[8u8; 16])).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(format!("/v2/keys/{keyed}/1"), uak(&[9u8; 15])).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(
            format!("/v2/keys/{keyed}/1"),
            vec![("Unidentified-Access-Key", "!!".into())]
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(format!("/v2/keys/{unknown}/1"), uak(&[9u8; 16])).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(format!("/v2/keys/{keyed}/1"), vec![]).await,
        StatusCode::UNAUTHORIZED
    );

    // Authenticated: unknown target or device is 404; bad ids are 400; both headers 400.
    assert_eq!(
        get(format!("/v2/keys/{unknown}/1"), auth()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("/v2/keys/{}/2", target.aci), auth()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("/v2/keys/{}/0", target.aci), auth()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(format!("/v2/keys/{}/128", target.aci), auth()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(format!("/v2/keys/{}/abc", target.aci), auth()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(format!("/v2/keys/PNI:{}/1", target.aci), auth()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get("/v2/keys/not-a-uuid/1".into(), auth()).await,
        StatusCode::BAD_REQUEST
    );
    let mut both = auth();
    both.extend(uak(&[9u8; 16]));
    assert_eq!(
        get(format!("/v2/keys/{keyed}/1"), both).await,
        StatusCode::BAD_REQUEST
    );
    let mut wrong = caller.clone();
    wrong.password.push('x');
    assert_eq!(
        get(
            format!("/v2/keys/{}/1", target.aci),
            vec![("Authorization", wrong.authorization())]
        )
        .await,
        StatusCode::UNAUTHORIZED
    );

    // An unrestricted account accepts any 16 bytes.
    let mut attributes = sealpost::client::default_attributes();
    attributes.unrestricted_unidentified_access = true;
    app.client
        .set_attributes(&target, &attributes)
        .await
        .unwrap();
    app.client
        .fetch_keys(KeyAccess::AccessKey(&[0u8; 16]), &target.aci, "*")
        .await
        .unwrap();
    assert_eq!(
        get(format!("/v2/keys/{}/1", target.aci), uak(&[0u8; 8])).await,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

async fn authenticated_fetches_are_rate_limited_but_access_key_ones_are_not(backend: Backend) {
    let (app, _stores) = app_with_prekey_bucket(backend, 2).await;
    let (target, _) = app.client.register_new().await.unwrap();
    let (caller, _) = app.client.register_new().await.unwrap();
    let mut attributes = sealpost::client::default_attributes();
    attributes.unrestricted_unidentified_access = true;
    app.client
        .set_attributes(&target, &attributes)
        .await
        .unwrap();
    for _ in 0..2 {
        app.client
            .fetch_keys(KeyAccess::Device(&caller), &target.aci, "1")
            .await
            .unwrap();
    }
    let err = app
        .client
        .fetch_keys(KeyAccess::Device(&caller), &target.aci, "1")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    for _ in 0..5 {
        app.client
            .fetch_keys(KeyAccess::AccessKey(&[1u8; 16]), &target.aci, "1")
            .await
            .unwrap();
    }
    assert_eq!(
        app.metric("sealpost_ratelimit_hits_total{limit=\"prekeys\"}")
            .await,
        1.0
    );
    app.stop().await;
}

async fn deleting_an_account_deletes_its_keys(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (target, keys) = app.client.register_new().await.unwrap();
    let (caller, _) = app.client.register_new().await.unwrap();
    app.client
        .upload_keys(&target, &upload(&keys, 1..5, 1..5))
        .await
        .unwrap();
    app.client.delete_account(&target).await.unwrap();
    let err = app
        .client
        .fetch_keys(KeyAccess::Device(&caller), &target.aci, "*")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    app.stop().await;
}

on_both_backends!(
    fetches_consume_one_key_of_each_kind_then_fall_back,
    handed_out_keys_carry_valid_signatures,
    fetch_access_follows_credentials_or_the_access_key,
    authenticated_fetches_are_rate_limited_but_access_key_ones_are_not,
    deleting_an_account_deletes_its_keys,
);

/// Tens of concurrent clients, spread over two server processes on one Postgres, fetch the
/// same device's keys: no one-time key id is ever handed out twice, and the counts drop by
/// exactly the number handed out.
#[tokio::test]
async fn concurrent_fetches_across_two_processes_never_hand_out_a_key_twice() {
    use crate::common::process::Server;
    let stores = TestStores::new(Backend::External).await;
    let mut env = stores.process_env();
    env.push(("SEALPOST_RATE_LIMITS", "off".into()));
    let a = Server::start(&env).await;
    let b = Server::start(&env).await;
    let (target, keys) = a.client.register_new().await.unwrap();
    a.client
        .upload_keys(&target, &upload(&keys, 1000..1100, 2000..2100))
        .await
        .unwrap();
    let last_resort_id = keys.kem_pre_key_json(1).key_id;

    let mut callers = Vec::new();
    for _ in 0..4 {
        callers.push(a.client.register_new().await.unwrap().0);
    }
    let mut ec_ids = Vec::new();
    let mut kem_ids = Vec::new();
    let mut last_resorts = 0;
    let mut nulls = 0;
    // Round 1: 60 fetches (30 clients, 2 each) leave 40 of each kind.
    // Round 2: 60 more exhaust them: 40 keys, then nulls and the last-resort key.
    for (round, expected_left) in [(0, 40u32), (1, 0)] {
        let mut tasks = Vec::new();
        for client in 0..30 {
            let server = if client % 2 == 0 { &a } else { &b };
            let http = server.client.clone();
            let caller = callers[client % callers.len()].clone();
            let aci = target.aci;
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..2 {
                    got.push(
                        http.fetch_keys(KeyAccess::Device(&caller), &aci, "1")
                            .await
                            .unwrap(),
                    );
                }
                got
            }));
        }
        for task in tasks {
            for response in task.await.unwrap() {
                let device = &response.devices[0];
                match &device.pre_key {
                    Some(k) => ec_ids.push(k.key_id),
                    None => nulls += 1,
                }
                let pq = device.pq_pre_key.as_ref().unwrap();
                if pq.key_id == last_resort_id {
                    last_resorts += 1;
                } else {
                    kem_ids.push(pq.key_id);
                }
            }
        }
        let counts = a.client.key_counts(&target).await.unwrap();
        assert_eq!(
            (counts.count, counts.pq_count),
            (expected_left, expected_left),
            "round {round}"
        );
        assert_eq!(ec_ids.len() as u32, 100 - expected_left);
        assert_eq!(kem_ids.len() as u32, 100 - expected_left);
    }
    assert_eq!(
        ec_ids.iter().collect::<HashSet<_>>().len(),
        100,
        "EC ids are pairwise distinct"
    );
    assert_eq!(
        kem_ids.iter().collect::<HashSet<_>>().len(),
        100,
        "Kyber ids are pairwise distinct"
    );
    assert!(ec_ids.iter().all(|id| (1000..1100).contains(id)));
    assert!(kem_ids.iter().all(|id| (2000..2100).contains(id)));
    assert_eq!((nulls, last_resorts), (20, 20));
    a.terminate();
    b.terminate();
}
