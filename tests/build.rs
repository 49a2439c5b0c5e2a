//! Builds the test-only guests these tests load into the host.

#[path = "../build-support/wasm_package.rs"]
mod wasm_package;

fn main() {
    let wasm = wasm_package::build_wasm_package(
        "gitgazer-ws-test-guest",
        "gitgazer_ws_test_guest",
        &["tests/guests/misbehaving", "guest/runtime", "wit"],
    );
    println!("cargo:rustc-env=MISBEHAVING_GUEST_WASM={}", wasm.display());
}
