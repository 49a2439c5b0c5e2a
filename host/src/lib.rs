//! gitgazer-ws: GitGazer's WebSocket connection handler.
//!
//! The decisions (token verification, what to store, what to answer) live in
//! a WebAssembly component built from `guest/`; this crate is the native
//! host that runs it and does the I/O:
//!
//! - [`component`]: the engine policy, the WIT bindings, the imports the
//!   guest is granted, and the per-request runtime;
//! - [`store`]: where connection records live;
//! - [`keys`]: where the key set comes from;
//! - [`service`] and [`events`]: the handler shared by every entry point;
//! - [`http`]: the HTTP server (`app(state) -> Router`);
//! - [`dev`]: dev mode's key and tokens;
//! - [`config`] and [`startup`]: flags, env, and start-up.

pub mod component;
pub mod config;
pub mod delivery;
pub mod dev;
pub mod events;
pub mod http;
pub mod keys;
pub mod lambda;
pub mod service;
pub mod startup;
pub mod store;
pub mod websocket;
