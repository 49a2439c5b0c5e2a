//! gitgazer-ws: GitGazer's WebSocket connection handler.
//!
//! The decisions (token verification, what to store, what to answer) live in
//! a WebAssembly component built from `guest/`; this crate is the native
//! host that runs it and does the I/O:
//!
//! - [`wit`]: the contract's generated types, the host's own types too;
//! - [`policy`]: the engine (compile, cache, link, bound), the imports the
//!   guest is granted, and the per-request runtime;
//! - [`service`]: the handler every entry point shares;
//! - [`edge`]: the entry points (HTTP, WebSocket, API Gateway events, Lambda);
//! - [`store`]: where connection records live; [`keys`]: where the key set
//!   comes from; [`delivery`]: events out to connections;
//! - [`settings`]: what tokens are checked against; [`dev`]: dev mode's key
//!   and tokens; [`cli`] and [`startup`]: flags, env, and start-up;
//! - [`telemetry`]: metrics (Prometheus for `serve`, EMF under Lambda);
//! - [`retry`] and [`clock`]: the one backoff, the one wall clock.
//!
//! Dependencies point one way (`scripts/module-cycles` checks it): `cli` →
//! `edge` → `startup` → `service` → `policy` → `store`/`keys` → `wit`.

pub mod cli;
pub mod clock;
pub mod delivery;
pub mod dev;
pub mod edge;
pub mod keys;
pub mod policy;
pub mod retry;
pub mod service;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod wit;
