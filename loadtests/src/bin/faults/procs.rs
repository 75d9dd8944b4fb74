//! The processes a fault run owns: a private Redis, a private Postgres cluster and sealpost
//! servers, each started on ports of its own, killed (`kill -9`, or Postgres's immediate
//! stop, which is a crash followed by recovery) and started again on the same ports and
//! data. Never the machine's shared Postgres or Redis. Every child writes its pid under the
//! work directory, so `scripts/faults` can clean up even if this process is killed.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

async fn wait_listening(port: u16, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !listening(port) {
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn kill9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A private `redis-server` with the persistence deploy/compose.yaml ships (AOF, fsync every
/// second) unless told otherwise; restarts reuse its directory, so it reloads its AOF.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    appendfsync: Option<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    /// `appendfsync`: `Some("everysec")` / `Some("always")` for AOF, `None` for none at all.
    pub async fn start(work: &Path, appendfsync: Option<&str>) -> anyhow::Result<Self> {
        let dir = work.join("redis");
        fs::create_dir_all(&dir)?;
        let mut redis = Self {
            port: free_port()?,
            dir,
            appendfsync: appendfsync.map(str::to_owned),
            child: None,
        };
        redis.spawn().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(["--save", ""]);
        match &self.appendfsync {
            Some(fsync) => command.args(["--appendonly", "yes", "--appendfsync", fsync]),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        fs::write(self.dir.join("child.pid"), child.id().to_string())?;
        self.child = Some(child);
        wait_listening(self.port, "redis", Duration::from_secs(20)).await
    }

    /// `kill -9`: a Redis process crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(child.id());
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Postgres cluster (initdb + pg_ctl) on a port of its own, run as the `postgres`
/// user when this runs as root (Postgres refuses to run as root).
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    as_postgres: bool,
    running: bool,
}

impl PrivatePostgres {
    pub async fn start(work: &Path) -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let dir = work.join("pg");
        fs::create_dir_all(&dir)?;
        let as_postgres = is_root();
        if as_postgres {
            // The work directory is root's: let the postgres user through to its own part.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(work, fs::Permissions::from_mode(0o755))?;
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown of {} failed", dir.display());
        }
        let mut pg = Self {
            port: free_port()?,
            dir,
            as_postgres,
            running: false,
        };
        let data = pg.dir.join("data");
        let out = pg
            .command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-instructions"])
            .output()
            .context("running initdb")?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.spawn().await?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.stdin(Stdio::null());
        command
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let bin = postgres_bin()?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let out = self
            .command(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-o", &options])
            .args(args)
            .output()
            .context("running pg_ctl")?;
        anyhow::ensure!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        self.pg_ctl(&["-w", "-t", "60", "start"])?;
        self.running = true;
        wait_listening(self.port, "postgres", Duration::from_secs(30)).await
    }

    /// An immediate stop: every backend is killed at once, no checkpoint is written, and
    /// the next start replays the WAL, as after a crash.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        self.pg_ctl(&["-w", "-m", "immediate", "stop"])?;
        self.running = false;
        Ok(())
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn().await
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
        }
    }
}

/// The newest installed Postgres's bin directory (Debian layout), or the one on PATH.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match Path::new(&path).parent() {
        Some(dir) if !path.is_empty() => Ok(dir.to_owned()),
        _ => bail!("no Postgres found (initdb not in /usr/lib/postgresql/*/bin nor on PATH)"),
    }
}

/// One sealpost process (the real binary) on fixed ports, so that clients find it again
/// after a restart. Its log goes to a file in the work directory, appended across restarts.
pub struct Sealpost {
    pub name: String,
    pub api_port: u16,
    pub admin_port: u16,
    binary: PathBuf,
    env: Vec<(String, String)>,
    work: PathBuf,
    child: Option<Child>,
}

impl Sealpost {
    pub async fn start(
        name: &str,
        binary: &Path,
        work: &Path,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let mut server = Self {
            name: name.to_owned(),
            api_port: free_port()?,
            admin_port: free_port()?,
            binary: binary.to_owned(),
            env,
            work: work.to_owned(),
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join(format!("{}.log", self.name)))?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .env("SEALPOST_LISTEN", format!("127.0.0.1:{}", self.api_port))
            .env(
                "SEALPOST_ADMIN_LISTEN",
                format!("127.0.0.1:{}", self.admin_port),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        fs::write(
            self.work.join(format!("{}.pid", self.name)),
            child.id().to_string(),
        )?;
        self.child = Some(child);
        wait_listening(self.admin_port, &self.name, Duration::from_secs(90)).await
    }

    /// `kill -9`: no shutdown, no draining, sockets reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(child.id());
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// Resident memory in bytes, from /proc (the load generator's own reading).
    pub fn rss_bytes(&self) -> Option<u64> {
        sealpost_loadtests::procstat::sample(self.pid()?).map(|s| s.rss_bytes)
    }
}

impl Drop for Sealpost {
    fn drop(&mut self) {
        self.kill();
    }
}
