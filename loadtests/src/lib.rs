//! sealpost's load generator: every scenario of BENCHMARKS.md against a running sealpost
//! and, back to back in the same run, the same client load against the bare relay this
//! crate contains (`relay`). Loopback only; every loop bounded in time and count; progress
//! on stderr; a JSON file per run plus a summary (medians over runs) in JSON and Markdown.
//!
//! Modules: `options` (what to run), `scenarios` (one module each), `conn` (the one client
//! for both targets), `relay`, `sequence` (numbered messages and their checks), `accounts`,
//! `procstat` and `progress` (server CPU and memory), `report` (medians, tables),
//! `push_sink` (a local FCM stand-in that counts the pushes a server sends).

pub mod accounts;
pub mod conn;
pub mod options;
pub mod procstat;
pub mod progress;
pub mod push_sink;
pub mod relay;
pub mod report;
pub mod s3_server;
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
    let summary = write_summary(
        &out_dir,
        &runs,
        serde_json::to_value(&machine)?,
        serde_json::to_value(&env.options)?,
    )?;
    Ok((runs, summary))
}

fn write_summary(
    out_dir: &Path,
    runs: &[Run],
    machine: serde_json::Value,
    options: serde_json::Value,
) -> anyhow::Result<Summary> {
    let summary = report::summarize(runs);
    let summary_json =
        serde_json::json!({ "machine": machine, "options": options, "summary": summary });
    std::fs::write(
        out_dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary_json)?,
    )?;
    std::fs::write(out_dir.join("summary.md"), summary.markdown())?;
    Ok(summary)
}

/// The runs recorded in `dir` (`run-*.json`, in name order, renumbered 1..), summarized as
/// one set: `summary.json` / `summary.md` are written there. How `scripts/bench` gives each
/// run a fresh server: memory figures (`connections`) are only meaningful in a process that
/// has not held the same load before (its freed memory would be reused, not measured).
pub fn summarize_dir(dir: &Path) -> anyhow::Result<(Vec<Run>, Summary)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("run-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no run-*.json in {}", dir.display());
    let mut runs = Vec::new();
    let mut first = None;
    for (n, file) in files.iter().enumerate() {
        let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(file)?)?;
        let mut run: Run = serde_json::from_value(record["run"].take())
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        run.run = n + 1;
        runs.push(run);
        first.get_or_insert(record);
    }
    let first = first.unwrap_or_default();
    let summary = write_summary(
        dir,
        &runs,
        first["machine"].clone(),
        first["options"].clone(),
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Scenario;
    use crate::report::{Outcome, SEALPOST};

    /// Runs written by separate invocations (one per fresh server) read back as one set.
    #[test]
    fn summarize_dir_reads_back_separate_invocations() {
        let dir = std::env::temp_dir().join(format!("sealpost-summarize-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (time, rate) in [(100, 10.0), (200, 30.0)] {
            let mut outcome = Outcome::new(Scenario::Drain, SEALPOST);
            outcome.set("msgs_per_s", rate).set("missing", 0.0);
            let run = Run {
                run: 1,
                outcomes: vec![outcome],
            };
            let record = serde_json::json!({"machine": {"cores": 2}, "options": {}, "run": run});
            std::fs::write(
                dir.join(format!("run-{time}-1.json")),
                serde_json::to_vec(&record).unwrap(),
            )
            .unwrap();
        }
        std::fs::write(dir.join("server-1.log"), "not a run").unwrap();
        let (runs, summary) = summarize_dir(&dir).unwrap();
        assert_eq!(runs.iter().map(|r| r.run).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(summary.runs, 2);
        let drain = summary
            .outcomes
            .iter()
            .find(|o| o.scenario == Scenario::Drain);
        assert_eq!(drain.unwrap().get("msgs_per_s"), 20.0);
        assert!(dir.join("summary.md").exists() && dir.join("summary.json").exists());
        assert!(failed_checks(&runs).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
