//! The push sink on its own (no sealpost): the binary's `--serve-push-sink` writes a
//! service-account JSON whose `token_uri` and key a server can use, answers the token grant
//! and `messages:send` as FCM does, and counts only well-formed messages; and the same over
//! HTTPS under the CA it made.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use sealpost::domain::push::payloads::fcm_new_message;
use sealpost_loadtests::push_sink::{PushSink, SinkCount, read_count};
use serde_json::Value;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Kills the sink however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fetches an access token from the JSON's `token_uri` and posts one message with it, one
/// without a token and one with a stranger's access token; returns the counts afterwards.
async fn exercise(client: &reqwest::Client, base: &str, credentials: &Value) -> SinkCount {
    let token_uri = credentials["token_uri"].as_str().unwrap();
    assert_eq!(token_uri, format!("{base}/token"));
    let refused = client
        .post(token_uri)
        .form(&[("grant_type", "password"), ("assertion", "a.b.c")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        400,
        "only the JWT-bearer grant is answered"
    );
    let grant: Value = client
        .post(token_uri)
        .form(&[
            ("grant_type", GRANT_TYPE),
            ("assertion", "header.claims.sig"),
        ])
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(grant["token_type"], "Bearer");
    assert_eq!(grant["expires_in"], 3600);
    let access_token = grant["access_token"].as_str().unwrap();

    let project = credentials["project_id"].as_str().unwrap();
    let send_url = format!("{base}/v1/projects/{project}/messages:send");
    let send = |body: Value, bearer: &str| {
        client
            .post(&send_url)
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let accepted = send(fcm_new_message("phone-1", true), access_token)
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let name: Value = accepted.json().await.unwrap();
    assert!(
        name["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("projects/{project}/messages/"))
    );
    let no_token = send(
        serde_json::json!({"message": {"data": {"newMessageAlert": ""}}}),
        access_token,
    )
    .await
    .unwrap();
    assert_eq!(no_token.status(), 400);
    let stranger = send(fcm_new_message("phone-1", true), "ya29.not-ours")
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
    read_count(client, base).await.unwrap()
}

#[tokio::test]
async fn the_sink_binary_writes_usable_credentials_issues_a_token_and_counts_only_wellformed_messages()
 {
    let credentials_file =
        std::env::temp_dir().join(format!("sealpost-push-sink-{}.json", uuid::Uuid::new_v4()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealpost-loadtest"))
        .args(["--serve-push-sink", "127.0.0.1:0", "--push-credentials"])
        .arg(&credentials_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = Child(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("push sink listening on ")
        .unwrap_or_else(|| panic!("the sink did not start: {line:?}"))
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&credentials_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the private key is readable by others");
    let credentials: Value =
        serde_json::from_slice(&std::fs::read(&credentials_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&credentials_file);
    assert_eq!(credentials["type"], "service_account");
    assert!(!credentials["client_email"].as_str().unwrap().is_empty());
    let key = rsa::PrivateKey::from_pkcs8_pem(credentials["private_key"].as_str().unwrap())
        .expect("a PKCS#8 RSA key");
    assert_eq!(key.size() * 8, 2048);

    let client = reqwest::Client::new();
    assert_eq!(
        read_count(&client, &base).await.unwrap(),
        SinkCount::default()
    );
    let count = exercise(&client, &base, &credentials).await;
    assert_eq!(
        count,
        SinkCount {
            pushes: 1,
            tokens: 1,
            rejected: 2
        }
    );
}

#[tokio::test]
async fn the_sink_serves_https_under_its_own_ca_when_asked() {
    let sink = PushSink::bind("127.0.0.1:0", true).await.unwrap();
    let base = sink.url.clone();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let ca = reqwest::Certificate::from_pem(sink.ca_pem.as_ref().unwrap().as_bytes()).unwrap();
    let credentials: Value = serde_json::from_slice(&sink.credentials_json).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(sink.serve(async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let count = exercise(&client, &base, &credentials).await;
    assert_eq!((count.pushes, count.tokens, count.rejected), (1, 1, 2));
    assert!(
        reqwest::Client::new()
            .get(format!("{base}/count"))
            .send()
            .await
            .is_err(),
        "a client without the sink's CA is refused"
    );
    let _ = stop.send(());
    serving.await.unwrap();
}
