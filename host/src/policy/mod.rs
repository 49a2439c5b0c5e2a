//! The policy component and how the host runs it: `engine` (compile, cache,
//! link, bound), `imports` (what the guest is granted, one file per
//! interface), `request` (one request's store data), `runtime` (instantiate
//! and call).

pub mod engine;
mod imports;
mod request;
mod runtime;

pub use engine::{EngineOptions, GUEST_COMPONENT, GuestBuild, LoadedGuest, wide_guest_component};
pub use request::Capabilities;
pub use runtime::{Connected, INTERNAL_ERROR_BODY, PolicyRuntime, Verdict};
