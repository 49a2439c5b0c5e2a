//! Builds the policy component (`guest/`, for wasm32-wasip2) so that the host
//! can embed it with `include_bytes!`.
//!
//! `GITGAZER_WS_GUEST_WASM=/path/to/component.wasm` skips the build and
//! embeds that file instead (e.g. a guest built elsewhere).

#[path = "../build-support/wasm_package.rs"]
mod wasm_package;

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=GITGAZER_WS_GUEST_WASM");
    let wasm = match std::env::var_os("GITGAZER_WS_GUEST_WASM") {
        Some(path) => PathBuf::from(path),
        None => wasm_package::build_wasm_package(
            "gitgazer-ws-guest",
            "gitgazer_ws_guest",
            &["guest/src", "guest/Cargo.toml", "wit"],
        ),
    };
    println!("cargo:rerun-if-changed={}", wasm.display());
    println!(
        "cargo:rustc-env=GITGAZER_WS_GUEST_WASM_PATH={}",
        wasm.display()
    );
}
