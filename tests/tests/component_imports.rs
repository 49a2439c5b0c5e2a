//! The policy component asks for nothing beyond its world: no WASI at all
//! (the guest is `no_std`; see `guest/runtime`). A new import is a
//! deliberate change: update this list, the host's linker and the README
//! together.

use gitgazer_ws::component::{GUEST_COMPONENT, wide_guest_component};
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
