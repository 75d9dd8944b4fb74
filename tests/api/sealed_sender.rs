//! Sealed sender through the real server: sender certificates verified along their chain as
//! a client does, profiles with the access-key checksum, and the certificate tooling.
//! Multi-recipient sealed sends are in `sealed_sender/multi_recipient.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{Backend, TestApp, TestStores};
use hmac::{Hmac, Mac};
use prost::Message as _;
use reqwest::StatusCode;
use sealpost::api::profiles::{CertificateJson, ProfileJson};
use sealpost::domain::certificates::verify_server_certificate;
use sealpost::domain::encoding::{decode_base64, encode_base64};
use sealpost::domain::ids::Aci;
use sealpost::domain::keys::{EcPublicKey, Signature};
use sealpost::proto::sealed_sender::{SenderCertificate, sender_certificate};
use sha2::Sha256;

struct Certs {
    dir: std::path::PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn app_with_certificates(backend: Backend) -> (TestApp, TestStores, Certs, EcPublicKey) {
    let dir = std::env::temp_dir().join(format!("sealpost-test-certs-{}", uuid::Uuid::new_v4()));
    let trust_root = sealpost::certificates::generate_into(&dir, 9).unwrap();
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    config.certificate_dir = Some(dir.clone());
    config.sender_certificate_ttl = Duration::from_secs(3600);
    (
        TestApp::start(config).await,
        stores,
        Certs { dir },
        trust_root,
    )
}

async fn a_delivery_certificate_verifies_along_its_chain_as_a_client_checks_it(backend: Backend) {
    let (app, _stores, _certs, trust_root) = app_with_certificates(backend).await;
    let (alice, keys) = app.client.register_new().await.unwrap();
    let response = app
        .client
        .http()
        .get(app.client.url("/v1/certificate/delivery"))
        .header("Authorization", alice.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: CertificateJson = response.json().await.unwrap();
    let certificate =
        SenderCertificate::decode(decode_base64("c", &body.certificate).unwrap().as_slice())
            .unwrap();
    let inner_bytes = certificate.certificate.clone().unwrap();
    let inner = sender_certificate::Certificate::decode(inner_bytes.clone()).unwrap();

    // Trust root -> server certificate -> sender certificate.
    let (key_id, server_key) =
        verify_server_certificate(&trust_root, inner.signer_certificate.as_ref().unwrap()).unwrap();
    assert_eq!(key_id, 9);
    let signature = Signature::parse("s", certificate.signature.as_ref().unwrap()).unwrap();
    assert!(server_key.verify(&inner_bytes, &signature));
    let mut tampered = inner_bytes.to_vec();
    tampered[3] ^= 1;
    assert!(!server_key.verify(&tampered, &signature));

    assert_eq!(
        inner.sender_uuid.as_deref(),
        Some(&alice.aci.as_bytes()[..])
    );
    assert_eq!(inner.sender_device, Some(1));
    assert_eq!(
        inner.identity_key.as_deref(),
        Some(keys.identity_public().as_slice())
    );
    assert_eq!(inner.sender_e164, None);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let expires = inner.expires.unwrap();
    assert!(
        expires > now + 3_500_000 && expires <= now + 3_600_000,
        "expires in the configured hour"
    );

    let anonymous = app
        .client
        .http()
        .get(app.client.url("/v1/certificate/delivery"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn profiles_answer_with_the_access_checksum_and_follow_the_access_rules(backend: Backend) {
    let (app, _stores, _certs, _) = app_with_certificates(backend).await;
    let (caller, _) = app.client.register_new().await.unwrap();
    let key = [3u8; 16];
    let (target, keys) = crate::common::register_with(&app, Some(key), false).await;
    let (open, _) = crate::common::register_with(&app, None, true).await;
    let get = |path: String, header: Option<(&'static str, String)>| {
        let mut request = app.client.http().get(app.client.url(&path));
        if let Some((k, v)) = header {
            request = request.header(k, v);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default(),
            )
        }
    };
    let auth = || Some(("Authorization", caller.authorization()));
    let uak = |k: &[u8]| Some(("Unidentified-Access-Key", encode_base64(k)));

    let (status, body) = get(format!("/v1/profile/{}", target.aci), auth()).await;
    assert_eq!(status, StatusCode::OK);
    let profile: ProfileJson = serde_json::from_value(body).unwrap();
    assert_eq!(profile.identity_key, encode_base64(&keys.identity_public()));
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(&[0u8; 32]);
    assert_eq!(
        profile.unidentified_access,
        Some(encode_base64(&mac.finalize().into_bytes()))
    );
    assert!(!profile.unrestricted_unidentified_access);
    // Signal's four profile capabilities and no other (the devices' `storage` is not one);
    // none of this account's devices has them.
    let names: Vec<&str> = profile.capabilities.keys().map(String::as_str).collect();
    let mut expected = sealpost::service::profiles::PROFILE_CAPABILITIES.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert!(profile.capabilities.values().all(|v| !v));

    assert_eq!(
        get(format!("/v1/profile/{}", target.aci), uak(&key))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        get(format!("/v1/profile/{}", target.aci), uak(&[4u8; 16]))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(format!("/v1/profile/{}", target.aci), uak(&[3u8; 15]))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(format!("/v1/profile/{}", target.aci), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // An unknown target looks exactly like a wrong key to an anonymous caller.
    let unknown = Aci::random();
    let wrong_key = get(format!("/v1/profile/{}", target.aci), uak(&[4u8; 16])).await;
    let no_account = get(format!("/v1/profile/{unknown}"), uak(&key)).await;
    assert_eq!(wrong_key, no_account);
    assert_eq!(
        get(format!("/v1/profile/{unknown}"), auth()).await.0,
        StatusCode::NOT_FOUND
    );
    // Unrestricted: any 16 bytes.
    let (status, body) = get(format!("/v1/profile/{}", open.aci), uak(&[0u8; 16])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["unrestrictedUnidentifiedAccess"],
        serde_json::json!(true)
    );
    assert_eq!(body["unidentifiedAccess"], serde_json::Value::Null);
    app.stop().await;
}

on_both_backends!(
    a_delivery_certificate_verifies_along_its_chain_as_a_client_checks_it,
    profiles_answer_with_the_access_checksum_and_follow_the_access_rules,
);

#[test]
fn the_certificates_command_writes_the_four_files_and_never_overwrites() {
    let dir = std::env::temp_dir().join(format!("sealpost-cli-certs-{}", uuid::Uuid::new_v4()));
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(["certificates", "generate", "--out"])
            .arg(&dir)
            .args(["--key-id", "5"])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for name in [
        "trust_root.pub",
        "trust_root.key",
        "server.cert",
        "server.key",
    ] {
        assert!(dir.join(name).exists(), "{name}");
    }
    let root = std::fs::read_to_string(dir.join("trust_root.pub")).unwrap();
    assert_eq!(decode_base64("root", &root).unwrap().len(), 33);
    assert_eq!(sealpost::certificates::load(&dir).unwrap().key_id, 5);
    let second = run();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("refusing to overwrite"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn without_a_certificate_folder_the_trust_root_is_logged() {
    let server = crate::common::process::Server::start(&[]).await;
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(log.contains("trust_root="), "{log}");
    assert!(log.contains("ephemeral trust root"), "{log}");
}

mod multi_recipient;
