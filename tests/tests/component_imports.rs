//! The policy component asks for nothing beyond its world and the WASI
//! interfaces Rust's std links against. A new import is a deliberate change:
//! update this list and the README together.

use gitgazer_ws::component::GUEST_COMPONENT;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

const ALLOWED_IMPORTS: &[&str] = &[
    // The world's own capabilities.
    "gitgazer:ws-handler/types@0.1.0",
    "gitgazer:ws-handler/jwks@0.1.0",
    "gitgazer:ws-handler/connections@0.1.0",
    "gitgazer:ws-handler/log@0.1.0",
    // What Rust's std pulls in on wasm32-wasip2 (linked deny-all by the host).
    "wasi:cli/environment@0.2.",
    "wasi:cli/exit@0.2.",
    "wasi:cli/stdin@0.2.",
    "wasi:cli/stdout@0.2.",
    "wasi:cli/stderr@0.2.",
    "wasi:cli/terminal-input@0.2.",
    "wasi:cli/terminal-output@0.2.",
    "wasi:cli/terminal-stdin@0.2.",
    "wasi:cli/terminal-stdout@0.2.",
    "wasi:cli/terminal-stderr@0.2.",
    "wasi:io/error@0.2.",
    "wasi:io/poll@0.2.",
    "wasi:io/streams@0.2.",
];

#[test]
fn the_policy_imports_only_its_world_and_std_wasi() {
    let engine = Engine::new(&Config::new()).unwrap();
    let component = Component::new(&engine, GUEST_COMPONENT).expect("the embedded guest compiles");
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("gitgazer:ws-handler/jwks")),
        "the world's imports are listed: {imports:?}"
    );
    let unexpected: Vec<&String> = imports
        .iter()
        .filter(|name| {
            !ALLOWED_IMPORTS
                .iter()
                .any(|allowed| name.starts_with(allowed))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected imports: {unexpected:?} (all: {imports:?})"
    );
}
