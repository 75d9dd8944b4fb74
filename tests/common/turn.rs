//! A real TURN relay for the calling tests: Debian's coturn (`turnserver`) started per test
//! on ports of its own, with `use-auth-secret` and a random shared secret, as an operator
//! runs it beside sealpost; and coturn's own client (`turnutils_uclient`) to try an
//! allocation with the credentials sealpost hands out. `scripts/services` installs both.

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use uuid::Uuid;

pub struct Coturn {
    pub port: u16,
    pub secret: String,
    dir: PathBuf,
    child: Child,
}

/// A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Coturn {
    pub async fn start() -> Self {
        let secret = Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("sealpost-turn-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
            .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args([
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
            ])
            .args(["--realm", "sealpost.test", "--allow-loopback-peers"])
            .arg(format!("--db={}", dir.join("turndb").display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("turnserver.pid").display()
            ))
            .arg(format!("--log-file={}", dir.join("turn.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("turnserver runs (coturn: scripts/services installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "coturn did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            port,
            secret,
            dir,
            child,
        }
    }

    /// `turn:` URL of this relay.
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}", self.port)
    }

    /// Whether an allocation with these credentials succeeds: coturn's client allocates a
    /// relay address, and sends and receives through it (exit code 0), or fails to.
    pub async fn allocates(&self, username: &str, password: &str) -> bool {
        let run = Command::new("turnutils_uclient")
            .args(["-u", username, "-w", password])
            .args(["-p", &self.port.to_string()])
            .args(["-n", "1", "-m", "1", "-l", "100", "-e", "127.0.0.1", "-y"])
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        let status = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("turnutils_uclient ends")
            .expect("turnutils_uclient runs");
        status.success()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
