//! The real `sealpost` binary as a child process, for tests that need separate processes.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sealpost::client::Client;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    child: Child,
    pub client: Client,
    pub admin: String,
}

impl Server {
    pub fn command(env: &[(&str, String)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sealpost"));
        command
            .arg("serve")
            .env_remove("SEALPOST_DATABASE_URL")
            .env_remove("SEALPOST_REDIS_URL")
            .env("SEALPOST_WORKERS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        command
    }

    pub async fn start(env: &[(&str, String)]) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let mut env = env.to_vec();
        env.push(("SEALPOST_LISTEN", format!("127.0.0.1:{port}")));
        env.push(("SEALPOST_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}")));
        let child = Self::command(&env).spawn().expect("the binary starts");
        let server = Self {
            child,
            client: Client::new(&format!("http://127.0.0.1:{port}")),
            admin: format!("http://127.0.0.1:{admin_port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/health/live", server.admin)).await
                && r.status().is_success()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn ready_status(&self) -> (StatusCode, serde_json::Value) {
        let r = reqwest::get(format!("{}/health/ready", self.admin))
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    /// Sends SIGTERM and returns the exit code and everything written to stderr.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        (exit.code(), log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
