//! The real `sealpost` binary as a child process, for tests that need separate processes.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sealpost::client::Client;

/// A port nothing listens on right now (for "nothing answers there" tests).
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
    /// The public listener's base URL.
    pub api: String,
    pub admin: String,
    log: Arc<Mutex<String>>,
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

    /// Starts the binary on ports it picks itself (port 0) and learns them from its
    /// "listening" log line, so no other test can take them in between.
    pub async fn start(env: &[(&str, String)]) -> Self {
        Self::start_with(env, None).await
    }

    /// Like [`Server::start`] with the open-file limit (soft and hard) set to `limit`.
    pub async fn start_with_open_files(env: &[(&str, String)], limit: u64) -> Self {
        Self::start_with(env, Some(limit)).await
    }

    async fn start_with(env: &[(&str, String)], open_files: Option<u64>) -> Self {
        let mut env = env.to_vec();
        env.push(("SEALPOST_LISTEN", "127.0.0.1:0".into()));
        env.push(("SEALPOST_ADMIN_LISTEN", "127.0.0.1:0".into()));
        let mut command = Self::command(&env);
        if let Some(limit) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec the closure only calls setrlimit, which is
            // async-signal-safe, and allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("the binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (listening_tx, listening) = std::sync::mpsc::channel::<String>();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("sealpost is listening") {
                    let _ = listening_tx.send(line.clone());
                }
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let line =
            tokio::task::spawn_blocking(move || listening.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap()
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("the server did not come up:\n{}", log.lock().unwrap())
                });
        // Text lines say `api=ADDR admin=ADDR`; JSON lines carry them as fields.
        let json: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        let address = |key: &str| {
            if let Some(json) = &json {
                let field = &json["fields"][key.trim_end_matches('=')];
                return field.as_str().expect("the address field").to_owned();
            }
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .to_owned()
        };
        let api = format!("http://{}", address("api="));
        let server = Self {
            client: Client::new(&api),
            api,
            admin: format!("http://{}", address("admin=")),
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/health/live", server.admin)).await
                && r.status().is_success()
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not answer /health/live"
            );
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
        // The reader thread sees end-of-file once the process is gone.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        (exit.code(), log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
