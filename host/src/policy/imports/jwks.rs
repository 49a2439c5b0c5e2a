//! `jwks`: the key set, from the host's cache (`crate::keys`).

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::keys::KeySetSource;
use crate::policy::request::{GuestClock, RequestState};
use crate::wit::jwks;

pub struct JwksHost<'a> {
    keys: &'a Arc<dyn KeySetSource>,
    request_id: &'a str,
    clock: &'a mut GuestClock,
}

struct Jwks;

impl HasData for Jwks {
    type Data<'a> = JwksHost<'a>;
}

pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    jwks::add_to_linker::<_, Jwks>(linker, |state| JwksHost {
        keys: &state.caps.keys,
        request_id: &state.request_id,
        clock: &mut state.clock,
    })
}

impl jwks::Host for JwksHost<'_> {
    async fn key_set(&mut self, refresh: bool) -> Result<String, String> {
        match self.clock.wait(self.keys.key_set(refresh)).await {
            Ok(json) => Ok(json.to_string()),
            Err(reason) => {
                tracing::error!(request_id = self.request_id, %reason, "key set unavailable");
                Err(reason)
            }
        }
    }
}
