//! Builds the policy component (`guest/`, for wasm32-wasip2) so that the host
//! can embed it with `include_bytes!`, twice from the same source:
//!
//! - portable: standard WebAssembly features only (runs under any runtime,
//!   jco included); RSA arithmetic on 32-bit limbs;
//! - wide: with the `wide-arithmetic` proposal (64×64→128-bit multiply),
//!   which wasmtime supports and jco/V8 do not yet; 64-bit limbs. rustc marks
//!   the target feature unstable and warns; the build is otherwise the same.
//!
//! `GITGAZER_WS_GUEST_WASM=/path/to/component.wasm` skips the build and
//! embeds that file instead (e.g. a guest built elsewhere); then only
//! `GITGAZER_WS_GUEST_WIDE_WASM` supplies a wide build, and without it the
//! host runs the portable one.

#[path = "../build-support/wasm_package.rs"]
mod wasm_package;

use std::path::PathBuf;

use wasm_package::Variant;

const PACKAGE: &str = "gitgazer-ws-guest";
const ARTIFACT: &str = "gitgazer_ws_guest";
const WATCHED: &[&str] = &[
    "guest/src",
    "guest/build.rs",
    "guest/Cargo.toml",
    "guest/runtime",
    "wit",
];

const WIDE: Variant = Variant {
    target_subdir: "guest-wide",
    features: "wide-arithmetic",
    rustflags: &["-Ctarget-feature=+wide-arithmetic"],
};

fn main() {
    println!("cargo:rerun-if-env-changed=GITGAZER_WS_GUEST_WASM");
    println!("cargo:rerun-if-env-changed=GITGAZER_WS_GUEST_WIDE_WASM");
    let (portable, wide) = match std::env::var_os("GITGAZER_WS_GUEST_WASM") {
        Some(path) => (
            PathBuf::from(path),
            std::env::var_os("GITGAZER_WS_GUEST_WIDE_WASM").map(PathBuf::from),
        ),
        None => (
            wasm_package::build_wasm_package(PACKAGE, ARTIFACT, WATCHED),
            Some(wasm_package::build_wasm_package_variant(
                PACKAGE, ARTIFACT, WATCHED, &WIDE,
            )),
        ),
    };
    // No wide build: embed an empty file, which the host reads as "none".
    let wide = wide.unwrap_or_else(|| {
        let empty = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("none.wasm");
        std::fs::write(&empty, b"").expect("writing an empty placeholder");
        empty
    });
    for (name, path) in [
        ("GITGAZER_WS_GUEST_WASM_PATH", &portable),
        ("GITGAZER_WS_GUEST_WIDE_WASM_PATH", &wide),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-env={name}={}", path.display());
    }
}
