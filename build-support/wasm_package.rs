//! Shared by the build scripts that need a WebAssembly component built from
//! a workspace package (`host/build.rs`: the policy; `tests/build.rs`: test
//! guests). Included with `#[path]`, so there is one copy of this logic.
//!
//! Why a nested cargo: the host and the guests need different targets, and
//! the workspace must not be retargeted. The nested build gets its own
//! target directory (`target/guest`): sharing the outer one would deadlock
//! on its lock. Compare wasmtime's `crates/test-programs/artifacts/build.rs`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The workspace root (the parent of the calling package's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("package inside the workspace")
        .to_path_buf()
}

/// How a package is built for wasm: the standard build, or one with extra
/// cargo features and target features (its own target directory, so the two
/// builds never invalidate each other's artifacts).
pub struct Variant {
    /// Subdirectory of the outer target directory.
    pub target_subdir: &'static str,
    /// Cargo features of the package, comma-separated ("" for none).
    pub features: &'static str,
    /// Flags for rustc, e.g. `-Ctarget-feature=+wide-arithmetic`.
    pub rustflags: &'static [&'static str],
}

/// Standard WebAssembly features only: what every runtime loads.
pub const PORTABLE: Variant = Variant {
    target_subdir: "guest",
    features: "",
    rustflags: &[],
};

/// Builds `package` (a cdylib) for wasm32-wasip2 in release mode and returns
/// the path of `<artifact>.wasm`. `watched`: paths, relative to the
/// workspace root, whose change must rebuild it.
pub fn build_wasm_package(package: &str, artifact: &str, watched: &[&str]) -> PathBuf {
    build_wasm_package_variant(package, artifact, watched, &PORTABLE)
}

/// [`build_wasm_package`] for a given [`Variant`].
pub fn build_wasm_package_variant(
    package: &str,
    artifact: &str,
    watched: &[&str],
    variant: &Variant,
) -> PathBuf {
    let workspace = workspace_root();
    for path in watched.iter().chain(["Cargo.lock", "build-support"].iter()) {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    let target_dir = nested_target_dir(&workspace, variant.target_subdir);
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--package", package])
        .args(["--target", WASM_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    if !variant.features.is_empty() {
        command.args(["--features", variant.features]);
    }
    let status = command
        // The outer build's flags are for the host target, not for wasm.
        .env("CARGO_ENCODED_RUSTFLAGS", variant.rustflags.join("\x1f"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("could not run cargo to build a wasm component");
    if !status.success() {
        panic!(
            "building {package} for {WASM_TARGET} failed ({status}); is the target installed? \
             `rustup target add {WASM_TARGET}`"
        );
    }
    let wasm = target_dir
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{artifact}.wasm"));
    assert!(wasm.exists(), "the build produced no {}", wasm.display());
    wasm
}

/// `<outer target dir>/<subdir>`: next to the outer build's artifacts, never
/// inside a directory the outer cargo holds locked.
fn nested_target_dir(workspace: &Path, subdir: &str) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join(subdir)
}
