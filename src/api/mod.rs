//! The public HTTP API: the one route table, the extractor configuration that turns bad
//! input into clear 400s, and thin handlers per area. Handlers parse, call a service and
//! render; they hold no rules of their own.

pub mod accounts;
pub mod admin;
pub mod attachments;
pub mod avatars;
pub mod bounds;
pub mod calling;
pub mod devices;
pub mod entities;
pub mod extract;
pub mod identity;
pub mod keys;
pub mod messages;
pub mod middleware;
pub mod openapi;
pub mod profiles;
pub mod push;
pub mod reports;
pub mod uploads;
pub mod usernames;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::Method;
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Responder, Route, web};

use crate::error::AppError;
use crate::state::AppState;
use crate::ws::tunnel::AppService;

/// Largest JSON body accepted: a full `PUT /v2/keys` (100 Kyber and 100 EC one-time keys,
/// base64) is about 230 KiB.
pub const JSON_LIMIT: usize = 512 * 1024;

/// The public application: the route table behind the observing middleware. The HTTP
/// server serves it (with each worker's tunnel as app data) and each worker's tunnel serves
/// its own copy in process (`tunnel_app`), so both run the same handlers, limits and metrics.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_service::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .app_data(state)
        .wrap(actix_web::middleware::from_fn(middleware::observe))
        .configure(configure)
}

/// `app` as one service, for a worker's tunnel (`ws::tunnel::AppBuilder`).
pub fn tunnel_app(
    state: web::Data<AppState>,
) -> futures_util::future::LocalBoxFuture<'static, Result<AppService, AppError>> {
    use actix_service::{IntoServiceFactory, ServiceExt, ServiceFactory};
    Box::pin(async move {
        let service = app(state)
            .into_factory()
            .new_service(actix_web::dev::AppConfig::default())
            .await
            .map_err(|()| AppError::internal(anyhow::anyhow!("tunnel app failed")))?;
        let service = service.map(actix_web::dev::ServiceResponse::map_into_boxed_body);
        Ok(actix_service::boxed::rc_service(service))
    })
}

/// The one route table of the public API. `configure` serves it; `routes` lists it (the
/// OpenAPI document must describe exactly these, `tests/repo/openapi.rs` checks).
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new("/v1/registration").post(accounts::register),
        Endpoint::new("/v1/accounts/whoami").get(identity::whoami),
        Endpoint::new("/v1/accounts/account/{service_id}").head(identity::account_exists),
        Endpoint::new("/v1/accounts/name/")
            .json_limit(devices::DEVICE_NAME_JSON_LIMIT)
            .put(devices::rename),
        Endpoint::new("/v1/accounts/attributes/").put(accounts::set_attributes),
        Endpoint::new("/v1/accounts/attributes").put(accounts::set_attributes),
        Endpoint::new("/v1/accounts/me").delete(accounts::delete),
        Endpoint::new("/v1/accounts/username_hash/reserve")
            .json_limit(usernames::USERNAME_JSON_LIMIT)
            .put(usernames::reserve_username_hash),
        Endpoint::new("/v1/accounts/username_hash/confirm")
            .json_limit(usernames::USERNAME_JSON_LIMIT)
            .put(usernames::confirm_username_hash),
        Endpoint::new("/v1/accounts/username_hash").delete(usernames::delete_username_hash),
        Endpoint::new("/v1/accounts/username_hash/{usernameHash}")
            .get(usernames::lookup_username_hash),
        Endpoint::new("/v1/accounts/username_link")
            .json_limit(usernames::USERNAME_JSON_LIMIT)
            .put(usernames::set_username_link)
            .delete(usernames::delete_username_link),
        Endpoint::new("/v1/accounts/username_link/{uuid}").get(usernames::lookup_username_link),
        Endpoint::new("/v1/accounts/gcm/")
            .json_limit(push::PUSH_JSON_LIMIT)
            .put(push::set_gcm)
            .delete(push::delete_gcm),
        Endpoint::new("/v1/accounts/apn/")
            .json_limit(push::PUSH_JSON_LIMIT)
            .put(push::set_apn)
            .delete(push::delete_apn),
        Endpoint::new("/v1/accounts/webpush/activate/")
            .json_limit(push::PUSH_JSON_LIMIT)
            .put(push::activate_webpush),
        Endpoint::new("/v1/accounts/webpush/")
            .json_limit(push::PUSH_JSON_LIMIT)
            .put(push::set_webpush)
            .delete(push::delete_webpush),
        Endpoint::new("/v1/webpush/vapid").get(push::vapid_key),
        Endpoint::new("/v4/attachments/form/upload").get(attachments::upload_form),
        Endpoint::new("/attachments/{key}")
            .get(attachments::download)
            .head(attachments::download_head),
        Endpoint::new("/upload/attachments")
            .options(uploads::options)
            .post(uploads::create),
        Endpoint::new("/upload/attachments/{key}")
            .head(uploads::head)
            .patch(uploads::patch),
        Endpoint::new("/v1/devices").get(devices::list),
        // Before `/v1/devices/{device_id}`, which would otherwise take these paths.
        Endpoint::new("/v1/devices/provisioning/code").get(devices::link_code),
        Endpoint::new("/v1/devices/link").put(devices::link),
        Endpoint::new("/v1/devices/wait_for_linked_device/{token_identifier}")
            .get(devices::wait_for_linked_device),
        Endpoint::new("/v1/devices/{device_id}").delete(devices::remove),
        Endpoint::new("/v2/keys")
            .get(keys::counts)
            .put(keys::upload),
        Endpoint::new("/v2/keys/check").post(keys::check),
        Endpoint::new("/v2/keys/{identifier}/{device_id}").get(keys::fetch),
        Endpoint::new("/v1/messages/multi_recipient").put(messages::send_multi),
        // Before `/v1/messages/{destination}`, which takes only one segment anyway.
        Endpoint::new("/v1/messages/report/{source}/{messageGuid}").post(reports::report),
        Endpoint::new("/v1/messages/{destination}")
            .json_limit(messages::MESSAGES_JSON_LIMIT)
            .put(messages::send),
        Endpoint::new("/v1/keepalive").get(messages::keepalive),
        Endpoint::new("/v1/keepalive/provisioning").get(messages::keepalive_provisioning),
        Endpoint::new("/v1/profile")
            .json_limit(profiles::PROFILE_JSON_LIMIT)
            .put(profiles::set_profile),
        Endpoint::new("/v1/profile/{identifier}").get(profiles::profile),
        Endpoint::new("/v1/profile/{identifier}/{version}").get(profiles::versioned_profile),
        Endpoint::new("/v1/profile/{identifier}/{version}/{credentialRequest}")
            .get(profiles::credential_profile),
        Endpoint::new("/cdn0/").post(avatars::upload_avatar),
        Endpoint::new("/cdn0/profiles/{id}").get(avatars::download_avatar),
        Endpoint::new("/v1/certificate/delivery").get(profiles::delivery_certificate),
        Endpoint::new("/v2/calling/relays").get(calling::relays),
        Endpoint::new("/v1/provisioning/{address}").put(devices::provision),
        Endpoint::new("/v1/websocket/provisioning/").get(crate::ws::provisioning::upgrade),
        Endpoint::new("/v1/websocket/provisioning").get(crate::ws::provisioning::upgrade),
        Endpoint::new("/v1/websocket/").get(crate::ws::upgrade),
        Endpoint::new("/v1/websocket").get(crate::ws::upgrade),
    ]
}

/// Serves the route table, with the extractor configuration that turns bad input into 400s.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::QueryConfig::default().error_handler(query_error));
    for endpoint in endpoints() {
        let mut resource = resource(endpoint.path);
        if let Some(limit) = endpoint.json_limit {
            resource = resource.app_data(json_config().limit(limit));
        }
        for (_, route) in endpoint.routes {
            resource = resource.route(route);
        }
        cfg.service(resource);
    }
    cfg.default_service(web::to(not_found));
}

/// Every (method, path template) the route table serves, in table order.
pub fn routes() -> Vec<(Method, &'static str)> {
    endpoints()
        .into_iter()
        .flat_map(|e| e.routes.into_iter().map(move |(m, _)| (m, e.path)))
        .collect()
}

/// One path of the route table and the handler of each of its methods.
pub struct Endpoint {
    path: &'static str,
    routes: Vec<(Method, Route)>,
    json_limit: Option<usize>,
}

impl Endpoint {
    fn new(path: &'static str) -> Self {
        Self {
            path,
            routes: Vec::new(),
            json_limit: None,
        }
    }

    fn on<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.routes
            .push((method.clone(), web::method(method).to(handler)));
        self
    }

    fn get<F: Handler<A>, A: FromRequest + 'static>(self, handler: F) -> Self
    where
        F::Output: Responder + 'static,
    {
        self.on(Method::GET, handler)
    }

    fn head<F: Handler<A>, A: FromRequest + 'static>(self, handler: F) -> Self
    where
        F::Output: Responder + 'static,
    {
        self.on(Method::HEAD, handler)
    }

    fn put<F: Handler<A>, A: FromRequest + 'static>(self, handler: F) -> Self
    where
        F::Output: Responder + 'static,
    {
        self.on(Method::PUT, handler)
    }

    fn post<F: Handler<A>, A: FromRequest + 'static>(self, handler: F) -> Self
    where
        F::Output: Responder + 'static,
    {
        self.on(Method::POST, handler)
    }

    fn delete<F: Handler<A>, A: FromRequest + 'static>(self, handler: F) -> Self
    where
        F::Output: Responder + 'static,
    {
        self.on(Method::DELETE, handler)
    }

    fn patch<F: Handler<A>, A: FromRequest + 'static>(self, handler: F) -> Self
    where
        F::Output: Responder + 'static,
    {
        self.on(Method::PATCH, handler)
    }

    fn options<F: Handler<A>, A: FromRequest + 'static>(self, handler: F) -> Self
    where
        F::Output: Responder + 'static,
    {
        self.on(Method::OPTIONS, handler)
    }

    /// Another JSON body limit than [`JSON_LIMIT`] for this path.
    fn json_limit(mut self, limit: usize) -> Self {
        self.json_limit = Some(limit);
        self
    }
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
        JsonPayloadError::Payload(e) if bounds::is_timeout(&e) => AppError::RequestTimeout,
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
