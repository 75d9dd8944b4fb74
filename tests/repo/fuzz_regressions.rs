//! Inputs the fuzz targets (fuzz/) found crashing, kept as tests so CI, which does not fuzz,
//! keeps them fixed: each saved input replayed through the parser that crashed, and the
//! request a client could send with it answered with a clear 4xx by the real server.

use std::path::Path;

use crate::common::{Backend, spawn_app};
use sealpost::auth::basic::Credentials;
use sealpost::auth::extract::access_key_header;
use sealpost::client::basic_auth;
use sealpost::client::ws::WsClient;
use sealpost::domain::ids::Aci;

/// Every saved input of `fuzz/regressions/<target>/`.
fn saved_inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("the regressions folder exists")
        .map(|entry| std::fs::read(entry.expect("an entry").path()).expect("readable"))
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn saved_header_inputs_no_longer_panic_the_parsers() {
    let inputs = saved_inputs("headers");
    assert!(!inputs.is_empty());
    for input in inputs {
        // The first byte picks the parser in the target; replay the text through all.
        let text = String::from_utf8_lossy(input.get(1..).unwrap_or_default());
        let _ = Credentials::from_header(&text);
        let _ = access_key_header(&text);
        assert!(text.parse::<Aci>().is_err());
    }
}

#[test]
fn an_aci_with_a_multi_byte_character_at_byte_four_is_refused_not_a_panic() {
    for text in ["€€€€", "ab€d", "PN€:x", "AC€:x", "\u{e2e2}\u{e2}"] {
        assert!(text.parse::<Aci>().is_err(), "{text:?}");
    }
    let aci = Aci::random();
    assert_eq!(format!("aci:{aci}").parse::<Aci>().ok(), Some(aci));
}

#[tokio::test]
async fn requests_carrying_such_an_aci_get_a_clear_4xx() {
    let (app, _stores) = spawn_app(Backend::Embedded).await;
    let http = app.client.http();
    let key = "AAAAAAAAAAAAAAAAAAAAAA==";
    // In a path segment (percent-decoded by the router): 400 with a JSON body.
    for path in [
        "/v1/profile/%E2%82%AC%E2%82%AC",
        "/v2/keys/%E2%82%AC%E2%82%AC/*",
    ] {
        let response = http
            .get(app.client.url(path))
            .header("Unidentified-Access-Key", key)
            .send()
            .await
            .expect("the server answers instead of dropping the connection");
        assert_eq!(response.status(), 400, "{path}");
        let body: serde_json::Value = response.json().await.expect("a JSON error body");
        assert_eq!(body["code"], 400);
    }
    // As the Basic username: 401 like any other bad credentials.
    let response = http
        .get(app.client.url("/v1/accounts/whoami"))
        .header("Authorization", basic_auth("€€", "a-password-long-enough"))
        .send()
        .await
        .expect("the server answers instead of dropping the connection");
    assert_eq!(response.status(), 401);
    // Through the tunnel of an anonymous socket: the same 400.
    let socket = WsClient::connect(&app.address, None)
        .await
        .expect("an anonymous socket opens");
    let tunnelled = socket
        .request(
            "GET",
            "/v1/profile/%E2%82%AC%E2%82%AC",
            None,
            vec![format!("unidentified-access-key:{key}")],
        )
        .await
        .expect("the tunnel answers");
    assert_eq!(tunnelled.status, 400);
    app.stop().await;
}
