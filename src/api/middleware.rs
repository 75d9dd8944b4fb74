//! The one middleware of the public API: `X-Signal-Timestamp` on every response, and the
//! request counter and latency histogram by route template (never the raw path).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, web};

use crate::state::AppState;
use crate::storage::now_ms;

pub const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static("x-signal-timestamp");

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let mut res = next.call(req).await?;
    res.headers_mut()
        .insert(TIMESTAMP_HEADER, HeaderValue::from(now_ms()));
    if let Some(metrics) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let method = res.request().method().as_str().to_owned();
        let status = res.status().as_u16().to_string();
        let method = match method.as_str() {
            "GET" | "PUT" | "POST" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" => method,
            _ => "other".to_owned(),
        };
        metrics
            .http_requests
            .with_label_values(&[&route, &method, &status])
            .inc();
        metrics
            .http_request_duration
            .with_label_values(&[&route, &method])
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(%route, %method, %status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    }
    Ok(res)
}
