//! The policy component and how the host runs it.

pub mod bindings;
pub mod engine;
mod imports;
mod runtime;

pub use engine::{EngineOptions, GUEST_COMPONENT, GuestBuild, LoadedGuest, wide_guest_component};
pub use imports::Capabilities;
pub use runtime::{INTERNAL_ERROR_BODY, PolicyRuntime, PolicySettings, Reply, Verdict};
