//! Multi-recipient sealed sends (`PUT /v1/messages/multi_recipient`): one upload reaches
//! every device of every recipient byte-exact with its shared part stored once, refusals
//! follow the contract, one recipient over its byte budget refuses the whole send and
//! charges no one, and a refused send reads each recipient once.

use super::*;
use sealpost::client::ws::WsClient;
use sealpost::domain::multi_recipient::{VERSION_SERVICE_ID, VERSION_UUID, encode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

async fn put(
    app: &TestApp,
    body: Vec<u8>,
    key: Option<[u8; 16]>,
    content_type: &str,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .http()
        .put(
            app.client
                .url("/v1/messages/multi_recipient?ts=77&online=false&urgent=true"),
        )
        .header("Content-Type", content_type)
        .body(body);
    if let Some(key) = key {
        request = request.header("Unidentified-Access-Key", encode_base64(&key));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

const MRM: &str = "application/vnd.signal-messenger.mrm";

fn xor(a: [u8; 16], b: [u8; 16]) -> [u8; 16] {
    let mut out = a;
    for (o, b) in out.iter_mut().zip(b) {
        *o ^= b;
    }
    out
}

/// Two accounts with two devices each get one upload, byte-exact; the shared part is
/// stored once in Redis and gone after the last acknowledgement.
#[tokio::test]
async fn one_upload_reaches_every_device_of_every_recipient_byte_exact() {
    let stores = TestStores::new(Backend::External).await;
    let app = TestApp::start(stores.config()).await;
    let (alice, _) = crate::common::register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = crate::common::register_with(&app, Some([2; 16]), false).await;
    let alice2 = crate::common::add_device(&stores, &alice, 2, 222).await;
    let bob3 = crate::common::add_device(&stores, &bob, 3, 333).await;
    let body = encode(
        VERSION_SERVICE_ID,
        &[
            (alice.aci, vec![(1, 0), (2, 222)], [0xa1; 48]),
            (bob.aci, vec![(1, 0), (3, 333)], [0xb0; 48]),
            (Aci::random(), vec![], [0; 48]), // excluded: left out entirely
        ],
        &[0xee; 32],
        b"one ciphertext for everyone",
    );
    let (status, answer) = put(&app, body, Some(xor([1; 16], [2; 16])), MRM).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"uuids404": []})));
    let shared_keys = || {
        stores
            .redis
            .as_ref()
            .unwrap()
            .keys()
            .into_iter()
            .filter(|k| k.contains("mrm:"))
            .count()
    };
    assert_eq!(shared_keys(), 1, "the shared part is stored once");

    for (device, prefix) in [
        (&alice, 0xa1u8),
        (&alice2, 0xa1),
        (&bob, 0xb0),
        (&bob3, 0xb0),
    ] {
        let mut ws = WsClient::connect(&app.address, Some(device)).await.unwrap();
        let delivery = ws.next_request(WAIT).await.unwrap();
        let envelope = delivery.envelope().expect("a delivery");
        assert_eq!(envelope.r#type, Some(6));
        assert_eq!(envelope.source_service_id, None);
        assert_eq!(envelope.client_timestamp, Some(77));
        let mut expected = vec![0x22];
        expected.extend_from_slice(&[prefix; 48]);
        expected.extend_from_slice(&[0xee; 32]);
        expected.extend_from_slice(b"one ciphertext for everyone");
        assert_eq!(envelope.content.unwrap().to_vec(), expected);
        ws.respond(delivery.id, 200).await.unwrap();
        assert!(ws.next_request(WAIT).await.unwrap().is_queue_empty());
    }
    // Acknowledgements are applied by the socket's own task, just after: wait until the
    // last one has released the shared part.
    let deadline = tokio::time::Instant::now() + WAIT;
    while shared_keys() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gone after the last acknowledgement"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.metric("sealpost_messages_multi_recipient_sends_total")
            .await,
        1.0
    );
    app.stop().await;
}

async fn refusals_follow_the_contract(backend: Backend) {
    let (app, _stores, _certs, _) = app_with_certificates(backend).await;
    let (alice, _) = crate::common::register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = crate::common::register_with(&app, Some([2; 16]), false).await;
    let (open, _) = crate::common::register_with(&app, None, true).await;
    let key = xor([1; 16], [2; 16]);
    let both = |alice_devices: Vec<(u8, u16)>, bob_devices: Vec<(u8, u16)>| {
        encode(
            VERSION_UUID,
            &[
                (alice.aci, alice_devices, [1; 48]),
                (bob.aci, bob_devices, [2; 48]),
            ],
            &[3; 32],
            b"ct",
        )
    };
    // Wrong, missing or short keys: 401.
    assert_eq!(
        put(&app, both(vec![(1, 0)], vec![(1, 0)]), Some([1; 16]), MRM)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        put(&app, both(vec![(1, 0)], vec![(1, 0)]), None, MRM)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Unknown recipient: 404.
    let unknown = encode(
        VERSION_UUID,
        &[(Aci::random(), vec![(1, 0)], [0; 48])],
        &[0; 32],
        b"x",
    );
    assert_eq!(
        put(&app, unknown, Some(key), MRM).await.0,
        StatusCode::NOT_FOUND
    );
    // 409 with both kinds of problems wins over 410.
    let registration = |aci: Aci| {
        let app = &app;
        async move {
            let (caller, _) = app.client.register_new().await.unwrap();
            app.client
                .fetch_keys(sealpost::client::KeyAccess::Device(&caller), &aci, "1")
                .await
                .unwrap()
                .devices[0]
                .registration_id
        }
    };
    let alice_registration = registration(alice.aci).await;
    let wrong = (alice_registration % 16383) + 1;
    let (status, body) = put(&app, both(vec![(1, wrong)], vec![(2, 0)]), Some(key), MRM).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!([{"uuid": bob.aci.to_string(), "devices": {"missingDevices": [1], "extraDevices": [2]}}])
    );
    let (status, body) = put(&app, both(vec![(1, wrong)], vec![(1, 0)]), Some(key), MRM).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(
        body,
        json!([{"uuid": alice.aci.to_string(), "devices": {"staleDevices": [1]}}])
    );
    // Malformed, duplicate, or the wrong content type.
    assert_eq!(
        put(&app, vec![0x23, 1, 0], Some(key), MRM).await.0,
        StatusCode::BAD_REQUEST
    );
    let twice = encode(
        VERSION_UUID,
        &[
            (alice.aci, vec![(1, 0)], [0; 48]),
            (alice.aci, vec![(1, 0)], [0; 48]),
        ],
        &[0; 32],
        b"x",
    );
    assert_eq!(
        put(&app, twice, Some([1; 16]), MRM).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(
            &app,
            both(vec![(1, 0)], vec![(1, 0)]),
            Some(key),
            "application/json"
        )
        .await
        .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // Oversized: the JSON 413.
    let (status, body) = put(&app, vec![0x23; 2 * 1024 * 1024 + 1], Some(key), MRM).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::PAYLOAD_TOO_LARGE, json!(413))
    );
    // All recipients unrestricted: any 16 bytes do.
    let to_open = encode(
        VERSION_SERVICE_ID,
        &[(open.aci, vec![(1, 0)], [9; 48])],
        &[9; 32],
        b"hi",
    );
    assert_eq!(
        put(&app, to_open, Some([0xff; 16]), MRM).await.0,
        StatusCode::OK
    );
    // The valid send goes through, and nothing from the refused ones was queued.
    assert_eq!(
        put(&app, both(vec![(1, 0)], vec![(1, 0)]), Some(key), MRM)
            .await
            .0,
        StatusCode::OK
    );
    let mut ws = WsClient::connect(&app.address, Some(&alice)).await.unwrap();
    let first = ws.next_request(WAIT).await.unwrap();
    assert!(first.envelope().is_some());
    ws.respond(first.id, 200).await.unwrap();
    assert!(ws.next_request(WAIT).await.unwrap().is_queue_empty());
    assert!(
        app.metric("sealpost_sealed_sender_access_failures_total")
            .await
            >= 2.0
    );
    app.stop().await;
}

/// Every recipient's `inboundMessageBytes` bucket is checked before any is charged or
/// anything queued: one recipient over budget refuses the whole send with 429 and
/// `Retry-After`, and the others are neither charged nor sent anything.
async fn a_recipient_over_its_byte_budget_refuses_the_whole_send_and_charges_no_one(
    backend: Backend,
) {
    use sealpost::domain::messages::QUEUED_MESSAGE_OVERHEAD;
    use sealpost::limits::Limit;
    let stores = TestStores::new(backend).await;
    let config = stores.config_with_limit(Limit::InboundMessageBytes, 2000, 600_000.0);
    let app = TestApp::start(config).await;
    let (alice, _) = crate::common::register_with(&app, Some([1; 16]), false).await;
    let (bob, _) = crate::common::register_with(&app, Some([2; 16]), false).await;
    // Per device: the 49-byte prefix, 32 + 568 shared bytes and the overhead, 905 bytes
    // in all, so two fit in a 2000-byte bucket and a third does not.
    let ciphertext = [0x5a; 568];
    let per_device = 49 + 32 + 568 + QUEUED_MESSAGE_OVERHEAD;
    assert!(2 * per_device <= 2000 && 3 * per_device > 2000);
    let to = |recipients: &[Aci]| {
        let list: Vec<_> = recipients
            .iter()
            .map(|aci| (*aci, vec![(1, 0)], [7; 48]))
            .collect();
        encode(VERSION_SERVICE_ID, &list, &[3; 32], &ciphertext)
    };
    for _ in 0..2 {
        assert_eq!(
            put(&app, to(&[bob.aci]), Some([2; 16]), MRM).await.0,
            StatusCode::OK
        );
    }
    let response = app
        .client
        .http()
        .put(
            app.client
                .url("/v1/messages/multi_recipient?ts=78&online=false&urgent=true"),
        )
        .header("Content-Type", MRM)
        .header(
            "Unidentified-Access-Key",
            encode_base64(&xor([1; 16], [2; 16])),
        )
        .body(to(&[alice.aci, bob.aci]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], json!(429));
    // Alice was not charged: her whole bucket still takes two sends of her own.
    for _ in 0..2 {
        assert_eq!(
            put(&app, to(&[alice.aci]), Some([1; 16]), MRM).await.0,
            StatusCode::OK
        );
    }
    // And the refused send queued nothing: alice's queue holds her two, then is empty.
    let mut ws = WsClient::connect(&app.address, Some(&alice)).await.unwrap();
    for _ in 0..2 {
        let delivery = ws.next_request(WAIT).await.unwrap();
        assert_eq!(delivery.envelope().unwrap().client_timestamp, Some(77));
        ws.respond(delivery.id, 200).await.unwrap();
    }
    assert!(ws.next_request(WAIT).await.unwrap().is_queue_empty());
    app.stop().await;
}

on_both_backends!(
    refusals_follow_the_contract,
    a_recipient_over_its_byte_budget_refuses_the_whole_send_and_charges_no_one,
);

/// The account-cache lookups (hits, misses and bypasses: every account or device-list
/// read) a request makes.
async fn lookups_during(app: &TestApp, request: impl std::future::Future) -> f64 {
    let total = || async {
        let mut sum = 0.0;
        for result in ["hit", "miss", "bypass"] {
            sum += app
                .metric(&format!(
                    "sealpost_accounts_cache_lookups_total{{result=\"{result}\"}}"
                ))
                .await;
        }
        sum
    };
    let before = total().await;
    request.await;
    total().await - before
}

/// A multi-recipient send with the wrong access key reads one account per recipient and
/// no device list: it costs per recipient what a refused single sealed send costs.
#[tokio::test]
async fn a_refused_multi_recipient_send_reads_each_recipient_once() {
    use sealpost::limits::Limit;
    let stores = TestStores::new(Backend::External).await;
    let config = stores.config_with_limit(Limit::Registration, 100, 1.0);
    let app = TestApp::start(config).await;
    let mut recipients = Vec::new();
    for i in 0..10u8 {
        recipients.push(
            crate::common::register_with(&app, Some([i + 1; 16]), false)
                .await
                .0,
        );
    }
    let single = lookups_during(&app, async {
        let response = app
            .client
            .http()
            .put(
                app.client
                    .url(&format!("/v1/messages/{}", recipients[0].aci)),
            )
            .header("Unidentified-Access-Key", encode_base64(&[0xee; 16]))
            .json(&json!({"messages": [{"type": 6, "destinationDeviceId": 1,
                "destinationRegistrationId": 0, "content": encode_base64(b"x")}],
                "online": false, "urgent": true, "timestamp": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
    assert_eq!(single, 1.0, "a refused single send reads its target once");
    let list: Vec<_> = recipients
        .iter()
        .map(|r| (r.aci, vec![(1, 0)], [7; 48]))
        .collect();
    let body = encode(VERSION_SERVICE_ID, &list, &[3; 32], b"ct");
    let multi = lookups_during(&app, async {
        assert_eq!(
            put(&app, body, Some([0xee; 16]), MRM).await.0,
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
    assert_eq!(
        multi, 10.0,
        "one account read per recipient, no device lists"
    );
    app.stop().await;
}
