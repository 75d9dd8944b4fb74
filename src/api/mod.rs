//! The public HTTP API: the one route table, the extractor configuration that turns bad
//! input into clear 400s, and thin handlers per area. Handlers parse, call a service and
//! render; they hold no rules of their own.

pub mod accounts;
pub mod admin;
pub mod devices;
pub mod entities;
pub mod keys;
pub mod messages;
pub mod middleware;
pub mod profiles;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::AppError;

/// Largest JSON body accepted: a full `PUT /v2/keys` (100 Kyber and 100 EC one-time keys,
/// base64) is about 230 KiB.
pub const JSON_LIMIT: usize = 512 * 1024;

/// The one route table of the public API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .service(resource("/v1/registration").route(web::post().to(accounts::register)))
        .service(resource("/v1/accounts/whoami").route(web::get().to(accounts::whoami)))
        .service(
            resource("/v1/accounts/attributes/").route(web::put().to(accounts::set_attributes)),
        )
        .service(resource("/v1/accounts/attributes").route(web::put().to(accounts::set_attributes)))
        .service(resource("/v1/accounts/me").route(web::delete().to(accounts::delete)))
        .service(resource("/v1/devices").route(web::get().to(devices::list)))
        // Before `/v1/devices/{device_id}`, which would otherwise take these paths.
        .service(resource("/v1/devices/provisioning/code").route(web::get().to(devices::link_code)))
        .service(resource("/v1/devices/link").route(web::put().to(devices::link)))
        .service(resource("/v1/devices/{device_id}").route(web::delete().to(devices::remove)))
        .service(
            resource("/v2/keys")
                .route(web::get().to(keys::counts))
                .route(web::put().to(keys::upload)),
        )
        .service(resource("/v2/keys/check").route(web::post().to(keys::check)))
        .service(resource("/v2/keys/{identifier}/{device_id}").route(web::get().to(keys::fetch)))
        .service(
            resource("/v1/messages/multi_recipient").route(web::put().to(messages::send_multi)),
        )
        .service(
            resource("/v1/messages/{destination}")
                .app_data(json_config().limit(messages::MESSAGES_JSON_LIMIT))
                .route(web::put().to(messages::send)),
        )
        .service(resource("/v1/keepalive").route(web::get().to(messages::keepalive)))
        .service(resource("/v1/profile/{identifier}").route(web::get().to(profiles::profile)))
        .service(
            resource("/v1/certificate/delivery")
                .route(web::get().to(profiles::delivery_certificate)),
        )
        .service(resource("/v1/provisioning/{address}").route(web::put().to(devices::provision)))
        .service(
            resource("/v1/websocket/provisioning/")
                .route(web::get().to(crate::ws::provisioning::upgrade)),
        )
        .service(
            resource("/v1/websocket/provisioning")
                .route(web::get().to(crate::ws::provisioning::upgrade)),
        )
        .service(resource("/v1/websocket/").route(web::get().to(crate::ws::upgrade)))
        .service(resource("/v1/websocket").route(web::get().to(crate::ws::upgrade)))
        .default_service(web::to(not_found));
}

/// A resource whose unsupported methods answer 405 with the usual JSON body.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(JSON_LIMIT)
        // curl users forget the header; the body is parsed as JSON either way.
        .content_type_required(false)
        .error_handler(json_error)
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            AppError::PayloadTooLarge
        }
        JsonPayloadError::Deserialize(e) => AppError::bad_request(format!("invalid JSON: {e}")),
        JsonPayloadError::Serialize(e) => AppError::internal(e),
        other => AppError::bad_request(format!("invalid JSON body: {other}")),
    }
    .into()
}

fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    AppError::bad_request(format!("invalid path: {err}")).into()
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    AppError::bad_request(format!("invalid query: {err}")).into()
}

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound("no such endpoint".into()))
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, AppError> {
    Err(AppError::MethodNotAllowed(format!(
        "{} is not allowed on this endpoint",
        req.method()
    )))
}
