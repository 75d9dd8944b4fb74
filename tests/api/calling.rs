//! `GET /v2/calling/relays` (PROTOCOL.md 15.2) against a real coturn: the credentials
//! sealpost makes open an allocation; altered or expired ones do not.

use std::time::Duration;

use sealpost::client::DeviceCredentials;
use sealpost::config::{Config, DEFAULT_TURN_URLS_WITH_IPS, Secret, TurnConfig};
use sealpost::limits::Limit;
use serde_json::{Value, json};

use crate::common::turn::Coturn;
use crate::common::{Backend, TestApp, TestStores, register_with};

async fn relays(app: &TestApp, who: Option<&DeviceCredentials>) -> (u16, Value) {
    let mut request = app.client.http().get(app.client.url("/v2/calling/relays"));
    if let Some(who) = who {
        request = request.header("Authorization", who.authorization());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn with_relay(mut config: Config, coturn: &Coturn, ttl: Duration) -> Config {
    config.turn = Some(TurnConfig {
        secret: Secret::new(coturn.secret.clone()),
        urls: vec![coturn.url(), format!("{}?transport=tcp", coturn.url())],
        urls_with_ips: DEFAULT_TURN_URLS_WITH_IPS.map(String::from).to_vec(),
        hostname: Some("localhost".into()),
        ttl,
    });
    config
}

fn now_s() -> i64 {
    sealpost::domain::clock::now_ms() / 1000
}

async fn no_relay_is_offered_when_none_is_configured(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    let (alice, _) = register_with(&app, None, false).await;
    assert_eq!(
        relays(&app, Some(&alice)).await,
        (200, json!({"relays": []}))
    );
    let (status, body) = relays(&app, None).await;
    assert_eq!((status, &body["code"]), (401, &json!(401)), "{body}");
    app.stop().await;
}

async fn relay_credentials_open_an_allocation_on_coturn(backend: Backend) {
    let coturn = Coturn::start().await;
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(with_relay(
        stores.config(),
        &coturn,
        Duration::from_secs(43_200),
    ))
    .await;
    let (alice, _) = register_with(&app, None, false).await;
    let (status, body) = relays(&app, Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    let list = body["relays"].as_array().expect("relays");
    assert_eq!(list.len(), 1);
    let relay = list[0].as_object().expect("a relay");
    let mut fields: Vec<&str> = relay.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "hostname",
            "password",
            "ttl",
            "urls",
            "urlsWithIps",
            "username"
        ]
    );
    assert_eq!(relay["ttl"], 43_200);
    assert_eq!(relay["hostname"], "localhost");
    assert_eq!(
        relay["urls"],
        json!([coturn.url(), format!("{}?transport=tcp", coturn.url())])
    );
    // Signal's templates, filled with every address of the host name.
    let with_ips: Vec<&str> = relay["urlsWithIps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for url in [
        "turn:127.0.0.1",
        "turn:127.0.0.1:80?transport=tcp",
        "turns:127.0.0.1:443?transport=tcp",
    ] {
        assert!(with_ips.contains(&url), "{url} in {with_ips:?}");
    }
    // `<expiry>:<16 hex>`, valid for twice the TTL; the user name names nobody.
    let username = relay["username"].as_str().unwrap();
    let (expiry, tag) = username.split_once(':').expect("expiry:tag");
    let expiry: i64 = expiry.parse().expect("unix seconds");
    assert!((expiry - (now_s() + 86_400)).abs() <= 5, "{expiry}");
    assert!(tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!username.contains(&alice.aci.to_string()));
    let password = relay["password"].as_str().unwrap();

    assert!(
        coturn.allocates(username, password).await,
        "a real allocation"
    );
    // One byte of the password changed, or the expiry moved: coturn refuses both.
    let mut altered = password.to_owned().into_bytes();
    altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    assert!(
        !coturn.allocates(username, &altered).await,
        "altered password"
    );
    let moved = format!("{}:{tag}", expiry + 1);
    assert!(
        !coturn.allocates(&moved, password).await,
        "altered user name"
    );

    // Each request makes a fresh credential.
    let (_, again) = relays(&app, Some(&alice)).await;
    assert_ne!(again["relays"][0]["username"], relay["username"]);
    app.stop().await;
}

async fn an_expired_credential_is_refused_by_coturn(backend: Backend) {
    let coturn = Coturn::start().await;
    let stores = TestStores::new(backend).await;
    // A one-second TTL: the credential is valid for two.
    let app = TestApp::start(with_relay(stores.config(), &coturn, Duration::from_secs(1))).await;
    let (alice, _) = register_with(&app, None, false).await;
    let (_, body) = relays(&app, Some(&alice)).await;
    let relay = &body["relays"][0];
    assert_eq!(relay["ttl"], 1);
    let (username, password) = (
        relay["username"].as_str().unwrap().to_owned(),
        relay["password"].as_str().unwrap().to_owned(),
    );
    let expiry: i64 = username.split_once(':').unwrap().0.parse().unwrap();
    while now_s() <= expiry + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!coturn.allocates(&username, &password).await, "expired");
    // A fresh one works: the refusal was the expiry's.
    let (_, body) = relays(&app, Some(&alice)).await;
    let relay = &body["relays"][0];
    assert!(
        coturn
            .allocates(
                relay["username"].as_str().unwrap(),
                relay["password"].as_str().unwrap()
            )
            .await
    );
    app.stop().await;
}

async fn relay_requests_are_limited_per_account(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config_with_limit(Limit::GetCallingRelays, 2, 600_000.0)).await;
    let (alice, _) = register_with(&app, None, false).await;
    let (bob, _) = register_with(&app, None, false).await;
    assert_eq!(relays(&app, Some(&alice)).await.0, 200);
    assert_eq!(relays(&app, Some(&alice)).await.0, 200);
    let (status, body) = relays(&app, Some(&alice)).await;
    assert_eq!((status, &body["code"]), (429, &json!(429)), "{body}");
    // Another account has its own bucket.
    assert_eq!(relays(&app, Some(&bob)).await.0, 200);
    app.stop().await;
}

on_both_backends!(
    no_relay_is_offered_when_none_is_configured,
    relay_credentials_open_an_allocation_on_coturn,
    an_expired_credential_is_refused_by_coturn,
    relay_requests_are_limited_per_account,
);
