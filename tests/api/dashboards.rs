//! The shipped Grafana dashboards and Prometheus alert rules: every metric they query
//! exists in a real scrape, and the rules and the Prometheus configuration pass `promtool`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::operations::{families, repo, scrape_after_traffic};

/// Every `sealpost_*` name in a PromQL expression, with the histogram and summary series
/// suffixes mapped back to their family (`_bucket`, `_sum`, `_count` of a histogram).
fn metric_names(expr: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("sealpost_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| histograms.contains(*base))
            })
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL expression in the shipped dashboards and alert rules, with where it is.
fn shipped_expressions() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let dashboards = repo("deploy/grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dashboards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
    {
        let dashboard: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let panels = dashboard["panels"].as_array().expect("panels");
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("a target has an expr");
                exprs.push((
                    format!("{}: {}", file.display(), panel["title"]),
                    expr.to_owned(),
                ));
            }
        }
    }
    let rules: Value =
        serde_norway::from_slice(&std::fs::read(repo("deploy/prometheus/alerts.yml")).unwrap())
            .unwrap();
    for group in rules["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("a rule has an expr");
            exprs.push((format!("alert {}", rule["alert"]), expr.to_owned()));
        }
    }
    exprs
}

#[tokio::test]
async fn every_metric_the_dashboards_and_alert_rules_use_exists_in_a_real_scrape() {
    let scrape = scrape_after_traffic().await;
    let exported = families(&scrape);
    let histograms: BTreeSet<String> = exported
        .iter()
        .filter(|(_, kind)| *kind == "histogram")
        .map(|(name, _)| name.clone())
        .collect();
    let exprs = shipped_expressions();
    assert!(exprs.len() >= 20, "dashboards and rules have expressions");
    let mut used = BTreeSet::new();
    for (place, expr) in &exprs {
        let names = metric_names(expr, &histograms);
        assert!(
            !names.is_empty(),
            "{place} queries no sealpost metric: {expr}"
        );
        for name in names {
            assert!(
                exported.contains_key(&name),
                "{place} uses {name}, which is not exported"
            );
            used.insert(name);
        }
    }
    // The dashboards cover the subsystems the issue names.
    for needed in [
        "sealpost_http_requests_total",
        "sealpost_messages_delivery_latency_seconds",
        "sealpost_websocket_open_connections",
        "sealpost_queue_backlog_messages",
        "sealpost_ratelimit_hits_total",
        "sealpost_store_up",
        "sealpost_postgres_pool_connections",
    ] {
        assert!(used.contains(needed), "no panel or rule uses {needed}");
    }
}

#[test]
fn histogram_suffixes_map_back_to_their_family_and_nothing_else_does() {
    let histograms = BTreeSet::from(["sealpost_a_seconds".to_owned()]);
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(sealpost_a_seconds_bucket[5m]))) \
         / sealpost_b_total + sealpost_c_count",
        &histograms,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "sealpost_a_seconds".to_owned(),
            "sealpost_b_total".to_owned(),
            "sealpost_c_count".to_owned()
        ])
    );
}

fn promtool() -> std::process::Command {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "promtool is missing: run scripts/services (it installs Debian's prometheus package)"
    );
    std::process::Command::new("promtool")
}

#[test]
fn the_alert_rules_and_the_prometheus_configuration_pass_promtool() {
    for args in [
        vec!["check", "rules", "deploy/prometheus/alerts.yml"],
        vec!["test", "rules", "deploy/prometheus/alerts.test.yml"],
        vec!["check", "config", "deploy/prometheus/prometheus.yml"],
    ] {
        let output = promtool()
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
