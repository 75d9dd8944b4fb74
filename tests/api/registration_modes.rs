//! Who may register: `open` (the default), `token` (an invite token per registration, made
//! by `sealpost admin tokens create`) and `closed`, through the real server.

use std::process::{Command, Stdio};

use sealpost::client::{AccountKeys, default_attributes, random_password};
use sealpost::config::RegistrationMode;
use sealpost::domain::invites::new_token;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, TestStores};

/// A registration with fresh keys carrying `token`: its status and body.
async fn register(app: &TestApp, token: Option<&str>) -> (u16, Value) {
    let keys = AccountKeys::generate();
    let mut body = serde_json::to_value(keys.registration_request(default_attributes())).unwrap();
    if let Some(token) = token {
        body["inviteToken"] = json!(token);
    }
    let response = app
        .client
        .http()
        .post(app.client.url("/v1/registration"))
        .header(
            "Authorization",
            sealpost::client::basic_auth("", &random_password()),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn start(backend: Backend, mode: RegistrationMode) -> (TestApp, TestStores) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.registration = mode;
    config.rate_limits.enabled = false;
    (TestApp::start(config).await, stores)
}

async fn invite(app: &TestApp, uses: u32, expires_ms: Option<i64>) -> (String, i64) {
    let (token, hash) = new_token();
    let id = app
        .stores
        .invites
        .create(&hash, uses, expires_ms, sealpost::domain::clock::now_ms())
        .await
        .unwrap();
    (token, id)
}

async fn refused(app: &TestApp, reason: &str) -> f64 {
    app.metric(&format!(
        "sealpost_accounts_registrations_refused_total{{reason=\"{reason}\"}}"
    ))
    .await
}

async fn an_open_server_needs_no_token_and_ignores_one(backend: Backend) {
    let (app, _stores) = start(backend, RegistrationMode::Open).await;
    assert_eq!(register(&app, None).await.0, 200);
    assert_eq!(register(&app, Some("anything")).await.0, 200);
    app.stop().await;
}

async fn a_closed_server_refuses_every_registration(backend: Backend) {
    let (app, _stores) = start(backend, RegistrationMode::Closed).await;
    let (token, _) = invite(&app, 5, None).await;
    for token in [None, Some(token.as_str())] {
        let (status, body) = register(&app, token).await;
        assert_eq!((status, &body["code"]), (403, &json!(403)), "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("closed"),
            "{body}"
        );
    }
    assert_eq!(refused(&app, "closed").await, 2.0);
    app.stop().await;
}

async fn token_mode_admits_only_valid_invites_each_for_its_uses(backend: Backend) {
    let (app, _stores) = start(backend, RegistrationMode::Token).await;
    let (status, body) = register(&app, None).await;
    assert_eq!((status, &body["code"]), (403, &json!(403)), "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("inviteToken"),
        "{body}"
    );
    assert_eq!(register(&app, Some("made-up")).await.0, 403);
    assert_eq!(register(&app, Some(&"x".repeat(500))).await.0, 403);

    let (two, _) = invite(&app, 2, None).await;
    assert_eq!(register(&app, Some(&two)).await.0, 200);
    assert_eq!(register(&app, Some(&two)).await.0, 200);
    let (status, body) = register(&app, Some(&two)).await;
    assert_eq!(status, 403, "used up: {body}");

    let (expired, _) = invite(&app, 1, Some(sealpost::domain::clock::now_ms() - 1)).await;
    assert_eq!(register(&app, Some(&expired)).await.0, 403);
    let (revoked, id) = invite(&app, 1, None).await;
    assert!(app.stores.invites.revoke(id).await.unwrap());
    assert_eq!(register(&app, Some(&revoked)).await.0, 403);
    assert_eq!(refused(&app, "no_token").await, 1.0);
    assert_eq!(refused(&app, "invalid_token").await, 5.0);

    // A registration that fails after the token was checked gives its use back.
    let (one, id) = invite(&app, 1, None).await;
    let keys = AccountKeys::generate();
    let mut bad = serde_json::to_value(keys.registration_request(default_attributes())).unwrap();
    bad["aciSignedPreKey"]["signature"] =
        json!(sealpost::domain::encoding::encode_base64(&[0; 64]));
    bad["inviteToken"] = json!(one);
    let response = app
        .client
        .http()
        .post(app.client.url("/v1/registration"))
        .header(
            "Authorization",
            sealpost::client::basic_auth("", &random_password()),
        )
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422, "checked before the token");
    assert_eq!(register(&app, Some(&one)).await.0, 200);
    let listed = app.stores.invites.list().await.unwrap();
    let listed = listed.iter().find(|i| i.id == id).unwrap();
    assert_eq!((listed.used, listed.uses), (1, 1));
    app.stop().await;
}

async fn a_single_use_invite_admits_one_of_many_racing_registrations(backend: Backend) {
    let (app, _stores) = start(backend, RegistrationMode::Token).await;
    let (token, _) = invite(&app, 1, None).await;
    let racers = (0..6).map(|_| register(&app, Some(&token)));
    let statuses: Vec<u16> = futures_util::future::join_all(racers)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        5,
        "{statuses:?}"
    );
    app.stop().await;
}

on_both_backends!(
    an_open_server_needs_no_token_and_ignores_one,
    a_closed_server_refuses_every_registration,
    token_mode_admits_only_valid_invites_each_for_its_uses,
    a_single_use_invite_admits_one_of_many_racing_registrations,
);

/// `sealpost admin tokens create|list|revoke` against Postgres, and a server in token mode
/// admitting the printed token once.
#[tokio::test]
async fn operators_make_list_and_revoke_invites_from_the_command_line() {
    let stores = TestStores::new(Backend::External).await;
    let admin = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .arg("admin")
            .args(args)
            .env_clear()
            .envs(stores.process_env())
            .env("SEALPOST_REGISTRATION", "token")
            .env("SEALPOST_LOG_FORMAT", "json")
            .env("USER", "ops-alice")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (ok, token, log) = admin(&["tokens", "create", "--uses", "1", "--expires", "1h"]);
    assert!(ok, "{log}");
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 32);
    assert!(
        log.contains("ops-alice") && log.contains("tokens create"),
        "logged: {log}"
    );
    assert!(!log.contains(&token), "the token is never logged");
    let (ok, second, _) = admin(&["tokens", "create", "--expires", "never"]);
    assert!(ok);
    assert_ne!(second.trim(), token);

    let mut config = stores.config();
    config.registration = RegistrationMode::Token;
    let app = TestApp::start(config).await;
    // The command-line client carries the token (a process beside the server, which this
    // test's runtime serves: tokio's process API, never a blocking wait).
    let out = std::env::temp_dir().join(format!("sealpost-invite-{}.json", uuid::Uuid::new_v4()));
    let client = |invite: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(["client", "register", "--server", &app.address, "--out"])
            .arg(&out)
            .args(["--invite", invite])
            .env_clear()
            .kill_on_drop(true)
            .output()
    };
    let registered = client(&token).await.unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let again = client(&token).await.unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("403"));
    assert_eq!(register(&app, Some(&token)).await.0, 403);
    app.stop().await;

    let (ok, listed, _) = admin(&["tokens", "list"]);
    assert!(ok);
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!((rows[0][1], rows[0][4]), ("1/1", "used up"));
    assert_eq!(
        (rows[1][1], rows[1][2], rows[1][4]),
        ("0/1", "never", "valid")
    );
    assert!(!listed.contains(&token) && !listed.contains(second.trim()));

    let (ok, _, log) = admin(&["tokens", "revoke", rows[1][0]]);
    assert!(ok, "{log}");
    let (_, listed, _) = admin(&["tokens", "list"]);
    assert!(
        listed.lines().nth(1).unwrap().ends_with("revoked"),
        "{listed}"
    );
    let (ok, _, log) = admin(&["tokens", "revoke", "999"]);
    assert!(!ok && log.contains("no invite 999"), "{log}");
}
