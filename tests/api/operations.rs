//! What operators rely on, checked against real traffic: every metric in `docs/metrics.md`
//! is exported (and nothing undocumented is), a failing store shows in the store and
//! readiness gauges, requests carry ids, and the JSON logs of a real server process hold no
//! secrets. The shipped dashboards and alert rules are checked in `dashboards.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::common::process::Server;
use crate::common::{Backend, TestApp, TestStores};
use sealpost::client::ws::WsClient;
use sealpost::client::{Client, DeviceCredentials, KeyAccess, basic_auth};
use sealpost::domain::encoding::encode_base64;
use sealpost::limits::Limit;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

pub(super) fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// What the traffic used that must never show up in a log line.
struct Secrets(Vec<String>);

/// Registers two accounts, delivers a message over a real WebSocket (acknowledged), tunnels
/// a request, fetches prekeys, fails a password, displaces a socket and opens anonymous and
/// provisioning sockets: enough for every metric family to have seen its event. `admin` is
/// the server's admin listener.
async fn traffic(base: &str, admin: &str, client: &Client) -> Secrets {
    let (alice, alice_keys) = client.register_new().await.unwrap();
    let (bob, _) = client.register_new().await.unwrap();
    let content = "the body of a message nobody may log";

    let mut bob_ws = WsClient::connect(base, Some(&bob)).await.unwrap();
    let empty = bob_ws.next_request(WAIT).await.expect("queue/empty");
    assert!(empty.is_queue_empty());
    bob_ws.respond(empty.id, 200).await.unwrap();

    let sent = client
        .http()
        .put(client.url(&format!("/v1/messages/{}", bob.aci)))
        .header("Authorization", alice.authorization())
        .header("X-Request-Id", "ops-test-send")
        .json(&json!({
            "messages": [{"type": 1, "destinationDeviceId": 1, "destinationRegistrationId": 0,
                          "content": encode_base64(content.as_bytes())}],
            "timestamp": 1_700_000_000_000u64,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(sent.headers()["x-request-id"], "ops-test-send");
    let delivery = bob_ws.next_request(WAIT).await.expect("a live delivery");
    assert!(delivery.envelope().is_some());
    bob_ws.respond(delivery.id, 200).await.unwrap();

    let tunnelled = bob_ws
        .request("GET", "/v1/accounts/whoami", None, Vec::new())
        .await
        .unwrap();
    assert_eq!(tunnelled.status, 200);
    assert_eq!(
        tunnelled.header("x-request-id").map(str::len),
        Some(32),
        "a tunnelled request gets a generated id"
    );

    client
        .fetch_keys(KeyAccess::Device(&alice), &bob.aci, "1")
        .await
        .unwrap();
    let wrong = DeviceCredentials {
        password: "a-wrong-password-of-some-length".into(),
        ..alice.clone()
    };
    assert_eq!(
        client.whoami(&wrong).await.unwrap_err().status(),
        Some(reqwest::StatusCode::UNAUTHORIZED)
    );

    // Bob connects again: the first socket is displaced (4409).
    let mut again = WsClient::connect(base, Some(&bob)).await.unwrap();
    assert_eq!(bob_ws.closed(WAIT).await, Some(4409));
    let _ = again.next_request(WAIT).await;
    again.close().await;
    let anonymous = WsClient::connect(base, None).await.unwrap();
    anonymous.close().await;
    let mut provisioning = WsClient::connect_provisioning(base).await.unwrap();
    let _ = provisioning.next_request(WAIT).await;
    provisioning.close().await;
    // Acknowledgements are applied by the socket's ack task, after the socket has gone on:
    // wait until the delivery's acknowledgement has been (its latency is observed then).
    let acknowledged = "sealpost_messages_delivery_latency_seconds_count";
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scrape = reqwest::get(format!("{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if scrape
            .lines()
            .filter_map(|line| line.strip_prefix(acknowledged)?.strip_prefix(' '))
            .any(|value| value.parse::<f64>().is_ok_and(|v| v >= 1.0))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the acknowledgement was not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    Secrets(vec![
        alice.password.clone(),
        bob.password.clone(),
        wrong.password,
        basic_auth("", &alice.password),
        content.to_owned(),
        encode_base64(content.as_bytes()),
        encode_base64(&alice_keys.identity_public()),
        // How a driver prints a bytea parameter, and the start of every stored password hash.
        format!("{:?}", alice_keys.identity_public().as_slice()),
        "$argon2id$".to_owned(),
    ])
}

/// `docs/metrics.md`'s table: metric name to its type.
fn documented_metrics() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(repo("docs/metrics.md")).unwrap();
    let table: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            name.starts_with("sealpost_")
                .then(|| (name.to_owned(), cells.get(2).unwrap_or(&"").to_string()))
        })
        .collect();
    assert!(table.len() > 30, "the metrics table parses");
    table
}

/// Metric families in a scrape: name to type, from the `# TYPE` lines.
pub(super) fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no sample {series} in the scrape"))
}

/// A server on Postgres and Redis with the registration limit at two, after `traffic` and
/// one refused registration; returns its scrape.
pub(super) async fn scrape_after_traffic() -> String {
    let stores = TestStores::new(Backend::External).await;
    let config = stores.config_with_limit(Limit::Registration, 2, 60_000.0);
    let app = TestApp::start(config).await;
    traffic(&app.address, &app.admin_address, &app.client).await;
    let refused = app
        .client
        .register_new()
        .await
        .err()
        .expect("the third is refused");
    assert_eq!(
        refused.status(),
        Some(reqwest::StatusCode::TOO_MANY_REQUESTS)
    );
    let scrape = app.metrics().await;
    app.stop().await;
    scrape
}

#[tokio::test]
async fn every_documented_metric_is_exported_after_real_traffic_and_nothing_else_is() {
    let scrape = scrape_after_traffic().await;
    let exported = families(&scrape);
    let documented = documented_metrics();
    for (name, kind) in &documented {
        assert_eq!(
            exported.get(name),
            Some(kind),
            "{name} ({kind}) is documented but not exported as such"
        );
    }
    let undocumented: Vec<_> = exported
        .keys()
        .filter(|name| !documented.contains_key(*name))
        .collect();
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");

    // The traffic's events were counted where an operator would look for them.
    for (series, at_least) in [
        (
            r#"sealpost_http_requests_total{method="PUT",route="/v1/messages/{destination}",status="200"}"#,
            1.0,
        ),
        (
            r#"sealpost_http_requests_total{method="GET",route="/v1/accounts/whoami",status="200"}"#,
            1.0,
        ),
        (
            r#"sealpost_messages_sent_total{kind="identified",recipient="online"}"#,
            1.0,
        ),
        ("sealpost_messages_delivery_latency_seconds_count", 1.0),
        ("sealpost_queue_acks_total", 1.0),
        ("sealpost_queue_backlog_messages_count", 1.0),
        ("sealpost_queue_drain_duration_seconds_count", 1.0),
        // (message_available crosses pub/sub only between pods: one pod wakes its own
        // sockets directly.)
        (
            r#"sealpost_accounts_cache_lookups_total{result="hit"}"#,
            1.0,
        ),
        (r#"sealpost_pubsub_events_total{event="connected"}"#, 1.0),
        ("sealpost_pubsub_connection_up", 1.0),
        (
            r#"sealpost_websocket_connects_total{kind="authenticated"}"#,
            2.0,
        ),
        (
            r#"sealpost_websocket_connects_total{kind="unauthenticated"}"#,
            1.0,
        ),
        (
            r#"sealpost_websocket_connects_total{kind="provisioning"}"#,
            1.0,
        ),
        (r#"sealpost_websocket_closes_total{code="4409"}"#, 1.0),
        ("sealpost_websocket_displacements_total", 1.0),
        (
            r#"sealpost_auth_attempts_total{outcome="bad_password"}"#,
            1.0,
        ),
        (
            r#"sealpost_ratelimit_hits_total{limit="registration"}"#,
            1.0,
        ),
        (
            r#"sealpost_prekeys_fetches_total{access="authenticated"}"#,
            1.0,
        ),
        (r#"sealpost_store_up{store="postgres"}"#, 1.0),
        (r#"sealpost_store_up{store="redis"}"#, 1.0),
        ("sealpost_postgres_pool_max_connections", 4.0),
        ("sealpost_process_open_fds", 1.0),
        ("sealpost_process_resident_memory_bytes", 1.0),
    ] {
        let value = sample(&scrape, series);
        assert!(
            value >= at_least,
            "{series} = {value}, expected >= {at_least}"
        );
    }
    assert_eq!(
        sample(&scrape, r#"sealpost_store_errors_total{kind="backend"}"#),
        0.0
    );
}

#[tokio::test]
async fn requests_a_store_fails_are_counted_and_the_store_and_readiness_gauges_drop() {
    let stores = TestStores::new(Backend::External).await;
    let mut config = stores.config();
    // Postgres answers; "Redis" is a port nothing listens on.
    if let sealpost::config::StoreConfig::External { redis_url, .. } = &mut config.stores {
        *redis_url = sealpost::config::SecretUrl::new(format!(
            "redis://127.0.0.1:{}",
            crate::common::process::free_port()
        ));
    }
    let app = TestApp::start(config).await;
    let refused = app
        .client
        .register_new()
        .await
        .err()
        .expect("Redis is down");
    assert_eq!(
        refused.status(),
        Some(reqwest::StatusCode::SERVICE_UNAVAILABLE)
    );
    let scrape = app.metrics().await;
    assert!(
        sample(
            &scrape,
            r#"sealpost_store_errors_total{kind="unavailable"}"#
        ) >= 1.0
    );
    assert_eq!(sample(&scrape, r#"sealpost_store_up{store="redis"}"#), 0.0);
    assert_eq!(
        sample(&scrape, r#"sealpost_store_up{store="postgres"}"#),
        1.0
    );
    assert_eq!(sample(&scrape, "sealpost_health_ready"), 0.0);
    assert_eq!(sample(&scrape, "sealpost_pubsub_connection_up"), 0.0);
    assert!(sample(&scrape, "sealpost_pubsub_connection_failures_total") >= 1.0);
    app.stop().await;
}

#[tokio::test]
async fn json_logs_of_a_real_process_parse_carry_request_ids_and_hold_no_secrets() {
    let stores = TestStores::new(Backend::External).await;
    let mut env = stores.process_env();
    env.push(("SEALPOST_LOG_FORMAT", "json".into()));
    // The most verbose filter an operator can set: libraries stay at info regardless
    // (tokio-postgres's debug lines print statement parameters: hashes and keys).
    env.push(("SEALPOST_LOG", "trace".into()));
    let server = Server::start(&env).await;
    let base = server.client.url("");
    let secrets = traffic(base.trim_end_matches('/'), &server.admin, &server.client).await;
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0));

    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request_ids: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request")
        .map(|l| {
            l["span"]["request_id"]
                .as_str()
                .expect("a request line has its id")
        })
        .collect();
    assert!(request_ids.contains("ops-test-send"), "{request_ids:?}");
    assert!(request_ids.len() >= 6, "{request_ids:?}");
    for (line, raw) in lines.iter().zip(log.lines()) {
        for secret in &secrets.0 {
            assert!(
                !raw.contains(secret.as_str()),
                "a log line holds a secret: {raw}"
            );
        }
        // The client's address (loopback here) never shows in what a request logs; start-up
        // lines may name the configured listeners and stores.
        if line["span"]["request_id"].is_string() {
            assert!(
                !raw.contains("127.0.0.1"),
                "a request's line holds an address: {raw}"
            );
        }
    }
}
