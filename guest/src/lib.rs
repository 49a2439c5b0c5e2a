//! The gitgazer-ws policy component: Cognito id token verification and
//! CONNECT/DISCONNECT decisions, exported through the `ws-handler` world.
//!
//! This file holds only the WIT glue: the generated bindings, the exported
//! `Guest` impl, conversions between WIT and core types, and `HostCapabilities`,
//! which implements the core's [`Capabilities`] trait by calling the imports.
//! The policy lives in plain modules that know nothing of WIT, so
//! `cargo test -p gitgazer-ws-guest` runs natively with in-memory fakes.
//!
//! On wasm32 the crate is `no_std` (with `alloc`), so the component imports
//! its world and nothing else; `guest/runtime` supplies what std would and
//! says why.

// Natively (unit tests, the host's benchmarks) the crate links std as usual.
#![cfg_attr(target_arch = "wasm32", no_std)]

// `#[macro_use]`: `format!` and `vec!` everywhere, as with std.
#[macro_use]
extern crate alloc;

mod prelude;

// The allocator, the panic handler and `cabi_realloc` that std would bring.
#[cfg(target_arch = "wasm32")]
use gitgazer_ws_guest_runtime as _;

pub mod base64url;
pub mod capabilities;
pub mod claims;
pub mod handler;
pub mod json;
pub mod jwks;
pub mod montgomery;
pub mod rfc3339;
pub mod rs256;
pub mod token;
pub mod types;
pub mod verify;

pub use capabilities::{Capabilities, Level};
pub use handler::{handle_connect, handle_disconnect, handle_refresh};
pub use types::{
    ConnectRequest, ConnectionRecord, DisconnectRequest, Identity, RecordKey, RefreshRequest,
    RefreshResponse, Rejection, Response, Settings, StoreError, Verified,
};
pub use verify::{verify_token, verify_token_full};

mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "ws-handler",
    });
}

/// The WIT glue. Natively nothing calls it (the export is wasm-only).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod component {
    use super::*;
    use crate::prelude::*;

    use crate::bindings::exports::gitgazer::ws_handler::handler as wit_handler;
    use crate::bindings::gitgazer::ws_handler::{
        connections, jwks as wit_jwks, log as wit_log, types,
    };

    /// The exported component. Each call gets fresh capabilities; no state
    /// survives between requests.
    struct Component;

    impl wit_handler::Guest for Component {
        fn handle_connect(req: types::ConnectRequest) -> types::Response {
            let request = ConnectRequest {
                connection_id: req.connection_id,
                id_token: req.id_token,
                now: req.now,
                settings: settings_from_wit(req.settings),
                endpoint: req.endpoint,
            };
            response_to_wit(handle_connect(&request, &mut HostCapabilities))
        }

        fn handle_disconnect(req: types::DisconnectRequest) -> types::Response {
            let request = DisconnectRequest {
                connection_id: req.connection_id,
            };
            response_to_wit(handle_disconnect(&request, &mut HostCapabilities))
        }

        fn handle_refresh(req: types::RefreshRequest) -> types::RefreshResponse {
            let request = RefreshRequest {
                connection_id: req.connection_id,
                id_token: req.id_token,
                current_token: req.current_token,
                current_record: req.current_record.map(record_from_wit),
                now: req.now,
                connected_at: req.connected_at,
                settings: settings_from_wit(req.settings),
                endpoint: req.endpoint,
            };
            let response = handle_refresh(&request, &mut HostCapabilities);
            types::RefreshResponse {
                code: response.code,
                body: response.body,
                rejection: response.rejection.map(rejection_to_wit),
                expires_at: response.expires_at,
            }
        }

        fn verify_token(
            token: String,
            now: u64,
            settings: types::Settings,
        ) -> Result<types::Identity, types::TokenRejection> {
            let settings = settings_from_wit(settings);
            match verify_token(&token, now, &settings, &mut HostCapabilities) {
                Ok(identity) => Ok(types::Identity {
                    sub: identity.sub,
                    groups: identity.groups,
                }),
                Err(rejection) => Err(rejection_to_wit(rejection)),
            }
        }
    }

    // Native builds (unit tests) link the crate as a host cdylib, where the
    // component's export names (`gitgazer:ws-handler/handler@0.1.0#...`) are not
    // valid symbols; the glue still compiles natively so it stays type-checked.
    #[cfg(target_arch = "wasm32")]
    crate::bindings::export!(Component with_types_in crate::bindings);

    /// The core's capabilities, served by the WIT imports.
    struct HostCapabilities;

    impl Capabilities for HostCapabilities {
        fn key_set(&mut self, refresh: bool) -> Result<String, String> {
            wit_jwks::key_set(refresh)
        }

        fn put_all(&mut self, records: &[ConnectionRecord]) -> Result<(), StoreError> {
            let records: Vec<types::ConnectionRecord> = records.iter().map(record_to_wit).collect();
            connections::put_all(&records).map_err(store_error_from_wit)
        }

        fn keys_of(&mut self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
            connections::keys_of(connection_id)
                .map(|keys| keys.into_iter().map(key_from_wit).collect())
                .map_err(store_error_from_wit)
        }

        fn delete(&mut self, keys: &[RecordKey]) -> Result<u32, StoreError> {
            let keys: Vec<types::RecordKey> = keys.iter().map(key_to_wit).collect();
            connections::delete(&keys).map_err(store_error_from_wit)
        }

        fn revoked_before(&mut self, sub: &str) -> Result<Option<u64>, StoreError> {
            connections::revoked_before(sub).map_err(store_error_from_wit)
        }

        fn log(&mut self, level: Level, message: &str) {
            let level = match level {
                Level::Debug => wit_log::Level::Debug,
                Level::Info => wit_log::Level::Info,
                Level::Warn => wit_log::Level::Warn,
                Level::Error => wit_log::Level::Error,
            };
            wit_log::log(level, message);
        }
    }

    fn settings_from_wit(settings: types::Settings) -> Settings {
        Settings {
            issuer: settings.issuer,
            audiences: settings.audiences,
            leeway_seconds: settings.leeway_seconds,
            record_ttl_seconds: settings.record_ttl_seconds,
        }
    }

    fn response_to_wit(response: Response) -> types::Response {
        types::Response {
            status: response.status,
            body: response.body,
            rejection: response.rejection.map(rejection_to_wit),
        }
    }

    fn record_to_wit(record: &ConnectionRecord) -> types::ConnectionRecord {
        types::ConnectionRecord {
            integration_id: record.integration_id.clone(),
            connection_id: record.connection_id.clone(),
            sub: record.sub.clone(),
            connected_at: record.connected_at.clone(),
            expires_at: record.expires_at,
            endpoint: record.endpoint.clone(),
            auth_expires_at: record.auth_expires_at,
            auth_issued_at: record.auth_issued_at,
        }
    }

    fn record_from_wit(record: types::ConnectionRecord) -> ConnectionRecord {
        ConnectionRecord {
            integration_id: record.integration_id,
            connection_id: record.connection_id,
            sub: record.sub,
            connected_at: record.connected_at,
            expires_at: record.expires_at,
            endpoint: record.endpoint,
            auth_expires_at: record.auth_expires_at,
            auth_issued_at: record.auth_issued_at,
        }
    }

    fn key_to_wit(key: &RecordKey) -> types::RecordKey {
        types::RecordKey {
            integration_id: key.integration_id.clone(),
            connection_id: key.connection_id.clone(),
        }
    }

    fn key_from_wit(key: types::RecordKey) -> RecordKey {
        RecordKey {
            integration_id: key.integration_id,
            connection_id: key.connection_id,
        }
    }

    fn store_error_from_wit(error: types::StoreError) -> StoreError {
        match error {
            types::StoreError::Validation(detail) => StoreError::Validation(detail),
            types::StoreError::Throttled(detail) => StoreError::Throttled(detail),
            types::StoreError::NotFound(detail) => StoreError::NotFound(detail),
            types::StoreError::Unavailable(detail) => StoreError::Unavailable(detail),
            types::StoreError::Other(detail) => StoreError::Other(detail),
        }
    }

    fn rejection_to_wit(rejection: Rejection) -> types::TokenRejection {
        use types::TokenRejection as T;
        match rejection {
            Rejection::Missing => T::Missing,
            Rejection::TooLarge => T::TooLarge,
            Rejection::Malformed => T::Malformed,
            Rejection::UnsupportedAlgorithm => T::UnsupportedAlgorithm,
            Rejection::BadHeader => T::BadHeader,
            Rejection::UnknownKey => T::UnknownKey,
            Rejection::UnusableKey => T::UnusableKey,
            Rejection::BadSignature => T::BadSignature,
            Rejection::WrongIssuer => T::WrongIssuer,
            Rejection::WrongAudience => T::WrongAudience,
            Rejection::WrongTokenUse => T::WrongTokenUse,
            Rejection::Expired => T::Expired,
            Rejection::NotYetValid => T::NotYetValid,
            Rejection::BadClaims => T::BadClaims,
            Rejection::KeySetUnavailable => T::KeySetUnavailable,
            Rejection::Revoked => T::Revoked,
        }
    }
}
