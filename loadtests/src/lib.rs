//! sealpost's load generator: every scenario of BENCHMARKS.md against a running sealpost
//! and, back to back in the same run, the same client load against the bare relay this
//! crate contains (`relay`). Loopback only; every loop bounded in time and count; progress
//! on stderr; a JSON file per run plus a summary (medians over runs) in JSON and Markdown.
//!
//! Modules: `options` (what to run), `scenarios` (one module each), `conn` (the one client
//! for both targets), `relay`, `sequence` (numbered messages and their checks), `accounts`,
//! `procstat` and `progress` (server CPU and memory), `report` (medians, tables).

pub mod accounts;
pub mod conn;
pub mod options;
pub mod procstat;
pub mod progress;
pub mod relay;
pub mod report;
pub mod scenarios;
pub mod sequence;

use std::path::Path;

use serde::Serialize;

use crate::options::Options;
use crate::report::{Run, Summary};
use crate::scenarios::{Env, Target};

/// Where and on what the numbers were taken.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub unix_time: u64,
    pub cores: usize,
    pub memory_gib: f64,
    pub revision: String,
}

impl Machine {
    pub fn describe() -> Self {
        let memory_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0.0);
        let revision = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        Self {
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            revision,
        }
    }
}

#[derive(Serialize)]
struct RunFile<'a> {
    machine: &'a Machine,
    options: &'a Options,
    sealpost: &'a str,
    relay: Option<&'a str>,
    run: &'a Run,
}

/// Runs the chosen scenarios `options.runs` times, writes `run-<time>-<n>.json` for each
/// and `summary.json` / `summary.md` into `options.out_dir`, and returns runs and summary.
pub async fn run_all(
    options: Options,
    sealpost: Target,
    relay: Option<Target>,
) -> anyhow::Result<(Vec<Run>, Summary)> {
    let machine = Machine::describe();
    let out_dir = Path::new(&options.out_dir).to_owned();
    std::fs::create_dir_all(&out_dir)?;
    let env = Env::new(options, sealpost, relay);
    let mut runs = Vec::new();
    for n in 1..=env.options.runs.max(1) {
        let run = scenarios::run_set(&env, n).await?;
        let file = out_dir.join(format!("run-{}-{n}.json", machine.unix_time));
        let record = RunFile {
            machine: &machine,
            options: &env.options,
            sealpost: &env.sealpost.url,
            relay: env.relay.as_ref().map(|r| r.url.as_str()),
            run: &run,
        };
        std::fs::write(&file, serde_json::to_vec_pretty(&record)?)?;
        eprintln!("wrote {}", file.display());
        runs.push(run);
    }
    let summary = report::summarize(&runs);
    let summary_json =
        serde_json::json!({ "machine": machine, "options": env.options, "summary": summary });
    std::fs::write(
        out_dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary_json)?,
    )?;
    std::fs::write(out_dir.join("summary.md"), summary.markdown())?;
    Ok((runs, summary))
}

/// Every check that failed in any run: lost, repeated or duplicated messages, repeated
/// one-time keys.
pub fn failed_checks(runs: &[Run]) -> Vec<String> {
    let mut failed = Vec::new();
    for run in runs {
        for outcome in &run.outcomes {
            for check in ["missing", "duplicated", "repeated"] {
                let value = outcome.get(check);
                if value.is_finite() && value > 0.0 {
                    failed.push(format!(
                        "run {}: {} against {}: {check} = {value}",
                        run.run,
                        outcome.scenario.name(),
                        outcome.target
                    ));
                }
            }
        }
    }
    failed
}
