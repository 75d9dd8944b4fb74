//! The OpenAPI document is generated from the code and cannot drift: it describes exactly
//! the route table's methods and paths, the committed `docs/openapi.json` is what the code
//! generates (regenerate with `cargo run -q -- openapi > docs/openapi.json`), and the admin
//! listener serves it.

use std::collections::BTreeSet;

use crate::common::{Backend, spawn_app};
use serde_json::Value;

const METHODS: [&str; 7] = ["get", "head", "put", "post", "delete", "patch", "options"];

fn operations(document: &Value) -> BTreeSet<(String, String)> {
    document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

fn generated() -> Value {
    serde_json::from_str(&sealpost::api::openapi::document_json()).unwrap()
}

#[test]
fn the_document_describes_exactly_the_routes_of_the_route_table() {
    let table: BTreeSet<(String, String)> = sealpost::api::routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect();
    assert!(table.len() > 20, "{table:?}");
    let documented = operations(&generated());
    let undocumented: Vec<_> = table.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&table).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not routed: {unserved:?}"
    );
}

#[test]
fn every_operation_has_a_unique_id_a_summary_and_its_path_parameters() {
    let document = generated();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let id = operation["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            assert!(
                operation["summary"].is_string(),
                "{method} {path} has no summary"
            );
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty())
            );
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{method} {path}");
        }
    }
    // Every `$ref` resolves to a schema of the document.
    let text = document.to_string();
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
}

#[test]
fn the_committed_copy_is_what_the_code_generates() {
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"),
    )
    .unwrap();
    assert!(
        committed.trim_end() == sealpost::api::openapi::document_json().trim_end(),
        "docs/openapi.json is stale: run `cargo run -q -- openapi > docs/openapi.json`"
    );
}

#[tokio::test]
async fn the_admin_listener_serves_the_document() {
    let (app, _stores) = spawn_app(Backend::Embedded).await;
    let response = reqwest::get(format!("{}/openapi.json", app.admin_address))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, generated());
    // Not on the public listener.
    let public = reqwest::get(format!("{}/openapi.json", app.address))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    app.stop().await;
}
