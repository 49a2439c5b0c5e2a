//! The one `bindgen!` call: Rust types and traits for the `ws-handler` world.
//!
//! Imports are async because the store and the key set do network I/O; the
//! guest still sees ordinary blocking calls.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "ws-handler",
    imports: { default: async },
    exports: { default: async },
});

pub use exports::gitgazer::ws_handler::handler;
pub use gitgazer::ws_handler::{connections, jwks, log, types};
