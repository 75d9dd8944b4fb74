//! A removed device's socket never outlives it: a socket whose upgrade authenticates while
//! its device is being removed (on its pod or another) closes with 4401 and never receives
//! what is sent to a device linked again at the same id; a pod whose pub/sub connection was
//! down re-validates its sockets; a removal event that cannot be published is an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{Backend, TestApp, TestStores};
use reqwest::StatusCode;
use sealpost::client::ws::WsClient;
use sealpost::client::{AccountKeys, DeviceCredentials, default_attributes};
use sealpost::config::{Config, SecretUrl, StoreConfig};
use sealpost::domain::encoding::encode_base64;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);
const ROUNDS: usize = 50;

/// A configuration on these stores without rate limits (the rounds link many devices).
fn config(stores: &TestStores) -> Config {
    let mut config = stores.config();
    config.rate_limits.enabled = false;
    config
}

/// The same configuration with Redis reached at `redis_url` instead.
fn config_with_redis(stores: &TestStores, redis_url: String) -> Config {
    let mut config = config(stores);
    if let StoreConfig::External { redis_url: url, .. } = &mut config.stores {
        *url = SecretUrl::new(redis_url);
    }
    config
}

async fn link(app: &TestApp, primary: &DeviceCredentials, keys: &AccountKeys) -> DeviceCredentials {
    let code = app.client.link_code(primary).await.unwrap();
    app.client
        .link_device(&code.verification_code, keys, default_attributes())
        .await
        .unwrap()
}

async fn remove(app: &TestApp, who: &DeviceCredentials, id: u8) -> reqwest::Response {
    app.client
        .http()
        .delete(app.client.url(&format!("/v1/devices/{id}")))
        .header("Authorization", who.authorization())
        .send()
        .await
        .unwrap()
}

/// Sends `content` to devices 1 and 2 of `to`.
async fn send(app: &TestApp, from: &DeviceCredentials, to: &DeviceCredentials, content: &str) {
    let messages: Vec<_> = [1, 2]
        .iter()
        .map(|d| json!({"type": 1, "destinationDeviceId": d, "content": encode_base64(content.as_bytes())}))
        .collect();
    let status = app
        .client
        .http()
        .put(app.client.url(&format!("/v1/messages/{}", to.aci)))
        .header("Authorization", from.authorization())
        .json(&json!({"messages": messages, "timestamp": 1}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
}

/// Reads what `socket` is sent until it closes; asserts none of it is `forbidden` and
/// returns the close code.
async fn close_code_without(socket: &mut WsClient, forbidden: &str) -> Option<u16> {
    while let Some(request) = socket.next_request(WAIT).await {
        if let Some(envelope) = request.envelope() {
            assert_ne!(
                envelope.content.unwrap_or_default().to_vec(),
                forbidden.as_bytes().to_vec(),
                "a removed device's socket got the message of the device linked at its id"
            );
        }
    }
    socket.closed(Duration::from_secs(1)).await
}

/// Many rounds of an upgrade racing the removal of its device (started a few milliseconds
/// apart, so that the removal lands before, during and after the upgrade's authentication),
/// on one pod and, with Postgres and Redis, across two. Every socket that opened must close
/// with 4401, and must not receive the message sent to the device linked next at the same id.
async fn a_socket_that_opens_while_its_device_is_removed_closes_with_4401(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut pods = vec![TestApp::start(config(&stores)).await];
    if backend == Backend::External {
        pods.push(TestApp::start(config(&stores)).await);
    }
    let (alice, keys) = pods[0].client.register_new().await.unwrap();
    let (bob, _) = pods[0].client.register_new().await.unwrap();
    let mut device = link(&pods[0], &alice, &keys).await;
    let mut opened = 0;
    for round in 0..ROUNDS {
        assert_eq!(device.device.get(), 2);
        // Same pod, other pod, in turn (one pod: always the same).
        let socket_pod = &pods[round % pods.len()];
        let removal_pod = &pods[(round / 2) % pods.len()];
        let delay = Duration::from_millis((round % 10) as u64 * 4);
        let (socket, removed) = tokio::join!(
            WsClient::connect(&socket_pod.address, Some(&device)),
            async {
                tokio::time::sleep(delay).await;
                remove(removal_pod, &alice, 2).await.status()
            }
        );
        assert_eq!(removed, StatusCode::NO_CONTENT, "round {round}");
        // A new device at the same id, with a message waiting for it.
        // (Linked and sent through one pod: its own writes reach its account cache at once.)
        let linking_pod = &pods[round % pods.len()];
        device = link(linking_pod, &alice, &keys).await;
        let marker = format!("for the device linked after round {round}");
        send(linking_pod, &bob, &alice, &marker).await;
        if let Ok(mut socket) = socket {
            opened += 1;
            assert_eq!(
                close_code_without(&mut socket, &marker).await,
                Some(4401),
                "round {round}: the socket of a removed device must close with 4401"
            );
        }
    }
    assert!(
        opened > 0,
        "no upgrade won its race: the test tested nothing"
    );
    for pod in pods {
        pod.stop().await;
    }
}

on_both_backends!(a_socket_that_opens_while_its_device_is_removed_closes_with_4401);

/// A TCP proxy in front of the test Redis that can cut every connection through it and
/// refuse new ones: a pod's pub/sub connection goes down without touching any other test's.
struct RedisProxy {
    address: SocketAddr,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl RedisProxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let target = crate::common::redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let accepting = up.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { address, up, cut }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.address)
    }

    /// Cuts every connection and refuses new ones until [`RedisProxy::restore`].
    fn cut_and_hold(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn wait_for_metric(app: &TestApp, sample: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.metric(sample).await != value {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} never became {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// While the pod's pub/sub connection is down, the device is deleted straight in Postgres, so
/// no removal event can ever arrive; the reconnected listener re-validates every socket.
#[tokio::test]
async fn after_a_pubsub_reconnect_a_socket_whose_device_was_removed_meanwhile_closes_with_4401() {
    let stores = TestStores::new(Backend::External).await;
    let proxy = RedisProxy::start().await;
    let app = TestApp::start(config_with_redis(&stores, proxy.url())).await;
    let (alice, keys) = app.client.register_new().await.unwrap();
    let laptop = link(&app, &alice, &keys).await;
    let mut socket = WsClient::connect(&app.address, Some(&laptop))
        .await
        .unwrap();
    assert!(socket.next_request(WAIT).await.unwrap().is_queue_empty());
    wait_for_metric(&app, "sealpost_pubsub_connection_up", 1.0).await;

    proxy.cut_and_hold();
    wait_for_metric(&app, "sealpost_pubsub_connection_up", 0.0).await;
    let db_url = &stores.db.as_ref().unwrap().url;
    let (db, connection) = tokio_postgres::connect(db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deleted = db
        .execute(
            "DELETE FROM devices WHERE aci = $1 AND device_id = 2",
            &[&laptop.aci.uuid()],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    proxy.restore();

    assert_eq!(socket.closed(WAIT).await, Some(4401));
    app.stop().await;
}

/// A Redis user that may do everything but PUBLISH (until allowed), removed on drop.
struct NoPublishUser {
    name: String,
    password: String,
}

impl NoPublishUser {
    fn create() -> Self {
        let user = Self {
            name: format!("sealpost-test-{}", uuid::Uuid::new_v4().simple()),
            password: uuid::Uuid::new_v4().simple().to_string(),
        };
        user.acl(&[
            "SETUSER",
            &user.name,
            "on",
            &format!(">{}", user.password),
            "~*",
            "&*",
            "+@all",
            "-publish",
        ]);
        user
    }

    fn acl(&self, args: &[&str]) {
        let client = redis::Client::open(crate::common::redis_url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let _: () = redis::cmd("ACL").arg(args).query(&mut conn).unwrap();
    }

    fn allow_publish(&self) {
        self.acl(&["SETUSER", &self.name, "+publish"]);
    }

    fn url(&self) -> String {
        let base = crate::common::redis_url();
        let rest = base.trim_start_matches("redis://");
        format!("redis://{}:{}@{rest}", self.name, self.password)
    }
}

impl Drop for NoPublishUser {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(crate::common::redis_url())
            && let Ok(mut conn) = client.get_connection()
        {
            let _: Result<(), _> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.name)
                .query(&mut conn);
        }
    }
}

/// The pod that removes the device cannot publish the removal: the client gets an error,
/// not 204, and its retry (once publishing works) answers 404 and closes the socket on the
/// other pod.
#[tokio::test]
async fn a_removal_whose_event_cannot_be_published_fails_and_its_retry_closes_the_socket() {
    let stores = TestStores::new(Backend::External).await;
    let user = NoPublishUser::create();
    let remover = TestApp::start(config_with_redis(&stores, user.url())).await;
    let holder = TestApp::start(config(&stores)).await;
    let (alice, keys) = holder.client.register_new().await.unwrap();
    let laptop = link(&holder, &alice, &keys).await;
    let mut socket = WsClient::connect(&holder.address, Some(&laptop))
        .await
        .unwrap();
    assert!(socket.next_request(WAIT).await.unwrap().is_queue_empty());

    let failed = remove(&remover, &alice, 2).await;
    assert!(
        failed.status().is_server_error(),
        "a removal nobody heard of is not a success: {}",
        failed.status()
    );
    let body: serde_json::Value = failed.json().await.unwrap();
    assert!(body["code"].is_number() && body["message"].is_string());

    user.allow_publish();
    assert_eq!(
        remove(&remover, &alice, 2).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(socket.closed(WAIT).await, Some(4401));
    remover.stop().await;
    holder.stop().await;
}
