//! Push registrations through the real server (PROTOCOL.md 11.1, 11.2, 11.8): what each
//! endpoint stores, Signal's rules (an equal FCM token changes nothing, an APNs token is
//! always rewritten, one kind at a time, `fetchesMessages` cleared), WebPush activation,
//! 422 for anything malformed or aimed at a private address (unless allowed), and the
//! `pushRegistration` limit; tokens at registration and linking, with Signal's "exactly one
//! delivery channel" rule. Who may call them is in the authorization matrix.

use base64::Engine;
use sealpost::api::entities::{ApnTokenJson, GcmTokenJson};
use sealpost::client::{
    AccountKeys, DeviceCredentials, basic_auth, default_attributes, random_password,
};
use sealpost::domain::ids::DeviceId;
use sealpost::domain::push::{PushKind, PushRegistration};
use sealpost::limits::Limit;
use sealpost::storage::StoredPush;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, TestStores, register_with};

async fn app(backend: Backend) -> (TestApp, TestStores) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.rate_limits.enabled = false;
    (TestApp::start(config).await, stores)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn subscription(endpoint: &str) -> Value {
    let mut point = [8u8; 65];
    point[0] = 4;
    json!({"endpoint": endpoint, "publicKey": b64(&point), "auth": b64(&[2; 16])})
}

async fn call(
    app: &TestApp,
    who: &DeviceCredentials,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app
        .client
        .http()
        .request(method, app.client.url(path))
        .header("Authorization", who.authorization());
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("an answer").status().as_u16()
}

async fn stored(app: &TestApp, who: &DeviceCredentials) -> Option<StoredPush> {
    app.stores.push.push(who.aci, who.device).await.unwrap()
}

async fn fetches_messages(app: &TestApp, who: &DeviceCredentials) -> bool {
    let devices = app.stores.accounts.devices(who.aci).await.unwrap();
    devices
        .iter()
        .find(|d| d.id == who.device)
        .expect("the device")
        .attributes
        .fetches_messages
}

async fn tokens_follow_signals_rules(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    assert!(fetches_messages(&app, &alice).await, "registered fetching");

    let gcm = |token: &str| Some(json!({"gcmRegistrationId": token}));
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/gcm/", gcm("f1")).await,
        204
    );
    let first = stored(&app, &alice).await.expect("stored");
    assert!(matches!(&first.registration, PushRegistration::Fcm(t) if t.as_str() == "f1"));
    assert!(
        !fetches_messages(&app, &alice).await,
        "a token clears fetchesMessages"
    );
    // The same FCM token again changes nothing, not even its time.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/gcm/", gcm("f1")).await,
        204
    );
    assert_eq!(stored(&app, &alice).await, Some(first.clone()));

    // APNs replaces FCM, and is rewritten every time.
    let apn = Some(json!({"apnRegistrationId": "ab".repeat(32)}));
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/apn/", apn.clone()).await,
        204
    );
    let apns = stored(&app, &alice).await.unwrap();
    assert_eq!(apns.registration.kind(), PushKind::Apns);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/apn/", apn).await,
        204
    );
    assert!(stored(&app, &alice).await.unwrap().updated_ms > apns.updated_ms);

    // DELETE of another kind leaves it; DELETE of its kind removes it.
    assert_eq!(
        call(&app, &alice, "DELETE", "/v1/accounts/gcm/", None).await,
        204
    );
    assert_eq!(
        stored(&app, &alice).await.unwrap().registration.kind(),
        PushKind::Apns
    );
    assert_eq!(
        call(&app, &alice, "DELETE", "/v1/accounts/apn/", None).await,
        204
    );
    assert_eq!(stored(&app, &alice).await, None);
    assert!(!fetches_messages(&app, &alice).await);
}

async fn a_webpush_subscription_waits_for_its_activation(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let web = subscription("https://8.8.8.8/push/alice");
    assert_eq!(
        call(
            &app,
            &alice,
            "PUT",
            "/v1/accounts/webpush/",
            Some(web.clone())
        )
        .await,
        204
    );
    let registration = |stored: Option<StoredPush>| match stored.map(|s| s.registration) {
        Some(PushRegistration::WebPush(web)) => web,
        other => panic!("not a WebPush registration: {other:?}"),
    };
    let inactive = registration(stored(&app, &alice).await);
    assert!(!inactive.active);
    assert_eq!(
        inactive.subscription.endpoint(),
        "https://8.8.8.8/push/alice"
    );

    // A wrong or malformed token: 204, and nothing activated.
    for token in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let body = Some(json!({"activationToken": token}));
        assert_eq!(
            call(&app, &alice, "PUT", "/v1/accounts/webpush/activate/", body).await,
            204
        );
        assert!(!registration(stored(&app, &alice).await).active);
    }
    let body = Some(json!({"activationToken": inactive.activation.to_string()}));
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/webpush/activate/", body).await,
        204
    );
    let active = registration(stored(&app, &alice).await);
    assert!(active.active);

    // The same subscription again, once active, changes nothing; another one starts over.
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/webpush/", Some(web)).await,
        204
    );
    assert_eq!(registration(stored(&app, &alice).await), active);
    let other = subscription("https://8.8.4.4/push/alice");
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/webpush/", Some(other)).await,
        204
    );
    let again = registration(stored(&app, &alice).await);
    assert!(!again.active);
    assert_ne!(again.activation, active.activation);

    assert_eq!(
        call(&app, &alice, "DELETE", "/v1/accounts/webpush/", None).await,
        204
    );
    assert_eq!(stored(&app, &alice).await, None);
}

async fn malformed_or_private_registrations_are_422_and_change_nothing(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let gcm = Some(json!({"gcmRegistrationId": "kept"}));
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/gcm/", gcm).await,
        204
    );
    let before = stored(&app, &alice).await;

    let mut point = [8u8; 65];
    point[0] = 4;
    let refused: Vec<(&str, Value)> = vec![
        ("/v1/accounts/gcm/", json!({"gcmRegistrationId": ""})),
        ("/v1/accounts/gcm/", json!({})),
        ("/v1/accounts/gcm/", json!({"gcmRegistrationId": "a/../b"})),
        ("/v1/accounts/apn/", json!({"apnRegistrationId": ""})),
        (
            "/v1/accounts/apn/",
            json!({"apnRegistrationId": "x".repeat(5000)}),
        ),
        ("/v1/accounts/webpush/", json!({})),
        ("/v1/accounts/webpush/", subscription("http://8.8.8.8/push")),
        (
            "/v1/accounts/webpush/",
            subscription("https://127.0.0.1/push"),
        ),
        (
            "/v1/accounts/webpush/",
            subscription("https://10.1.2.3/push"),
        ),
        (
            "/v1/accounts/webpush/",
            subscription("https://169.254.169.254/latest"),
        ),
        ("/v1/accounts/webpush/", subscription("https://[::1]/push")),
        (
            "/v1/accounts/webpush/",
            subscription("https://localhost/push"),
        ),
        (
            "/v1/accounts/webpush/",
            json!({"endpoint": "https://8.8.8.8/p", "publicKey": b64(&point[..64]), "auth": b64(&[2; 16])}),
        ),
        (
            "/v1/accounts/webpush/",
            json!({"endpoint": "https://8.8.8.8/p", "publicKey": b64(&point), "auth": b64(&[2; 8])}),
        ),
    ];
    for (path, body) in refused {
        let response = app
            .client
            .http()
            .put(app.client.url(path))
            .header("Authorization", alice.authorization())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 422, "{path} {body}");
        let error: Value = response.json().await.expect("a JSON body");
        assert_eq!(error["code"], 422);
        assert_eq!(stored(&app, &alice).await, before, "{path} {body}");
    }
    // Not JSON at all is a 400; too large a body a 413.
    let response = app
        .client
        .http()
        .put(app.client.url("/v1/accounts/gcm/"))
        .header("Authorization", alice.authorization())
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let huge = Some(json!({"gcmRegistrationId": "y".repeat(20_000)}));
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/gcm/", huge).await,
        413
    );
    assert_eq!(stored(&app, &alice).await, before);
}

async fn private_endpoints_are_accepted_when_the_operator_allows_them(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.webpush_allow_private = true;
    let app = TestApp::start(config).await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let lan = subscription("https://192.168.1.20:8443/up/alice");
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/webpush/", Some(lan)).await,
        204
    );
    assert_eq!(
        stored(&app, &alice).await.unwrap().registration.kind(),
        PushKind::WebPush
    );
}

async fn registrations_are_limited_per_device(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config_with_limit(Limit::PushRegistration, 2, 60_000.0)).await;
    let (alice, _) = register_with(&app, Some([1; 16]), false).await;
    let gcm = |token: &str| Some(json!({"gcmRegistrationId": token}));
    assert_eq!(
        call(&app, &alice, "PUT", "/v1/accounts/gcm/", gcm("a")).await,
        204
    );
    assert_eq!(
        call(&app, &alice, "DELETE", "/v1/accounts/gcm/", None).await,
        204
    );
    let response = app
        .client
        .http()
        .put(app.client.url("/v1/accounts/gcm/"))
        .header("Authorization", alice.authorization())
        .json(&json!({"gcmRegistrationId": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        stored(&app, &alice).await,
        None,
        "nothing stored past the limit"
    );
}

async fn registration_and_linking_take_a_token_as_signal_clients_send_it(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let keys = AccountKeys::generate();
    let mut attributes = default_attributes();
    attributes.fetches_messages = false;
    let mut request = keys.registration_request(attributes.clone());
    request.gcm_token = Some(GcmTokenJson {
        gcm_registration_id: "fcm-at-registration".into(),
    });
    let password = random_password();
    let aci = app
        .client
        .register(&request, &password)
        .await
        .unwrap()
        .identity
        .uuid;
    let primary = DeviceCredentials {
        aci,
        device: DeviceId::PRIMARY,
        password,
    };
    assert!(matches!(
        stored(&app, &primary).await.map(|s| s.registration),
        Some(PushRegistration::Fcm(t)) if t.as_str() == "fcm-at-registration"
    ));
    assert!(!fetches_messages(&app, &primary).await);

    // A linked device brings an APNs token.
    let code = app
        .client
        .link_code(&primary)
        .await
        .unwrap()
        .verification_code;
    let link = json!({
        "verificationCode": code,
        "accountAttributes": attributes,
        "aciSignedPreKey": keys.signed_pre_key_json(2),
        "aciPqLastResortPreKey": keys.kem_pre_key_json(3),
        "apnToken": {"apnRegistrationId": "cd".repeat(32)},
    });
    let response = app
        .client
        .http()
        .put(app.client.url("/v1/devices/link"))
        .header("Authorization", basic_auth("", &random_password()))
        .json(&link)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let linked = DeviceCredentials {
        aci,
        device: DeviceId::new(2).unwrap(),
        password: String::new(),
    };
    assert_eq!(
        stored(&app, &linked).await.unwrap().registration.kind(),
        PushKind::Apns
    );
}

async fn a_new_device_needs_exactly_one_delivery_channel(backend: Backend) {
    let (app, _stores) = app(backend).await;
    let keys = AccountKeys::generate();
    let token = || {
        Some(GcmTokenJson {
            gcm_registration_id: "t".into(),
        })
    };
    let apn = || {
        Some(ApnTokenJson {
            apn_registration_id: "ab".into(),
        })
    };
    let empty = || {
        Some(GcmTokenJson {
            gcm_registration_id: String::new(),
        })
    };
    // (fetchesMessages, apnToken, gcmToken)
    let refused = [
        (false, None, None),
        (true, None, token()),
        (true, apn(), None),
        (false, apn(), token()),
        (false, None, empty()),
    ];
    for (fetches, apn_token, gcm_token) in refused {
        let mut attributes = default_attributes();
        attributes.fetches_messages = fetches;
        let mut request = keys.registration_request(attributes);
        request.apn_token = apn_token.clone();
        request.gcm_token = gcm_token.clone();
        let status = app
            .client
            .http()
            .post(app.client.url("/v1/registration"))
            .header("Authorization", basic_auth("", &random_password()))
            .json(&request)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 422, "{fetches} {apn_token:?} {gcm_token:?}");
    }
}

on_both_backends!(
    registration_and_linking_take_a_token_as_signal_clients_send_it,
    a_new_device_needs_exactly_one_delivery_channel,
    tokens_follow_signals_rules,
    a_webpush_subscription_waits_for_its_activation,
    malformed_or_private_registrations_are_422_and_change_nothing,
    private_endpoints_are_accepted_when_the_operator_allows_them,
    registrations_are_limited_per_device,
);
