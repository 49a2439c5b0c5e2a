//! The policy component asks for nothing beyond its world: no WASI at all
//! (the guest is `no_std`; see `guest/runtime`). A new import is a
//! deliberate change: update this list, the host's linker and the README
//! together.

use gitgazer_ws::policy::{EngineOptions, GUEST_COMPONENT, PolicyRuntime, wide_guest_component};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

const WORLD_IMPORTS: &[&str] = &[
    "gitgazer:ws-handler/connections@0.1.0",
    "gitgazer:ws-handler/jwks@0.1.0",
    "gitgazer:ws-handler/log@0.1.0",
    "gitgazer:ws-handler/types@0.1.0",
];

fn imports_of(engine: &Engine, wasm: &[u8]) -> Vec<String> {
    let component = Component::new(engine, wasm).expect("the embedded guest compiles");
    let mut imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    imports.sort();
    imports
}

#[test]
fn both_builds_of_the_policy_import_exactly_their_world() {
    let mut config = Config::new();
    config.wasm_wide_arithmetic(true);
    let engine = Engine::new(&config).unwrap();
    let wide = wide_guest_component().expect("this build embeds the wide guest");
    for (build, wasm) in [("portable", GUEST_COMPONENT), ("wide", wide)] {
        assert_eq!(imports_of(&engine, wasm), WORLD_IMPORTS, "{build} build");
    }
}

/// The host links the world and nothing else: a component that asks for
/// WASI (as any guest built with Rust's std does) is refused at start, and
/// the error names what it asked for.
#[test]
fn a_component_importing_wasi_is_refused_naming_the_import() {
    let wasm = wat::parse_str(
        r#"(component
            (import "wasi:cli/environment@0.2.6" (instance
                (export "get-environment" (func (result (list (tuple string string)))))
            ))
        )"#,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("gitgazer-ws-wasi-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("imports-wasi.wasm");
    std::fs::write(&path, wasm).unwrap();

    let result = PolicyRuntime::new(EngineOptions {
        component: Some(path),
        cache_dir: None,
        max_instances: 1,
        ..EngineOptions::default()
    });
    std::fs::remove_dir_all(&dir).unwrap();
    let error = format!("{:#}", result.err().expect("a WASI import is refused"));
    assert!(
        error.contains("does not fit the ws-handler world")
            && error.contains("wasi:cli/environment@0.2.6"),
        "{error}"
    );
}
