//! Results: one `Outcome` per scenario and target, the JSON of each run, the median over
//! runs (ratios to the relay taken per run, then their median), and the Markdown table
//! with BENCHMARKS.md's goals next to each figure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::options::Scenario;
use crate::procstat::Usage;

pub const SEALPOST: &str = "sealpost";
pub const RELAY: &str = "relay";

/// What one scenario measured against one target in one run.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub scenario: Scenario,
    pub target: &'static str,
    /// Named figures (rates, latencies in ms, counts); see `headline` for the main one.
    pub figures: BTreeMap<String, f64>,
    /// The server process (sealpost or the relay) over the measured phase.
    pub server: Usage,
}

impl Outcome {
    pub fn new(scenario: Scenario, target: &'static str) -> Self {
        Self {
            scenario,
            target,
            figures: BTreeMap::new(),
            server: Usage::default(),
        }
    }

    pub fn set(&mut self, name: &str, value: f64) -> &mut Self {
        self.figures.insert(name.to_owned(), value);
        self
    }

    pub fn get(&self, name: &str) -> f64 {
        self.figures.get(name).copied().unwrap_or(f64::NAN)
    }
}

/// An `Outcome` as a run's JSON holds it; the target must be one of the two this harness
/// writes.
#[derive(Deserialize)]
struct OutcomeRecord {
    scenario: Scenario,
    target: String,
    figures: BTreeMap<String, f64>,
    server: Usage,
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let record = OutcomeRecord::deserialize(deserializer)?;
        let target = [SEALPOST, RELAY]
            .into_iter()
            .find(|known| *known == record.target)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("unknown target {:?}", record.target))
            })?;
        Ok(Self {
            scenario: record.scenario,
            target,
            figures: record.figures,
            server: record.server,
        })
    }
}

/// The figure a scenario is judged by, against the relay where it has one.
pub fn headline(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Pairs => "msgs_per_s",
        Scenario::LatencyAtRate => "p99_ms",
        Scenario::Drain => "msgs_per_s",
        Scenario::Connections => "rss_kib_per_socket",
        Scenario::Prekeys => "fetches_per_s",
        Scenario::Fanout => "deliveries_per_s",
        Scenario::Auth => "authenticated_per_s",
        Scenario::Push => "pushes_per_s",
        Scenario::Attachments => "upload_vs_plain_copy_20mib",
        Scenario::Lookups => "lookups_per_s",
    }
}

/// Everything one run of the set produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub run: usize,
    pub outcomes: Vec<Outcome>,
}

impl Run {
    pub fn find(&self, scenario: Scenario, target: &str) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|o| o.scenario == scenario && o.target == target)
    }

    /// sealpost's headline over the relay's, in this run.
    pub fn ratio(&self, scenario: Scenario) -> Option<f64> {
        let key = headline(scenario);
        let s = self.find(scenario, SEALPOST)?.get(key);
        let r = self.find(scenario, RELAY)?.get(key);
        (r > 0.0 && s.is_finite()).then(|| s / r)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The one figure summarized by its largest value, not the median: memory the server
/// freed after an earlier run is reused by the next run's sockets, so later measurements in
/// the same process understate the cost of a socket; the largest is the coldest.
const COLDEST_WINS: &str = "rss_kib_per_socket";

/// The median of every figure (and of the server usage) over the runs.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub outcomes: Vec<Outcome>,
    /// scenario name -> median over runs of (sealpost / relay) from the same run
    pub ratios: BTreeMap<String, f64>,
}

pub fn summarize(runs: &[Run]) -> Summary {
    let mut outcomes = Vec::new();
    let mut ratios = BTreeMap::new();
    for scenario in Scenario::ALL {
        for target in [SEALPOST, RELAY] {
            let all: Vec<&Outcome> = runs
                .iter()
                .filter_map(|r| r.find(scenario, target))
                .collect();
            let Some(first) = all.first() else { continue };
            let mut merged = Outcome::new(scenario, target);
            for key in first.figures.keys() {
                let values: Vec<f64> = all.iter().map(|o| o.get(key)).collect();
                let value = if key == COLDEST_WINS {
                    values
                        .into_iter()
                        .filter(|v| v.is_finite())
                        .fold(f64::NAN, f64::max)
                } else {
                    median(values)
                };
                merged.set(key, value);
            }
            let u = |f: fn(&Usage) -> f64| median(all.iter().map(|o| f(&o.server)).collect());
            merged.server = Usage {
                cpu_seconds: u(|s| s.cpu_seconds),
                cpu_cores: u(|s| s.cpu_cores),
                rss_before_mb: u(|s| s.rss_before_mb),
                rss_after_mb: u(|s| s.rss_after_mb),
                rss_peak_mb: u(|s| s.rss_peak_mb),
            };
            outcomes.push(merged);
        }
        let per_run: Vec<f64> = runs.iter().filter_map(|r| r.ratio(scenario)).collect();
        if !per_run.is_empty() {
            ratios.insert(scenario.name().to_owned(), median(per_run));
        }
    }
    Summary {
        runs: runs.len(),
        outcomes,
        ratios,
    }
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.abs() >= 100.0 || (v.fract() == 0.0 && v.abs() < 1e15) {
        let s = format!("{:.0}", v.round());
        // Thousands separators make 5-6 digit rates readable in a table.
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Summary {
    fn find(&self, scenario: Scenario, target: &str) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|o| o.scenario == scenario && o.target == target)
    }

    /// One Markdown row per scenario (medians), with the relay and the goal beside it.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| scenario | sealpost | bare relay | ratio | latency p50 / p99 / p99.9 ms | checks | server CPU s (cores) | server RSS peak MB | goal (BENCHMARKS.md) |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for scenario in Scenario::ALL {
            let Some(s) = self.find(scenario, SEALPOST) else {
                continue;
            };
            let relay = self.find(scenario, RELAY);
            let ratio = self.ratios.get(scenario.name()).copied();
            let (main, relay_main, latency, checks, goal) = describe(scenario, s, relay, ratio);
            out.push_str(&format!(
                "| {} | {main} | {relay_main} | {} | {latency} | {checks} | {} ({}) | {} | {goal} |\n",
                scenario.name(),
                ratio.map_or("-".into(), |r| format!("{r:.2}")),
                num(s.server.cpu_seconds),
                num(s.server.cpu_cores),
                num(s.server.rss_peak_mb),
            ));
        }
        out
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

/// (sealpost cell, relay cell, latency cell, checks cell, goal cell) of one scenario.
fn describe(
    scenario: Scenario,
    s: &Outcome,
    relay: Option<&Outcome>,
    ratio: Option<f64>,
) -> (String, String, String, String, String) {
    let latency = |o: &Outcome| {
        if o.figures.contains_key("p50_ms") {
            format!(
                "{} / {} / {}",
                num(o.get("p50_ms")),
                num(o.get("p99_ms")),
                num(o.get("p999_ms"))
            )
        } else {
            "-".into()
        }
    };
    let delivery_checks = |o: &Outcome| {
        format!(
            "missing {}, dup {}, out of order {}, errors {}",
            num(o.get("missing")),
            num(o.get("duplicated")),
            num(o.get("out_of_order")),
            num(o.get("errors"))
        )
    };
    let relay_cell = |f: &dyn Fn(&Outcome) -> String| relay.map_or("-".into(), f);
    match scenario {
        Scenario::Pairs => (
            format!(
                "{} msgs/s{}",
                num(s.get("msgs_per_s")),
                if s.get("push_tokens") == 1.0 {
                    " (receivers push-registered)"
                } else {
                    ""
                }
            ),
            relay_cell(&|r| format!("{} msgs/s", num(r.get("msgs_per_s")))),
            latency(s),
            delivery_checks(s),
            format!(">= 0.5 of relay: {}", met(ratio.unwrap_or(0.0) >= 0.5)),
        ),
        Scenario::LatencyAtRate => (
            format!(
                "p99 {} ms at {} msgs/s",
                num(s.get("p99_ms")),
                num(s.get("offered_per_s"))
            ),
            relay_cell(&|r| format!("p99 {} ms ({})", num(r.get("p99_ms")), latency(r))),
            latency(s),
            delivery_checks(s),
            format!(
                "p99 <= 5, p50 <= 1 ms: {}",
                met(s.get("p99_ms") <= 5.0 && s.get("p50_ms") <= 1.0)
            ),
        ),
        Scenario::Drain => (
            format!(
                "{} msgs/s; {} s to queue/empty for {}",
                num(s.get("msgs_per_s")),
                num(s.get("seconds_to_queue_empty")),
                num(s.get("queued"))
            ),
            "- (no storage)".into(),
            "-".into(),
            format!(
                "{}; filled at {} msgs/s",
                delivery_checks(s),
                num(s.get("fill_per_s"))
            ),
            format!(">= 50,000 msgs/s: {}", met(s.get("msgs_per_s") >= 50_000.0)),
        ),
        Scenario::Connections => (
            format!(
                "{} KiB/socket, {} held, all up in {} s",
                num(s.get("rss_kib_per_socket")),
                num(s.get("held")),
                num(s.get("connect_seconds"))
            ),
            relay_cell(&|r| {
                format!(
                    "{} KiB/socket, {} held, {} s",
                    num(r.get("rss_kib_per_socket")),
                    num(r.get("held")),
                    num(r.get("connect_seconds"))
                )
            }),
            "-".into(),
            format!("errors {}", num(s.get("errors"))),
            format!(
                "100,000 held, <= 10 KiB/socket: {}",
                met(s.get("held") >= 100_000.0 && s.get("rss_kib_per_socket") <= 10.0)
            ),
        ),
        Scenario::Prekeys => (
            format!("{} fetches/s", num(s.get("fetches_per_s"))),
            "-".into(),
            latency(s),
            format!(
                "repeated key ids {}, errors {}",
                num(s.get("repeated")),
                num(s.get("errors"))
            ),
            format!(
                ">= 5,000/s, no repeats: {}",
                met(s.get("fetches_per_s") >= 5000.0 && s.get("repeated") == 0.0)
            ),
        ),
        Scenario::Fanout => (
            format!(
                "{} deliveries/s; Redis bytes per send: first (creates the queues) payload + {} per device, further payload + {} per device",
                num(s.get("deliveries_per_s")),
                num(s.get("bytes_per_device_over_payload")),
                num(s.get("bytes_per_device_over_payload_further"))
            ),
            "-".into(),
            "-".into(),
            format!(
                "missing {}, errors {}",
                num(s.get("missing")),
                num(s.get("errors"))
            ),
            format!(
                "<= payload + 200 B/device: {}",
                met(s.get("bytes_per_device_over_payload_further") <= 200.0)
            ),
        ),
        Scenario::Auth => {
            let ratio = s.get("authenticated_per_s") / s.get("unauthenticated_per_s");
            (
                format!(
                    "{} authenticated/s, {} unauthenticated/s ({} with argon2)",
                    num(s.get("authenticated_per_s")),
                    num(s.get("unauthenticated_per_s")),
                    num(s.get("argon2_per_s"))
                ),
                "-".into(),
                latency(s),
                format!("errors {}", num(s.get("errors"))),
                format!("auth/unauth {ratio:.2} >= 0.8: {}", met(ratio >= 0.8)),
            )
        }
        Scenario::Push => (
            format!(
                "{} pushes/s to the sink at {} sends/s ({} offline receivers, {} µs server CPU per push)",
                num(s.get("pushes_per_s")),
                num(s.get("sends_per_s")),
                num(s.get("receivers")),
                num(s.get("server_cpu_us_per_push"))
            ),
            "- (no pushes)".into(),
            "-".into(),
            format!(
                "unpushed {} of {} sent, sink rejected {}, errors {}",
                num(s.get("unpushed")),
                num(s.get("sent")),
                num(s.get("sink_rejected")),
                num(s.get("errors"))
            ),
            "recorded in RESULTS.md (no goal)".into(),
        ),
        Scenario::Attachments => (
            format!(
                "upload 1 MiB {} / 20 MiB {} MiB/s, {} / {} of a plain copy",
                num(s.get("upload_mib_s_1mib")),
                num(s.get("upload_mib_s_20mib")),
                num(s.get("upload_vs_plain_copy_1mib")),
                num(s.get("upload_vs_plain_copy_20mib"))
            ),
            "- (no store)".into(),
            format!(
                "download 1 MiB {} / 20 MiB {} MiB/s, {} / {} of a plain read",
                num(s.get("download_mib_s_1mib")),
                num(s.get("download_mib_s_20mib")),
                num(s.get("download_vs_plain_get_1mib")),
                num(s.get("download_vs_plain_get_20mib"))
            ),
            format!(
                "RSS +{} MiB during a 100 MiB upload; sweeper {} objects/s",
                num(s.get("rss_growth_mib_during_100mib_upload")),
                num(s.get("sweeper_deleted_per_s"))
            ),
            "recorded in RESULTS.md (no goal)".into(),
        ),
        Scenario::Lookups => (
            format!(
                "{} anonymous username lookups/s over {} usernames",
                num(s.get("lookups_per_s")),
                num(s.get("usernames"))
            ),
            "- (no usernames)".into(),
            latency(s),
            format!(
                "wrong answers {}, errors {}",
                num(s.get("missing")),
                num(s.get("errors"))
            ),
            "recorded in RESULTS.md (no goal)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_three_ignores_the_outliers() {
        assert_eq!(median(vec![3.0, 100.0, 1.0]), 3.0);
        assert_eq!(median(vec![1.0, 2.0]), 1.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn ratios_are_taken_within_a_run_then_their_median() {
        let run = |n, s: f64, r: f64| {
            let mut a = Outcome::new(Scenario::Pairs, SEALPOST);
            a.set("msgs_per_s", s);
            let mut b = Outcome::new(Scenario::Pairs, RELAY);
            b.set("msgs_per_s", r);
            Run {
                run: n,
                outcomes: vec![a, b],
            }
        };
        let summary = summarize(&[
            run(1, 10.0, 100.0),
            run(2, 30.0, 100.0),
            run(3, 50.0, 250.0),
        ]);
        assert_eq!(summary.ratios["pairs"], 0.2);
        assert!(
            summary
                .markdown()
                .contains("| pairs | 30 msgs/s | 100 msgs/s | 0.20 |")
        );
    }

    #[test]
    fn memory_per_socket_is_summarized_by_the_coldest_run() {
        let runs: Vec<Run> = [9.5, 5.0, 2.0]
            .into_iter()
            .enumerate()
            .map(|(n, kib)| {
                let mut o = Outcome::new(Scenario::Connections, SEALPOST);
                o.set("rss_kib_per_socket", kib).set("held", 100.0);
                Run {
                    run: n + 1,
                    outcomes: vec![o],
                }
            })
            .collect();
        let summary = summarize(&runs);
        assert_eq!(summary.outcomes[0].get("rss_kib_per_socket"), 9.5);
        assert_eq!(summary.outcomes[0].get("held"), 100.0);
    }

    #[test]
    fn big_numbers_get_thousands_separators() {
        assert_eq!(num(123_456.4), "123,456");
        assert_eq!(num(1_000.0), "1,000");
        assert_eq!(num(1.23456), "1.23");
        assert_eq!(num(0.0), "0", "counts stay integers");
        assert_eq!(num(40.0), "40");
    }
}
