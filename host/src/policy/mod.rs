//! The policy component and how the host runs it: `engine` (compile, cache,
//! link, bound), `imports` (what the guest is granted, one file per
//! interface), `request` (one request's store data), `runtime` (instantiate
//! and call), `known_keys` (a self-hosted socket's keys, as its calls wrote
//! them).

pub mod engine;
mod imports;
mod known_keys;
mod request;
mod runtime;

pub use engine::{EngineOptions, GUEST_COMPONENT, GuestBuild, LoadedGuest, wide_guest_component};
pub use known_keys::KnownKeys;
pub use request::Capabilities;
pub use runtime::{Connected, INTERNAL_ERROR_BODY, PolicyRuntime, Verdict};
