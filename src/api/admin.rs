//! The admin listener: liveness, readiness, Prometheus metrics and the OpenAPI document.
//! Not exposed publicly.

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
        .route("/metrics", web::get().to(metrics))
        .route("/openapi.json", web::get().to(openapi));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "live"}))
}

/// Asks every store whether it answers, recording the answers in `sealpost_store_up`.
async fn probe_stores(state: &AppState) -> Vec<(&'static str, bool)> {
    let metrics = &state.metrics;
    join_all(state.stores.probes.iter().map(|probe| async move {
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
    .await
}

/// Ready: the listeners are bound, shutdown has not begun and every store answers. Also
/// sets `sealpost_health_ready`.
async fn readiness(state: &AppState) -> (bool, Vec<(&'static str, bool)>) {
    let probes = probe_stores(state).await;
    let ready = state.readiness.serving() && probes.iter().all(|(_, up)| *up);
    state.metrics.ready.set(i64::from(ready));
    (ready, probes)
}

/// 200 only when the listeners are bound, shutdown has not begun and every store answers.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (ready, probes) = readiness(&state).await;
    let stores: BTreeMap<&str, &str> = probes
        .iter()
        .map(|(name, up)| (*name, if *up { "up" } else { "down" }))
        .collect();
    let serving = state.readiness.serving();
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

/// Store health and pool state are sampled here, once per scrape, rather than on every
/// request: a PING and a `SELECT 1` every scrape interval cost nothing.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    readiness(&state).await;
    for pool in state.stores.probes.iter().filter_map(|p| p.pool()) {
        let metrics = &state.metrics;
        let in_use = pool.size.saturating_sub(pool.idle);
        metrics.postgres_pool_max.set(pool.max as i64);
        metrics.postgres_pool_waiting.set(pool.waiting as i64);
        let connections = &metrics.postgres_pool_connections;
        connections
            .with_label_values(&["idle"])
            .set(pool.idle as i64);
        connections
            .with_label_values(&["in_use"])
            .set(in_use as i64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// The public API's OpenAPI document, generated from the code (rarely asked for: built on
/// each request rather than kept).
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(super::openapi::document_json())
}
