//! Devices of an account: listing, and removal with its permission rules and effects
//! (credentials fail, sockets close with 4401, queue and keys gone).

use std::time::Duration;

use crate::common::{Backend, TestApp, TestStores, add_device, spawn_app};
use reqwest::StatusCode;
use sealpost::api::devices::DeviceListJson;
use sealpost::client::DeviceCredentials;
use sealpost::client::ws::WsClient;
use sealpost::domain::accounts::day_of;

async fn list(app: &TestApp, who: &DeviceCredentials) -> (StatusCode, Option<DeviceListJson>) {
    let response = app
        .client
        .http()
        .get(app.client.url("/v1/devices"))
        .header("Authorization", who.authorization())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.ok())
}

async fn remove(app: &TestApp, who: &DeviceCredentials, id: &str) -> StatusCode {
    app.client
        .http()
        .delete(app.client.url(&format!("/v1/devices/{id}")))
        .header("Authorization", who.authorization())
        .send()
        .await
        .unwrap()
        .status()
}

async fn a_new_account_lists_its_primary_device(backend: Backend) {
    let (app, _stores) = spawn_app(backend).await;
    let (alice, keys) = app.client.register_new().await.unwrap();
    app.client.whoami(&alice).await.unwrap();
    let (status, devices) = list(&app, &alice).await;
    assert_eq!(status, StatusCode::OK);
    let devices = devices.unwrap().devices;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id, 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(devices[0].last_seen, day_of(now), "kept only to the day");
    // The creation time, sealed to the identity key (PROTOCOL.md 16.2), std-nopad.
    let sealed = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &devices[0].created_at_ciphertext,
    )
    .expect("std-nopad base64");
    let registration_id =
        sealpost::domain::ids::RegistrationId::new(devices[0].registration_id.into()).unwrap();
    let created = sealpost::domain::created_at::open(
        &keys.identity.to_bytes(),
        &sealed,
        sealpost::domain::ids::DeviceId::PRIMARY,
        registration_id,
    )
    .expect("the identity key opens it");
    assert!(created <= now && created > now - 60_000);
    assert_eq!(remove(&app, &alice, "1").await, StatusCode::FORBIDDEN);
    assert_eq!(remove(&app, &alice, "2").await, StatusCode::NOT_FOUND);
    assert_eq!(remove(&app, &alice, "zero").await, StatusCode::BAD_REQUEST);
    assert_eq!(remove(&app, &alice, "0").await, StatusCode::BAD_REQUEST);
    let anonymous = app
        .client
        .http()
        .get(app.client.url("/v1/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

on_both_backends!(a_new_account_lists_its_primary_device);

/// (Linked devices are written straight into Postgres until linking exists.)
#[tokio::test]
async fn removal_follows_the_permission_rules_and_takes_everything_of_the_device_with_it() {
    let stores = TestStores::new(Backend::External).await;
    let app = TestApp::start(stores.config()).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let laptop = add_device(&stores, &alice, 2, 222).await;
    let tablet = add_device(&stores, &alice, 3, 333).await;
    let (_, devices) = list(&app, &laptop).await;
    let ids: Vec<u8> = devices.unwrap().devices.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![1, 2, 3]);

    assert_eq!(
        remove(&app, &laptop, "1").await,
        StatusCode::FORBIDDEN,
        "never the primary"
    );
    assert_eq!(
        remove(&app, &laptop, "3").await,
        StatusCode::FORBIDDEN,
        "a linked device only itself"
    );

    let mut laptop_ws = WsClient::connect(&app.address, Some(&laptop))
        .await
        .unwrap();
    assert!(
        laptop_ws
            .next_request(Duration::from_secs(5))
            .await
            .unwrap()
            .is_queue_empty()
    );
    assert_eq!(remove(&app, &alice, "2").await, StatusCode::NO_CONTENT);
    assert_eq!(laptop_ws.closed(Duration::from_secs(5)).await, Some(4401));
    assert_eq!(
        app.client.whoami(&laptop).await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        remove(&app, &tablet, "3").await,
        StatusCode::NO_CONTENT,
        "itself"
    );
    assert_eq!(
        app.client.whoami(&tablet).await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let (_, devices) = list(&app, &alice).await;
    assert_eq!(devices.unwrap().devices.len(), 1);
    app.stop().await;
}

mod linking {
    use super::*;
    use sealpost::client::default_attributes;
    use sealpost::domain::encoding::encode_base64;
    use serde_json::{Value, json};

    async fn send(
        app: &TestApp,
        from: &DeviceCredentials,
        to: &sealpost::domain::ids::Aci,
        devices: &[u8],
    ) -> (StatusCode, Value) {
        let messages: Vec<Value> = devices
            .iter()
            .map(|d| json!({"type": 1, "destinationDeviceId": d, "content": encode_base64(format!("for {d}").as_bytes())}))
            .collect();
        let response = app
            .client
            .http()
            .put(app.client.url(&format!("/v1/messages/{to}")))
            .header("Authorization", from.authorization())
            .json(&json!({"messages": messages, "timestamp": 5}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn a_linked_device_gets_the_lowest_free_id_and_its_own_copies(backend: Backend) {
        let (app, _stores) = spawn_app(backend).await;
        let (alice, keys) = app.client.register_new().await.unwrap();
        let (bob, _) = app.client.register_new().await.unwrap();
        let code = app.client.link_code(&alice).await.unwrap();
        assert!(!code.token_identifier.is_empty());
        let laptop = app
            .client
            .link_device(&code.verification_code, &keys, default_attributes())
            .await
            .unwrap();
        assert_eq!((laptop.aci, laptop.device.get()), (alice.aci, 2));
        assert_eq!(app.client.whoami(&laptop).await.unwrap().uuid, alice.aci);
        // The code is single use.
        let again = app
            .client
            .link_device(&code.verification_code, &keys, default_attributes())
            .await;
        assert_eq!(again.unwrap_err().status(), Some(StatusCode::FORBIDDEN));
        let bogus = app
            .client
            .link_device("not-a-code", &keys, default_attributes())
            .await;
        assert_eq!(bogus.unwrap_err().status(), Some(StatusCode::FORBIDDEN));
        // Only the primary hands out codes.
        assert_eq!(
            app.client.link_code(&laptop).await.unwrap_err().status(),
            Some(StatusCode::FORBIDDEN)
        );

        // A sender gets 409 until it includes the new device; then each device gets its copy.
        assert_eq!(
            send(&app, &bob, &alice.aci, &[1]).await,
            (
                StatusCode::CONFLICT,
                json!({"missingDevices": [2], "extraDevices": []})
            )
        );
        assert_eq!(
            send(&app, &bob, &alice.aci, &[1, 2]).await,
            (StatusCode::OK, json!({"needsSync": false}))
        );
        for (device, expected) in [(&alice, "for 1"), (&laptop, "for 2")] {
            let mut ws = WsClient::connect(&app.address, Some(device)).await.unwrap();
            let delivery = ws.next_request(Duration::from_secs(5)).await.unwrap();
            assert_eq!(
                delivery.envelope().unwrap().content.unwrap().to_vec(),
                expected.as_bytes()
            );
        }
        // Alice has two devices now: writing to Bob she must sync; to herself she leaves out the sender.
        assert_eq!(
            send(&app, &alice, &bob.aci, &[1]).await,
            (StatusCode::OK, json!({"needsSync": true}))
        );
        assert_eq!(
            send(&app, &laptop, &alice.aci, &[1]).await,
            (StatusCode::OK, json!({"needsSync": false}))
        );

        // Removal: the linked device's socket closes with 4401 and its credentials fail.
        let mut laptop_ws = WsClient::connect(&app.address, Some(&laptop))
            .await
            .unwrap();
        while let Some(request) = laptop_ws.next_request(Duration::from_millis(500)).await {
            laptop_ws.respond(request.id, 200).await.unwrap();
        }
        assert_eq!(remove(&app, &alice, "2").await, StatusCode::NO_CONTENT);
        assert_eq!(laptop_ws.closed(Duration::from_secs(5)).await, Some(4401));
        assert_eq!(
            app.client.whoami(&laptop).await.unwrap_err().status(),
            Some(StatusCode::UNAUTHORIZED)
        );
        // Its id is free again.
        let code = app.client.link_code(&alice).await.unwrap();
        let again = app
            .client
            .link_device(&code.verification_code, &keys, default_attributes())
            .await
            .unwrap();
        assert_eq!(again.device.get(), 2);
        app.stop().await;
    }

    async fn bad_signatures_get_422_and_the_seventh_device_411(backend: Backend) {
        let (app, _stores) = spawn_app(backend).await;
        let (alice, keys) = app.client.register_new().await.unwrap();
        let code = app.client.link_code(&alice).await.unwrap();
        let stranger = sealpost::client::AccountKeys::generate();
        let refused = app
            .client
            .link_device(&code.verification_code, &stranger, default_attributes())
            .await;
        assert_eq!(
            refused.unwrap_err().status(),
            Some(StatusCode::UNPROCESSABLE_ENTITY)
        );
        // The code survived the refused attempt.
        let second = app
            .client
            .link_device(&code.verification_code, &keys, default_attributes())
            .await
            .unwrap();
        assert_eq!(second.device.get(), 2);
        for expected in 3..=6 {
            let code = app.client.link_code(&alice).await.unwrap();
            let linked = app
                .client
                .link_device(&code.verification_code, &keys, default_attributes())
                .await
                .unwrap();
            assert_eq!(linked.device.get(), expected);
        }
        let response = app
            .client
            .http()
            .get(app.client.url("/v1/devices/provisioning/code"))
            .header("Authorization", alice.authorization())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::LENGTH_REQUIRED);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"current": 6, "max": 6})
        );
        let (_, devices) = list(&app, &alice).await;
        assert_eq!(devices.unwrap().devices.len(), 6);
        app.stop().await;
    }

    on_both_backends!(
        a_linked_device_gets_the_lowest_free_id_and_its_own_copies,
        bad_signatures_get_422_and_the_seventh_device_411,
    );
}

/// The whole linking flow as clients run it, across two server processes on the same stores:
/// the new device's provisioning socket on one, the primary on the other.
#[tokio::test]
async fn linking_through_the_provisioning_socket_across_two_processes() {
    use crate::common::process::Server;
    use prost::Message as _;
    use sealpost::domain::encoding::encode_base64;
    use sealpost::proto::textsecure::ProvisioningAddress;
    use serde_json::json;

    let stores = TestStores::new(Backend::External).await;
    let a = Server::start(&stores.process_env()).await;
    let b = Server::start(&stores.process_env()).await;
    let (a_url, b_url) = (a.client.url(""), b.client.url(""));
    let (alice, keys) = b.client.register_new().await.unwrap();
    let (bob, _) = b.client.register_new().await.unwrap();

    let provision = |address: String, body: Vec<u8>| {
        let request = b
            .client
            .http()
            .put(b.client.url(&format!("/v1/provisioning/{address}")))
            .header("Authorization", alice.authorization())
            .json(&json!({"body": encode_base64(&body)}));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        provision("nobody-waits-here".into(), b"x".to_vec()).await,
        StatusCode::NOT_FOUND
    );

    let mut linked = Vec::new();
    for expected_id in [2u8, 3] {
        // The new device waits on process A.
        let mut waiting = WsClient::connect_provisioning(&a_url).await.unwrap();
        let announce = waiting.next_request(Duration::from_secs(5)).await.unwrap();
        assert_eq!(announce.path, "/v1/address");
        let address = ProvisioningAddress::decode(announce.body.clone())
            .unwrap()
            .address
            .unwrap();
        // The primary, on process B, makes a code and sends it (as the provisioning message).
        let code = b.client.link_code(&alice).await.unwrap();
        assert_eq!(
            provision(address, code.verification_code.clone().into_bytes()).await,
            StatusCode::NO_CONTENT
        );
        let message = waiting.next_request(Duration::from_secs(5)).await.unwrap();
        assert_eq!(message.path, "/v1/message");
        let received = String::from_utf8(message.body.to_vec()).unwrap();
        assert_eq!(received, code.verification_code);
        waiting.close().await;
        let device = a
            .client
            .link_device(&received, &keys, sealpost::client::default_attributes())
            .await
            .unwrap();
        assert_eq!(device.device.get(), expected_id);
        linked.push(device);
    }

    // A sender is refused until it includes every device; then each gets its own copy.
    let send = |devices: Vec<u8>| {
        let messages: Vec<_> = devices
            .iter()
            .map(|d| json!({"type": 1, "destinationDeviceId": d, "content": encode_base64(&[*d])}))
            .collect();
        let request = a
            .client
            .http()
            .put(a.client.url(&format!("/v1/messages/{}", alice.aci)))
            .header("Authorization", bob.authorization())
            .json(&json!({"messages": messages}));
        async move {
            let response = request.send().await.unwrap();
            (
                response.status(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    assert_eq!(
        send(vec![1]).await,
        (
            StatusCode::CONFLICT,
            json!({"missingDevices": [2, 3], "extraDevices": []})
        )
    );
    assert_eq!(
        send(vec![1, 2]).await,
        (
            StatusCode::CONFLICT,
            json!({"missingDevices": [3], "extraDevices": []})
        )
    );
    assert_eq!(send(vec![1, 2, 3]).await.0, StatusCode::OK);
    let mut sockets = Vec::new();
    for (device, base) in [(&alice, &a_url), (&linked[0], &b_url), (&linked[1], &a_url)] {
        let mut ws = WsClient::connect(base, Some(device)).await.unwrap();
        let delivery = ws.next_request(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            delivery.envelope().unwrap().content.unwrap().to_vec(),
            vec![device.device.get()]
        );
        ws.respond(delivery.id, 200).await.unwrap();
        sockets.push(ws);
    }

    // Removing the third device through process B closes its socket on process A with 4401
    // and makes its credentials fail.
    let removed = b
        .client
        .http()
        .delete(b.client.url("/v1/devices/3"))
        .header("Authorization", alice.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(sockets[2].closed(Duration::from_secs(5)).await, Some(4401));
    assert_eq!(
        a.client.whoami(&linked[1]).await.unwrap_err().status(),
        Some(StatusCode::UNAUTHORIZED)
    );
    a.terminate();
    b.terminate();
}

async fn the_provisioning_socket_announces_an_address_and_relays_one_message(backend: Backend) {
    use prost::Message as _;
    let (app, _stores) = spawn_app(backend).await;
    let (alice, _) = app.client.register_new().await.unwrap();
    let mut waiting = WsClient::connect_provisioning(&app.address).await.unwrap();
    let announce = waiting.next_request(Duration::from_secs(5)).await.unwrap();
    let address = sealpost::proto::textsecure::ProvisioningAddress::decode(announce.body.clone())
        .unwrap()
        .address
        .unwrap();
    assert_eq!(address.len(), 22, "base64url of 16 bytes");
    let put = |address: &str, auth: bool| {
        let mut request = app
            .client
            .http()
            .put(app.client.url(&format!("/v1/provisioning/{address}")))
            .json(&serde_json::json!({"body": "aGVsbG8="}));
        if auth {
            request = request.header("Authorization", alice.authorization());
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(put(&address, false).await, StatusCode::UNAUTHORIZED);
    assert_eq!(put("has%20space", true).await, StatusCode::BAD_REQUEST);
    assert_eq!(put(&address, true).await, StatusCode::NO_CONTENT);
    let message = waiting.next_request(Duration::from_secs(5)).await.unwrap();
    assert_eq!(message.body.as_ref(), b"hello");
    // Nothing else is served on a provisioning socket.
    let other = waiting
        .request("GET", "/v1/keepalive", None, vec![])
        .await
        .unwrap();
    assert_eq!(other.status, 404);
    waiting.close().await;
    // The server has the close once it answers it; the address goes when the socket's task
    // ends, just after. Ask until it has gone (a 204 meanwhile: still held).
    assert!(waiting.closed(Duration::from_secs(5)).await.is_some());
    drop(waiting);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = put(&address, true).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(
            tokio::time::Instant::now() < deadline,
            "gone with its socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

mod provisioning {
    #[allow(unused_imports)]
    use super::*;
    on_both_backends!(the_provisioning_socket_announces_an_address_and_relays_one_message);
}
