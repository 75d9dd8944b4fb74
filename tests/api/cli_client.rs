//! `sealpost client ...` (the command-line client) against a real server: register two
//! accounts, upload keys, listen on one socket while the other sends, link a device.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sealpost::domain::encoding::encode_base64;
use serde_json::Value;
use tokio::process::Command;
use uuid::Uuid;

use crate::common::{Backend, TestApp, TestStores};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sealpost"));
    command
        .arg("client")
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a client command to its end: its stdout, or a panic with its stderr.
async fn run(args: &[&str]) -> String {
    let output = client(args).output().await.unwrap();
    assert!(
        output.status.success(),
        "sealpost client {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

async fn the_command_line_client_registers_sends_listens_and_links(backend: Backend) {
    let stores = TestStores::new(backend).await;
    let app = TestApp::start(stores.config()).await;
    let dir = Dir(std::env::temp_dir().join(format!("sealpost-cli-{}", Uuid::new_v4().simple())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (alice, bob, alice2) = (
        dir.0.join("alice.json"),
        dir.0.join("bob.json"),
        dir.0.join("alice2.json"),
    );

    let alice_aci = run(&["register", "--server", &app.address, "--out", path(&alice)]).await;
    let alice_aci = alice_aci.trim().to_owned();
    let bob_aci = run(&["register", "--server", &app.address, "--out", path(&bob)]).await;
    let bob_aci = bob_aci.trim().to_owned();
    assert!(alice_aci.parse::<Uuid>().is_ok() && bob_aci.parse::<Uuid>().is_ok());
    assert_ne!(alice_aci, bob_aci);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&alice).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the credentials file is private");
    }
    // An existing file is never overwritten.
    let again = client(&["register", "--server", &app.address, "--out", path(&alice)])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());

    let keys = run(&["keys", "--credentials", path(&bob), "--count", "5"]).await;
    assert!(keys.contains("5 EC, 5 Kyber (were 0 and 0)"), "{keys}");

    // Bob listens while Alice sends.
    let listener = client(&[
        "listen",
        "--credentials",
        path(&bob),
        "--count",
        "1",
        "--idle",
        "20",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = run(&[
        "send",
        "--credentials",
        path(&alice),
        "--to",
        &bob_aci,
        "--text",
        "hello bob",
    ])
    .await;
    assert!(sent.contains("sent to 1 device(s)"), "{sent}");
    let output = tokio::time::timeout(Duration::from_secs(30), listener.wait_with_output())
        .await
        .expect("the listener ends after one message")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(line["content"], encode_base64(b"hello bob"));
    assert_eq!(line["sourceServiceId"], alice_aci.as_str());
    assert_eq!(line["destinationServiceId"], bob_aci.as_str());
    assert_eq!(line["type"], 1);

    // Alice links a second device; a message from Bob then goes to both, learned from 409.
    let linked = run(&[
        "link",
        "--credentials",
        path(&alice),
        "--out",
        path(&alice2),
    ])
    .await;
    assert_eq!(linked.trim(), "2");
    let sent = run(&[
        "send",
        "--credentials",
        path(&bob),
        "--to",
        &alice_aci,
        "--base64",
        &encode_base64(&[0, 1, 2]),
    ])
    .await;
    assert!(sent.contains("sent to 2 device(s)"), "{sent}");
    for device in [&alice, &alice2] {
        let printed = run(&["listen", "--credentials", path(device), "--idle", "2"]).await;
        // Alice's primary may also get the server's delivery receipt (type 5) for her
        // message to Bob, depending on when Bob's acknowledgement landed.
        let messages: Vec<Value> = printed
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON lines"))
            .filter(|l: &Value| l["type"] != 5)
            .collect();
        assert_eq!(messages.len(), 1, "{device:?}: {printed}");
        assert_eq!(messages[0]["content"], "AAEC");
        assert_eq!(messages[0]["sourceServiceId"], bob_aci.as_str());
    }
    // Acknowledged: nothing is delivered twice.
    assert_eq!(
        run(&["listen", "--credentials", path(&alice2), "--idle", "1"]).await,
        ""
    );

    // A wrong recipient gets a clear error, not a panic.
    let bad = client(&[
        "send",
        "--credentials",
        path(&alice),
        "--to",
        "nobody",
        "--text",
        "x",
    ])
    .output()
    .await
    .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--to"));
    app.stop().await;
}

on_both_backends!(the_command_line_client_registers_sends_listens_and_links);
