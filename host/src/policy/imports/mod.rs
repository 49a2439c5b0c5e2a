//! What the host grants the guest: one file per imported interface, each
//! `Host` impl on a small context of its own, borrowed from the request's
//! store data (as wasmtime-wasi's `WasiCtxView` does).

mod connections;
mod jwks;
mod log;

use wasmtime::component::{HasSelf, Linker};

use super::request::RequestState;
use crate::wit::types;

/// Links the world's imports, and only those: no WASI. A component that
/// imports more (e.g. one built with std) is refused when it is linked,
/// naming the import.
pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    types::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    jwks::add_to_linker(linker)?;
    connections::add_to_linker(linker)?;
    log::add_to_linker(linker)
}

// The `types` interface declares no functions.
impl types::Host for RequestState {}
