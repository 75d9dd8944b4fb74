//! The OpenAPI 3 description of the public API, generated from the handlers' `#[utoipa::path]`
//! attributes and the entities' `ToSchema` derives; served at `GET /openapi.json` on the
//! admin listener and committed as `docs/openapi.json` (`sealpost openapi` regenerates it).
//! Paths that the route table serves under a second spelling (with or without the trailing
//! slash) are copied from their twin here, so the document lists every route of the table.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem};
use utoipa::{Modify, OpenApi};

use super::{
    accounts, attachments, avatars, calling, devices, entities, identity, keys, messages, profiles,
    push, reports, uploads, usernames,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sealpost",
        description = "The REST API of sealpost, a messaging server in the style of Signal's. \
                       Every endpoint is also reachable as a request tunnelled through the \
                       device's WebSocket.",
    ),
    paths(
        accounts::register,
        identity::whoami,
        identity::account_exists,
        accounts::set_attributes,
        accounts::delete,
        usernames::reserve_username_hash,
        usernames::confirm_username_hash,
        usernames::delete_username_hash,
        usernames::lookup_username_hash,
        usernames::set_username_link,
        usernames::delete_username_link,
        usernames::lookup_username_link,
        devices::list,
        devices::link_code,
        devices::link,
        devices::remove,
        devices::rename,
        devices::wait_for_linked_device,
        devices::provision,
        keys::counts,
        keys::upload,
        keys::fetch,
        keys::check,
        messages::send,
        messages::send_multi,
        messages::keepalive,
        messages::keepalive_provisioning,
        reports::report,
        profiles::profile,
        profiles::set_profile,
        profiles::versioned_profile,
        profiles::credential_profile,
        avatars::upload_avatar,
        avatars::download_avatar,
        profiles::delivery_certificate,
        calling::relays,
        push::set_gcm,
        push::delete_gcm,
        push::set_apn,
        push::delete_apn,
        push::set_webpush,
        push::activate_webpush,
        push::delete_webpush,
        push::vapid_key,
        attachments::upload_form,
        attachments::download,
        attachments::download_head,
        uploads::options,
        uploads::create,
        uploads::head,
        uploads::patch,
        crate::ws::upgrade,
        crate::ws::provisioning::upgrade,
    ),
    components(schemas(entities::ErrorJson)),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "upload_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The upload form's token (its Authorization header)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "accessKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Unidentified-Access-Key",
                "Base64 of the target's 16-byte access key (sealed sender)",
            ))),
        );
    }
}

/// The document: the annotated handlers, plus the route table's second spellings.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.license = None;
    for (_, path) in super::routes() {
        if doc.paths.paths.contains_key(path) {
            continue;
        }
        let twin = match path.strip_suffix('/') {
            Some(bare) => bare.to_owned(),
            None => format!("{path}/"),
        };
        if let Some(item) = doc.paths.paths.get(&twin).cloned() {
            doc.paths.paths.insert(path.to_owned(), alias(item));
        }
    }
    doc
}

/// A twin path's operations need their own ids (they must be unique in a document).
fn alias(mut item: PathItem) -> PathItem {
    for operation in [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
    {
        if let Some(id) = operation.operation_id.as_mut() {
            id.push_str("_alias");
        }
    }
    item
}

/// The document as pretty JSON, as committed in `docs/openapi.json`.
pub fn document_json() -> String {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}
