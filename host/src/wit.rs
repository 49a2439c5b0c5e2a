//! The one `bindgen!` call: Rust types and traits for the `ws-handler` world.
//!
//! These generated types are the host's own: the store keeps
//! `types::ConnectionRecord`s and answers `types::StoreError`s, the handler
//! answers `types::Response`s, so nothing is declared twice and no hand-written
//! conversion can drift from the contract.
//!
//! Imports are async because the store and the key set do network I/O; the
//! guest still sees ordinary blocking calls.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "ws-handler",
    imports: { default: async },
    exports: { default: async },
    // Records are map keys in the memory store and deduplicated before a
    // DynamoDB batch.
    additional_derives: [PartialEq, Eq, Hash, PartialOrd, Ord],
});

pub use exports::gitgazer::ws_handler::handler;
pub use gitgazer::ws_handler::{connections, jwks, log, types};
