//! Link settings of the component (wasm32 only; native builds are untouched).
//!
//! The stack: 16 KiB instead of rustc's 1 MiB. The stack comes first in the
//! linear memory (an overflow runs below address 0 and traps), then the
//! data (about 12 KiB), then the heap, so the stack's size decides how many
//! 64 KiB pages an instance starts with: one, with 36 KiB of heap. The host
//! resets an instance's memory by copy after each request, so the smaller
//! the memory the cheaper every request (BENCHMARKS.md, instance overhead);
//! a request that needs more heap grows the memory.
//!
//! What needs the stack is the JSON parse, which recurses once per level of
//! nesting, up to `json::MAX_NESTING`: that takes between 4 and 8 KiB.
//! `tests/e2e/guest_stack.rs` runs the deepest JSON the policy parses
//! through both builds and fails when it no longer fits.

const STACK_BYTES: u32 = 16 * 1024;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo::rustc-link-arg-cdylib=-zstack-size={STACK_BYTES}");
    }
}
