//! The admin listener: liveness, readiness and Prometheus metrics. Not exposed publicly.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use futures_util::future::join_all;

use crate::state::AppState;

/// How long readiness waits for a store before calling it down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "live"}))
}

/// 200 only when the listeners are bound, shutdown has not begun and every store answers.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let metrics = &state.metrics;
    let probes = join_all(state.stores.probes.iter().map(|probe| async move {
        let up = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, probe.ping()).await,
            Ok(Ok(()))
        );
        metrics
            .store_up
            .with_label_values(&[probe.name()])
            .set(i64::from(up));
        (probe.name(), up)
    }))
    .await;
    let stores: BTreeMap<&str, &str> = probes
        .iter()
        .map(|(name, up)| (*name, if *up { "up" } else { "down" }))
        .collect();
    let serving = state.readiness.serving();
    let ready = serving && probes.iter().all(|(_, up)| *up);
    let body = serde_json::json!({
        "status": if ready { "ready" } else if serving { "unavailable" } else { "not serving" },
        "stores": stores,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
