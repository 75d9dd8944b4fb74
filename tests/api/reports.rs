//! Spam reports (PROTOCOL.md 17) through the real server: an identified message reported
//! by its recipient counts once; sealed messages, unknown ones and wrong senders never do;
//! every answer is 202 either way; bad input gets a JSON 4xx; operators list what counted.

use std::process::{Command, Stdio};

use reqwest::StatusCode;
use sealpost::client::DeviceCredentials;
use sealpost::domain::encoding::encode_base64;
use sealpost::domain::ids::Aci;
use sealpost::limits::Limit;
use serde_json::{Value, json};
use uuid::Uuid;

use super::message_helpers::{body, connect, send, send_body};
use crate::common::{Backend, TestApp, TestStores, register_with};

async fn report(
    app: &TestApp,
    who: Option<&DeviceCredentials>,
    source: &str,
    guid: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut request = app.client.http().post(
        app.client
            .url(&format!("/v1/messages/report/{source}/{guid}")),
    );
    if let Some(who) = who {
        request = request.header("Authorization", who.authorization());
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The server GUIDs of what `who` has queued, oldest first.
async fn queued_guids(app: &TestApp, who: &DeviceCredentials) -> Vec<Uuid> {
    let (ws, backlog) = connect(app, who).await;
    let guids = backlog
        .iter()
        .map(|r| {
            Uuid::from_slice(
                &r.envelope()
                    .expect("an envelope")
                    .server_guid
                    .expect("a guid"),
            )
            .unwrap()
        })
        .collect();
    ws.close().await;
    guids
}

async fn counted(app: &TestApp) -> f64 {
    app.metric("sealpost_spam_reports_total").await
}

async fn an_identified_message_reported_by_its_recipient_counts_once(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    let (alice, _) = register_with(&app, None, false).await;
    let (bob, _) = register_with(&app, None, false).await;
    assert_eq!(
        send(&app, &alice, &bob.aci, "buy now").await.0,
        StatusCode::OK
    );
    let guid = queued_guids(&app, &bob).await[0];

    let token = encode_base64(&[9; 32]);
    let (status, text) = report(
        &app,
        Some(&bob),
        &alice.aci.to_string(),
        &guid.to_string(),
        Some(&json!({ "token": token }).to_string()),
    )
    .await;
    assert_eq!((status, text.as_str()), (202, ""));
    assert_eq!(counted(&app).await, 1.0);
    assert_eq!(
        app.stores.report_hashes.reporters(alice.aci).await.unwrap(),
        1
    );
    let log = app.stores.spam_reports.since(0, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].reporter, log[0].source, log[0].guid),
        (bob.aci, alice.aci, guid)
    );
    assert_eq!(log[0].token.as_deref(), Some(&[9u8; 32][..]));

    // The same message again: still 202, but it counted already.
    let (status, _) = report(
        &app,
        Some(&bob),
        &alice.aci.to_string(),
        &guid.to_string(),
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(counted(&app).await, 1.0);
    assert_eq!(app.stores.spam_reports.since(0, 10).await.unwrap().len(), 1);
    app.stop().await;
}

async fn reports_of_sealed_unknown_or_misattributed_messages_never_count(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    let (alice, _) = register_with(&app, None, false).await;
    let (bob, _) = register_with(&app, Some([5; 16]), false).await;
    let carol = Aci::random();

    // Sealed: sent with Bob's access key, no sender known to the server.
    let response = app
        .client
        .http()
        .put(app.client.url(&format!("/v1/messages/{}", bob.aci)))
        .header("Unidentified-Access-Key", encode_base64(&[5; 16]))
        .json(&body(&["sealed"], 1_700_000_000_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Identified, from Alice.
    assert_eq!(
        send_body(
            &app,
            &alice,
            &bob.aci,
            body(&["identified"], 1_700_000_000_001)
        )
        .await
        .0,
        StatusCode::OK
    );
    let guids = queued_guids(&app, &bob).await;
    let (sealed, identified) = (guids[0], guids[1]);

    for (source, guid) in [
        (alice.aci, sealed),
        (alice.aci, Uuid::new_v4()),
        // The right message, the wrong sender: the hash binds both.
        (carol, identified),
    ] {
        let (status, text) = report(
            &app,
            Some(&bob),
            &source.to_string(),
            &guid.to_string(),
            None,
        )
        .await;
        assert_eq!((status, text.as_str()), (202, ""), "always 202");
    }
    assert_eq!(counted(&app).await, 0.0);
    assert_eq!(app.stores.report_hashes.reporters(carol).await.unwrap(), 0);
    assert!(
        app.stores
            .spam_reports
            .since(0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The identified one still counts with its real sender.
    report(
        &app,
        Some(&bob),
        &alice.aci.to_string(),
        &identified.to_string(),
        None,
    )
    .await;
    assert_eq!(counted(&app).await, 1.0);
    app.stop().await;
}

/// Who reports, the source and GUID in the path, the body, and the status wanted.
type Case<'a> = (
    Option<&'a DeviceCredentials>,
    &'a str,
    &'a str,
    Option<&'a str>,
    u16,
);

async fn bad_reports_get_a_json_4xx(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    let (bob, _) = register_with(&app, None, false).await;
    let source = Aci::random().to_string();
    let guid = Uuid::new_v4().to_string();
    let long_token = json!({ "token": encode_base64(&[1; 1025]) }).to_string();
    let huge = format!("{{\"token\":\"{}\"}}", "A".repeat(5000));
    let cases: [Case; 9] = [
        (None, &source, &guid, None, 401),
        (Some(&bob), "+15551234567", &guid, None, 400),
        (
            Some(&bob),
            "PNI:9d0652a3-dcc3-4d11-975f-74d61598733f",
            &guid,
            None,
            400,
        ),
        (Some(&bob), "not-an-aci", &guid, None, 400),
        (Some(&bob), &source, "not-a-guid", None, 400),
        (Some(&bob), &source, &guid, Some("{\"token\":"), 400),
        (Some(&bob), &source, &guid, Some("{\"token\":\"!!!\"}"), 422),
        (Some(&bob), &source, &guid, Some(&long_token), 422),
        (Some(&bob), &source, &guid, Some(&huge), 413),
    ];
    for (who, source, guid, body, want) in cases {
        let (status, text) = report(&app, who, source, guid, body).await;
        assert_eq!(status, want, "{source} {guid} {body:?}: {text}");
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(json["code"], want, "a JSON body: {text}");
    }
    // No body, an empty object, an empty token: all reports without a token.
    for body in [
        None,
        Some("{}"),
        Some("{\"token\":\"\"}"),
        Some("{\"token\":null}"),
    ] {
        assert_eq!(
            report(&app, Some(&bob), &source, &guid, body).await.0,
            202,
            "{body:?}"
        );
    }
    app.stop().await;
}

async fn reports_are_limited_per_account(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config_with_limit(Limit::SpamReport, 2, 60_000.0)).await;
    let (bob, _) = register_with(&app, None, false).await;
    let (carol, _) = register_with(&app, None, false).await;
    let (source, guid) = (Aci::random().to_string(), Uuid::new_v4().to_string());
    assert_eq!(report(&app, Some(&bob), &source, &guid, None).await.0, 202);
    assert_eq!(report(&app, Some(&bob), &source, &guid, None).await.0, 202);
    assert_eq!(report(&app, Some(&bob), &source, &guid, None).await.0, 429);
    assert_eq!(
        report(&app, Some(&carol), &source, &guid, None).await.0,
        202
    );
    app.stop().await;
}

on_both_backends!(
    an_identified_message_reported_by_its_recipient_counts_once,
    reports_of_sealed_unknown_or_misattributed_messages_never_count,
    bad_reports_get_a_json_4xx,
    reports_are_limited_per_account,
);

/// `sealpost reports list` prints what counted, from Postgres, without the token.
#[tokio::test]
async fn operators_list_the_reports_that_counted() {
    let stores = TestStores::new(Backend::External).await;
    let app = TestApp::start(stores.config()).await;
    let (alice, _) = register_with(&app, None, false).await;
    let (bob, _) = register_with(&app, None, false).await;
    send(&app, &alice, &bob.aci, "spam").await;
    let guid = queued_guids(&app, &bob).await[0];
    let token = json!({ "token": encode_base64(&[3; 40]) }).to_string();
    report(
        &app,
        Some(&bob),
        &alice.aci.to_string(),
        &guid.to_string(),
        Some(&token),
    )
    .await;
    app.stop().await;

    let list = |since: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(["reports", "list", "--since", since])
            .env_clear()
            .envs(stores.process_env())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let printed = list("1h");
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 1, "{printed}");
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(
        &fields[1..],
        [
            alice.aci.to_string(),
            bob.aci.to_string(),
            guid.to_string(),
            "40".to_owned()
        ]
    );
    assert!(fields[0].ends_with('Z'), "{}", fields[0]);
    assert!(
        !printed.contains(&encode_base64(&[3; 40])),
        "never the token"
    );
    assert_eq!(list("2999-01-01T00:00:00Z"), "", "nothing since then");

    // Without a database there is nothing to list, and it says so.
    let output = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(["reports", "list"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SEALPOST_DATABASE_URL"));
}
