//! APNs and FCM wake-ups end to end through the real server, against the local stand-ins of
//! `common::push` that check credentials as Apple and Google do: 11.3's headers and payloads
//! for urgent and background pushes, one cached provider token for many pushes, and 11.5's
//! rules for tokens the provider no longer knows.

use std::time::{Duration, Instant};

use sealpost::client::DeviceCredentials;
use sealpost::config::ApnsConfig;
use serde_json::json;

use super::message_helpers::WAIT;
use super::push_wakeups::{QUIET, Setup, TempFile, put, send};
use crate::common::push::apns::ApnsServer;
use crate::common::push::fcm::FcmServer;
use crate::common::{Backend, TestApp, register_with};

/// A device token as APNs hands them out: 32 bytes in hex.
const APNS_TOKEN: &str = "5f0d8c4e1b2a39476c8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e";

/// A server configured with the local APNs and FCM stand-ins besides WebPush.
async fn with_providers(setup: &mut Setup, apns: &ApnsServer, fcm: &FcmServer) -> TestApp {
    let bundle = format!(
        "{}{}{}",
        setup.webpush.ca_pem(),
        apns.ca_pem(),
        fcm.ca_pem()
    );
    setup.files[0] = TempFile::new(bundle.as_bytes());
    let settings = apns.settings();
    let key = TempFile::new(&settings.key_pem);
    let credentials = TempFile::new(&fcm.settings().credentials_json);
    let mut config = setup.config();
    config.push.apns = Some(ApnsConfig {
        key_file: key.0.clone(),
        key_id: settings.key_id,
        team_id: settings.team_id,
        bundle_id: settings.bundle_id,
        sandbox: false,
        url: settings.base_url,
    });
    config.push.fcm_credentials_file = Some(credentials.0.clone());
    config.push.fcm_url = Some(fcm.url());
    setup.files.extend([key, credentials]);
    TestApp::start(config).await
}

async fn wait_until_cleared(app: &TestApp, who: &DeviceCredentials) {
    let deadline = Instant::now() + WAIT;
    while app
        .stores
        .push
        .push(who.aci, who.device)
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the token is cleared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn apns_and_fcm_devices_are_woken_and_unregistered_tokens_cleared(backend: Backend) {
    let mut setup = Setup::new(backend).await;
    let (apns, fcm) = (ApnsServer::start().await, FcmServer::start().await);
    let app = with_providers(&mut setup, &apns, &fcm).await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let (iphone, _) = register_with(&app, Some([2; 16]), false).await;
    let (android, _) = register_with(&app, Some([3; 16]), false).await;
    let body = json!({"apnRegistrationId": APNS_TOKEN});
    assert_eq!(put(&app, &iphone, "/v1/accounts/apn/", body).await, 204);
    let body = json!({"gcmRegistrationId": "fcm-token-1"});
    assert_eq!(put(&app, &android, "/v1/accounts/gcm/", body).await, 204);

    send(&app, &alice, &iphone.aci, true, false).await;
    send(&app, &alice, &android.aci, true, false).await;
    let alert = &apns.wait_for(1, WAIT).await[0];
    assert_eq!(alert.token, APNS_TOKEN);
    assert_eq!((alert.push_type.as_str(), alert.priority), ("alert", 10));
    assert_eq!(alert.collapse_id.as_deref(), Some("incoming-message"));
    assert_eq!(
        alert.payload,
        json!({"aps": {"mutable-content": 1, "alert": {"loc-key": "APN_Message"}}})
    );
    let data = &fcm.wait_for(1, WAIT).await[0];
    assert_eq!(data.token, "fcm-token-1");
    assert_eq!(data.priority.as_deref(), Some("HIGH"));
    assert_eq!(
        data.data.iter().collect::<Vec<_>>(),
        [(&"newMessageAlert".to_string(), &String::new())]
    );

    // Background pushes: APNs content-available at low priority, FCM NORMAL.
    send(&app, &alice, &iphone.aci, false, false).await;
    send(&app, &alice, &android.aci, false, false).await;
    let background = &apns.wait_for(2, WAIT).await[1];
    assert_eq!(
        (background.push_type.as_str(), background.priority),
        ("background", 5)
    );
    assert_eq!(background.payload, json!({"aps": {"content-available": 1}}));
    assert_eq!(
        fcm.wait_for(2, WAIT).await[1].priority.as_deref(),
        Some("NORMAL")
    );

    // APNs invalidated the token before it was last updated: kept (11.5). After: cleared.
    let updated = app
        .stores
        .push
        .push(iphone.aci, iphone.device)
        .await
        .unwrap()
        .unwrap()
        .updated_ms;
    apns.unregister(APNS_TOKEN, updated - 1000);
    send(&app, &alice, &iphone.aci, true, false).await;
    tokio::time::sleep(QUIET).await;
    assert!(
        app.stores
            .push
            .push(iphone.aci, iphone.device)
            .await
            .unwrap()
            .is_some(),
        "a token updated after its invalidation is kept"
    );
    apns.unregister(APNS_TOKEN, updated + 1000);
    send(&app, &alice, &iphone.aci, true, false).await;
    wait_until_cleared(&app, &iphone).await;

    fcm.unregister("fcm-token-1");
    send(&app, &alice, &android.aci, true, false).await;
    wait_until_cleared(&app, &android).await;
    assert_eq!(fcm.token_requests(), 1, "one OAuth token for every push");
    app.stop().await;
}

on_both_backends!(apns_and_fcm_devices_are_woken_and_unregistered_tokens_cleared);
