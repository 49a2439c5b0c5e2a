//! The end-to-end tests, one binary with a module per area (one link of
//! wasmtime and the AWS SDK instead of one per file). Run one area with a
//! filter on its module, e.g.
//!
//! ```sh
//! cargo test --release -p gitgazer-ws-tests --test e2e conformance::
//! ```
//!
//! `scripts/test` supplies what some areas need: the release binary, dynalite
//! (`dynamodb`, `websocket`, `browser`, `edge`), headless Chromium (`browser`)
//! and workerd from npm (`edge`).
//! `load_faults` is ignored by default; `scripts/load-faults` runs it.

mod browser;
mod cli;
mod cognito_jwks;
mod component_imports;
mod conformance;
mod containment;
mod dev_server;
mod dynamodb;
mod edge;
mod evict;
mod guest_stack;
mod http_limits;
mod lambda;
mod load_faults;
mod logs;
mod nodes;
mod observability;
mod shutdown;
mod store_faults;
mod support;
mod surface;
mod template;
mod websocket;
