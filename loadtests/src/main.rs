//! `sealpost-loadtest`: runs the BENCHMARKS.md scenarios against a sealpost URL and the bare
//! relay (started as a child process of this binary unless `--relay-url` names one), prints
//! the Markdown table of medians; or, with `--serve-relay ADDR`, only serves the relay; or,
//! with `--serve-push-sink ADDR`, only serves the push sink (`push_sink`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use clap::Parser;
use sealpost_loadtests::options::{Options, ensure_loopback};
use sealpost_loadtests::procstat;
use sealpost_loadtests::report::{RELAY, SEALPOST};
use sealpost_loadtests::scenarios::Target;

/// The relay child; killed when this drops, however the run ends.
struct RelayChild(Child);

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port_of(url: &str) -> Option<u16> {
    url.split("://")
        .nth(1)?
        .split('/')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// Starts this binary as the relay on a free loopback port and learns where it listens.
fn spawn_relay() -> anyhow::Result<(RelayChild, Target)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve-relay", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let pid = child.id();
    let child = RelayChild(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let address = line
        .trim()
        .strip_prefix("relay listening on ")
        .ok_or_else(|| anyhow::anyhow!("the relay did not start: {line:?}"))?;
    Ok((
        child,
        Target {
            name: RELAY,
            url: format!("http://{address}"),
            pid: Some(pid),
        },
    ))
}

async fn serve_relay(address: &str) -> anyhow::Result<()> {
    procstat::raise_nofile(1 << 20);
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("relay listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    // Stop on Ctrl-C, or when the parent that started us goes away (our stdin closes).
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = closed_tx.send(());
    });
    sealpost_loadtests::relay::serve(listener, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = closed => {}
        }
    })
    .await;
    Ok(())
}

/// Serves the push sink until SIGINT or SIGTERM (`scripts/bench` starts it in the
/// background, where stdin is /dev/null, and stops it by its pid).
async fn serve_push_sink(options: &Options, address: &str) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let credentials = options
        .push_credentials
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--serve-push-sink needs --push-credentials FILE"))?;
    let sink =
        sealpost_loadtests::push_sink::PushSink::bind(address, options.push_ca.is_some()).await?;
    write_private(credentials, &sink.credentials_json)?;
    if let (Some(path), Some(pem)) = (&options.push_ca, &sink.ca_pem) {
        std::fs::write(path, pem)?;
    }
    println!("push sink listening on {}", sink.url);
    std::io::stdout().flush()?;
    let mut terminate = signal(SignalKind::terminate())?;
    sink.serve(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    })
    .await;
    Ok(())
}

/// Serves the local S3 server until SIGINT or SIGTERM (as the push sink).
async fn serve_s3(options: &Options, address: &str) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let bound = sealpost_loadtests::s3_server::serve(
        address,
        std::path::Path::new(&options.s3_root),
        &options.s3_access_key,
        &options.s3_secret_key,
    )
    .await?;
    println!("s3 listening on http://{bound}");
    std::io::stdout().flush()?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Writes a file only its owner can read (it holds a private key, if a throwaway one).
fn write_private(path: &str, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut options = Options::parse();
    if let Some(address) = options.serve_relay.clone() {
        return serve_relay(&address).await;
    }
    if let Some(address) = options.serve_push_sink.clone() {
        return serve_push_sink(&options, &address).await;
    }
    if let Some(address) = options.serve_s3.clone() {
        return serve_s3(&options, &address).await;
    }
    if let Some(dir) = options.summarize.clone() {
        let (runs, summary) = sealpost_loadtests::summarize_dir(std::path::Path::new(&dir))?;
        return report(&runs, &summary);
    }
    options.apply_quick();
    ensure_loopback(&options.url)?;
    let sealpost = Target {
        name: SEALPOST,
        url: options.url.trim_end_matches('/').to_owned(),
        pid: options
            .server_pid
            .or_else(|| port_of(&options.url).and_then(procstat::pid_listening_on)),
    };
    if sealpost.pid.is_none() {
        eprintln!(
            "note: no server process found for {}: no CPU or memory figures",
            options.url
        );
    }
    let mut _child = None;
    let relay = match (&options.relay_url, options.no_relay) {
        (_, true) => None,
        (Some(url), false) => {
            ensure_loopback(url)?;
            Some(Target {
                name: RELAY,
                url: url.trim_end_matches('/').to_owned(),
                pid: port_of(url).and_then(procstat::pid_listening_on),
            })
        }
        (None, false) => {
            let (child, target) = spawn_relay()?;
            _child = Some(child);
            Some(target)
        }
    };
    let (runs, summary) = sealpost_loadtests::run_all(options, sealpost, relay).await?;
    report(&runs, &summary)
}

/// Prints the table and fails on any failed check.
fn report(
    runs: &[sealpost_loadtests::report::Run],
    summary: &sealpost_loadtests::report::Summary,
) -> anyhow::Result<()> {
    println!("{}", summary.markdown());
    let failed = sealpost_loadtests::failed_checks(runs);
    for failure in &failed {
        eprintln!("FAILED CHECK: {failure}");
    }
    anyhow::ensure!(failed.is_empty(), "{} checks failed", failed.len());
    Ok(())
}
