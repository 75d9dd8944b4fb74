//! The real `sealpost` binary as operators run it: configuration errors, persistence across
//! a restart, two processes on the same stores, readiness, and SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::{Server, free_port};
use crate::common::{Backend, TestStores};
use reqwest::StatusCode;

/// Polls `check` until it holds or `limit` passes; how long it took when it held.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn external_env(stores: &TestStores) -> Vec<(&'static str, String)> {
    stores.process_env()
}

#[tokio::test]
async fn accounts_survive_a_restart_and_sigterm_exits_cleanly() {
    let stores = TestStores::new(Backend::External).await;
    let server = Server::start(&external_env(&stores)).await;
    assert_eq!(server.ready_status().await.0, StatusCode::OK);
    let (credentials, _) = server.client.register_new().await.unwrap();
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(
        !log.contains(&credentials.password),
        "the log never shows a password"
    );

    let server = Server::start(&external_env(&stores)).await;
    let me = server.client.whoami(&credentials).await.unwrap();
    assert_eq!(me.uuid, credentials.aci);
    assert_eq!(server.terminate().0, Some(0));
}

#[tokio::test]
async fn two_processes_on_the_same_stores_authenticate_the_same_device() {
    let stores = TestStores::new(Backend::External).await;
    let a = Server::start(&external_env(&stores)).await;
    let b = Server::start(&external_env(&stores)).await;
    let (credentials, _) = a.client.register_new().await.unwrap();
    assert_eq!(
        b.client.whoami(&credentials).await.unwrap().uuid,
        credentials.aci
    );
    assert_eq!(
        a.client.whoami(&credentials).await.unwrap().uuid,
        credentials.aci
    );

    // Deleting through one process reaches the other's account cache over pub/sub within
    // milliseconds (the request to A races that message, hence the short wait).
    b.client.delete_account(&credentials).await.unwrap();
    let refused = eventually(Duration::from_secs(2), || async {
        a.client
            .whoami(&credentials)
            .await
            .err()
            .and_then(|e| e.status())
            == Some(StatusCode::UNAUTHORIZED)
    })
    .await;
    assert!(
        refused.is_some(),
        "the deleted account is refused on the other pod"
    );
    assert_eq!(a.terminate().0, Some(0));
    assert_eq!(b.terminate().0, Some(0));
}

#[tokio::test]
async fn a_password_changed_behind_every_pods_back_is_refused_within_the_cache_ttl() {
    let stores = TestStores::new(Backend::External).await;
    let server = Server::start(&external_env(&stores)).await;
    let (credentials, _) = server.client.register_new().await.unwrap();
    server.client.whoami(&credentials).await.unwrap(); // now cached

    // Another pod changes the password (as linking or re-registration will).
    let new_password = sealpost::client::random_password();
    let hash = sealpost::auth::password::hash(&new_password).unwrap();
    let (db, connection) =
        tokio_postgres::connect(&stores.db.as_ref().unwrap().url, tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    db.execute(
        "UPDATE devices SET password_hash = $1 WHERE aci = $2",
        &[&hash, &credentials.aci.uuid()],
    )
    .await
    .unwrap();

    // A change that bypasses every pod (no invalidation event at all) is seen once the
    // cached entry expires: the bound on staleness when an event is lost.
    let refused = eventually(Duration::from_secs(8), || async {
        server
            .client
            .whoami(&credentials)
            .await
            .err()
            .and_then(|e| e.status())
            == Some(StatusCode::UNAUTHORIZED)
    })
    .await;
    let waited = refused.expect("the old password is refused once the cache entry expires");
    assert!(waited <= Duration::from_secs(7), "{waited:?}");
    let mut updated = credentials.clone();
    updated.password = new_password;
    server.client.whoami(&updated).await.unwrap();
    server.terminate();
}

#[tokio::test]
async fn readiness_is_503_while_a_store_does_not_answer() {
    let stores = TestStores::new(Backend::External).await;
    let mut env = external_env(&stores);
    env[1].1 = format!("redis://127.0.0.1:{}", free_port()); // nothing listens there
    let server = Server::start(&env).await;
    let (status, body) = server.ready_status().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["stores"]["redis"], "down");
    assert_eq!(body["stores"]["postgres"], "up");
    let live = reqwest::get(format!("{}/health/live", server.admin))
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let metrics = reqwest::get(format!("{}/metrics", server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sealpost_store_up{store=\"redis\"} 0"),
        "{metrics}"
    );
    // A request that needs Redis (the registration limit) fails as 503, not as a crash.
    let err = server
        .client
        .register_new()
        .await
        .err()
        .expect("Redis is down");
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(server.terminate().0, Some(0));
}

#[tokio::test]
async fn the_embedded_mode_serves_and_warns_loudly_that_nothing_persists() {
    let server = Server::start(&[]).await;
    let (status, _) = server.ready_status().await;
    assert_eq!(status, StatusCode::OK);
    let (credentials, _) = server.client.register_new().await.unwrap();
    server.client.whoami(&credentials).await.unwrap();
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(log.contains("NOTHING PERSISTS"), "{log}");
}

#[tokio::test]
async fn under_a_low_descriptor_limit_sockets_are_refused_with_a_503_and_the_admin_listener_still_answers()
 {
    use sealpost::client::ws::{WsClient, WsError};
    let limit = 512;
    let no_client_caps = [
        ("SEALPOST_MAX_WEBSOCKETS_PER_CLIENT", "0".to_owned()),
        ("SEALPOST_MAX_CONNECTIONS_PER_CLIENT", "0".to_owned()),
    ];
    let server = Server::start_with_open_files(&no_client_caps, limit).await;
    // One client opens sockets until it is refused: never a hang, never a crash.
    let mut sockets = Vec::new();
    let refusal = loop {
        match tokio::time::timeout(Duration::from_secs(5), WsClient::connect(&server.api, None))
            .await
        {
            Err(_) => panic!(
                "upgrade {} hung instead of being refused",
                sockets.len() + 1
            ),
            Ok(Ok(ws)) => sockets.push(ws),
            Ok(Err(e)) => break e,
        }
        assert!(
            sockets.len() < limit as usize,
            "more sockets than descriptors"
        );
    };
    assert!(matches!(refusal, WsError::Refused(503)), "{refusal}");
    // The limit the process derived from its descriptors (one worker, embedded stores).
    let budget = sealpost::descriptors::Budget::new(limit, 1, 0, 100_000);
    assert_eq!(sockets.len(), budget.max_websockets);

    // The admin listener and plain HTTP still answer, at once.
    for url in [
        format!("{}/health/live", server.admin),
        format!("{}/health/ready", server.admin),
        format!("{}/v1/keepalive", server.api),
    ] {
        let answer = tokio::time::timeout(Duration::from_secs(2), reqwest::get(&url))
            .await
            .unwrap_or_else(|_| panic!("{url} did not answer under exhaustion"))
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{url}");
    }
    drop(sockets);
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("descriptor budget"), "{log}");
}

#[test]
fn configuration_errors_refuse_to_start_with_a_clear_message() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("SEALPOST_DATABASE_URL", "postgres://x@127.0.0.1/y")],
            "SEALPOST_REDIS_URL is not",
        ),
        (
            &[("SEALPOST_REDIS_URL", "redis://127.0.0.1")],
            "SEALPOST_DATABASE_URL is not",
        ),
        (
            &[("SEALPOST_RATE_LIMITS", "sometimes")],
            "SEALPOST_RATE_LIMITS",
        ),
        (&[("SEALPOST_LISTEN", "nowhere")], "not a socket address"),
    ];
    for (env, expected) in cases {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let output = Server::command(&env).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn a_config_file_is_read_and_overridden_by_the_environment() {
    let dir = std::env::temp_dir().join(format!("sealpost-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sealpost.toml");
    std::fs::write(&file, "listen = \"not an address\"\n").unwrap();
    let output = Server::command(&[])
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a socket address"));
    std::fs::write(&file, "unknown_setting = 1\n").unwrap();
    let output = Server::command(&[])
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn migrate_applies_the_schema_and_exits() {
    let stores = TestStores::new(Backend::External).await;
    let status = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("migrate")
        .envs(external_env(&stores))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (db, connection) =
        tokio_postgres::connect(&stores.db.as_ref().unwrap().url, tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let row = db
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'devices'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
}

/// The days of the expiration rule a bucket was given, if any.
fn expiration_days(bucket: &crate::common::s3::TestBucket) -> Option<i32> {
    bucket
        .lifecycle()?
        .rules
        .iter()
        .find_map(|rule| rule.expiration.as_ref()?.days)
}

#[tokio::test]
async fn migrate_hands_the_attachment_retention_to_the_bucket() {
    let stores = TestStores::with_s3(Backend::External).await;
    let output = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("migrate")
        .envs(external_env(&stores))
        .env("SEALPOST_ATTACHMENT_RETENTION_DAYS", "30")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("attachment lifecycle applied"), "{log}");
    assert!(!log.contains(crate::common::s3::SECRET_KEY), "{log}");
    assert_eq!(expiration_days(stores.s3.as_ref().unwrap()), Some(30));
}

#[tokio::test]
async fn migrate_on_a_bucket_without_lifecycles_warns_that_the_sweeper_enforces_retention() {
    let mut stores = TestStores::new(Backend::Embedded).await;
    stores.s3 = Some(crate::common::s3::TestBucket::without_lifecycle().await);
    let output = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("migrate")
        .envs(external_env(&stores))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("the sweeper will enforce"), "{log}");
}

#[tokio::test]
async fn a_server_start_hands_the_attachment_retention_to_its_bucket() {
    let stores = TestStores::with_s3(Backend::Embedded).await;
    let app = crate::common::TestApp::start(stores.config()).await;
    let bucket = stores.s3.as_ref().unwrap();
    // Applied in the background, so that a slow bucket does not hold up the start.
    let applied = eventually(Duration::from_secs(10), || async {
        expiration_days(bucket) == Some(45)
    })
    .await;
    assert!(applied.is_some(), "no lifecycle after 10 s");
    app.stop().await;
}
