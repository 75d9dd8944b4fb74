//! Devices of an account: listing, and removal with its permission rules and effects
//! (credentials fail, sockets close with 4401, queue and keys gone).

mod common;

use std::time::Duration;

use common::{Backend, TestApp, TestStores, add_device, spawn_app};
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
    let (alice, _) = app.client.register_new().await.unwrap();
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
    assert!(devices[0].created <= now && devices[0].created > now - 60_000);
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
