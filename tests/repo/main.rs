//! Checks of the repository itself: the import layering of `src/`, the deployment files,
//! the API description against the route table, the replayed fuzz regressions and the
//! multi-recipient parser's properties. `cargo test --test repo [filter]`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod deploy;
mod fuzz_regressions;
mod layers;
mod multi_recipient_parser;
mod openapi;
