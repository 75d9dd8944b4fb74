//! The layer rules of ARCHITECTURE.md, read off the code: every `crate::<module>` a file
//! under `src/` names (in a `use` or a path; comments and `#[cfg(test)]` code left out) is an
//! arrow from its top-level module to that one, and no arrow may point up the table below.
//! A new top-level module must be given its layer here first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules, lowest layer first; modules of one band may import each other.
const LAYERS: &[&[&str]] = &[
    &["proto"],
    &["domain"],
    &["metrics", "descriptors", "certificates", "identity"],
    &["storage"],
    &["limits", "delivery", "push"],
    &["error", "config"],
    &["telemetry", "auth"],
    &["service"],
    &["state"],
    &["ws"],
    &["api"],
    &["startup"],
    &["client"],
    &["lib", "main"],
];

/// What each module may never import, whatever the table says (the rules as ARCHITECTURE.md
/// states them).
const NEVER: &[(&str, &[&str])] = &[
    (
        "domain",
        &[
            "identity",
            "metrics",
            "descriptors",
            "certificates",
            "storage",
            "limits",
            "delivery",
            "error",
            "config",
            "telemetry",
            "auth",
            "service",
            "state",
            "ws",
            "api",
            "startup",
            "client",
        ],
    ),
    (
        "storage",
        &["api", "ws", "service", "auth", "limits", "state"],
    ),
    ("service", &["api", "ws", "state"]),
    // A push sender knows its provider and nothing of requests, accounts or schedules.
    (
        "push",
        &["storage", "service", "auth", "config", "state", "ws", "api"],
    ),
    // Who a request acts as is plain data: no authentication, services or HTTP state.
    ("identity", &["auth", "service", "state", "ws", "api"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|band| band.contains(&module))
}

/// The code of a file without comments and without its `#[cfg(test)]` part (by this
/// codebase's convention the test module comes last).
fn production_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::name` in `code`, and the `crate::{a, b}` groups' names.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        // `sealpost_crate::` or `$crate::` are not ours.
        let before = rest[..at].chars().last();
        let ours = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        if ours {
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
        rest = after;
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Arrows between top-level modules: (from, to) -> the files that draw them.
fn arrows() -> BTreeMap<(String, String), BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut arrows: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let module = relative
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for target in crate_references(&production_code(&text)) {
            if target != module {
                arrows
                    .entry((module.clone(), target))
                    .or_default()
                    .insert(relative.clone());
            }
        }
    }
    arrows
}

#[test]
fn no_module_imports_a_layer_above_its_own_or_what_it_may_never_import() {
    let arrows = arrows();
    assert!(
        arrows.len() > 30,
        "the reader found too few arrows: {arrows:?}"
    );
    let mut wrong = Vec::new();
    for ((from, to), files) in &arrows {
        let (Some(from_layer), Some(to_layer)) = (layer_of(from), layer_of(to)) else {
            wrong.push(format!(
                "{from} -> {to}: a module without a layer (add it to LAYERS) in {files:?}"
            ));
            continue;
        };
        if to_layer > from_layer {
            wrong.push(format!("{from} -> {to}: imports upward, in {files:?}"));
        }
        for (module, never) in NEVER {
            if from == module && never.contains(&to.as_str()) {
                wrong.push(format!("{from} -> {to}: never allowed, in {files:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layer rules broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_sees_uses_groups_and_paths_and_skips_comments_and_tests() {
    let code = production_code(
        "use crate::domain::ids::Aci;\n\
         use crate::{metrics::Metrics, storage};\n\
         let t = crate::domain::clock::now_ms(); // crate::api in a comment\n\
         macro_rules! m { () => { $crate::x } }\n\
         #[cfg(test)]\nmod tests { use crate::client::AccountKeys; }\n",
    );
    assert_eq!(
        crate_references(&code),
        ["domain", "metrics", "storage"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

#[test]
fn the_rules_would_catch_the_arrows_this_issue_removed() {
    // storage -> limits (BucketSpec) and limits -> error (AppError) were real arrows.
    for (from, to) in [
        ("storage", "limits"),
        ("limits", "error"),
        ("domain", "storage"),
    ] {
        let upward = layer_of(to).unwrap() > layer_of(from).unwrap();
        let never = NEVER.iter().any(|(m, n)| *m == from && n.contains(&to));
        assert!(upward || never, "{from} -> {to} would pass");
    }
}
