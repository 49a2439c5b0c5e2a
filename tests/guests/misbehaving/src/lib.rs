//! A guest of the `ws-handler` world that misbehaves when asked to, through
//! the CONNECT's connection id. The host must answer 500 within its limits
//! and go on serving; any other connection id answers 200 with how many
//! calls this instance has seen (always 1 if instances are never reused).
//!
//! Only meaningful as wasm: natively (a workspace-wide build) it is empty,
//! since the component's export names do not link as a native library.
#![cfg(target_arch = "wasm32")]
// Like the policy: no std, so the component imports the world only.
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use gitgazer_ws_guest_runtime as _;

mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "ws-handler" });
}

use core::sync::atomic::{AtomicU32, Ordering};

use bindings::exports::gitgazer::ws_handler::handler::Guest;
use bindings::gitgazer::ws_handler::types::{
    ConnectRequest, ConnectionRecord, DisconnectRequest, Identity, RefreshRequest, RefreshResponse,
    Response, Settings, TokenRejection,
};
use bindings::gitgazer::ws_handler::{connections, log};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Misbehaving;

impl Guest for Misbehaving {
    fn handle_connect(req: ConnectRequest) -> Response {
        let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        match req.connection_id.as_str() {
            "loop" => loop {
                core::hint::black_box(calls);
            },
            "trap" => panic!("asked to trap"),
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    core::hint::black_box(&hoard);
                }
            }
            "recurse" => Response {
                status: 200,
                body: recurse(u64::MAX).to_string(),
                rejection: None,
            },
            "log-flood" => {
                for i in 0..100_000 {
                    log::log(log::Level::Info, &format!("flood line {i}"));
                }
                Response {
                    status: 200,
                    body: "flooded".into(),
                    rejection: None,
                }
            }
            "store-then-trap" => {
                let record = ConnectionRecord {
                    integration_id: "doomed".into(),
                    connection_id: req.connection_id.clone(),
                    sub: "test".into(),
                    connected_at: "1970-01-01T00:00:00Z".into(),
                    expires_at: req.now + 60,
                    endpoint: None,
                    auth_expires_at: None,
                    auth_issued_at: None,
                };
                connections::put_all(&[record]).expect("store accepts the record");
                panic!("trapping after storing a record");
            }
            _ => Response {
                status: 200,
                body: format!("calls in this instance: {calls}"),
                rejection: None,
            },
        }
    }

    fn handle_disconnect(_req: DisconnectRequest) -> Response {
        Response {
            status: 200,
            body: "ok".into(),
            rejection: None,
        }
    }

    fn handle_refresh(_req: RefreshRequest) -> RefreshResponse {
        RefreshResponse {
            code: 1011,
            body: "not here".into(),
            rejection: None,
            expires_at: None,
        }
    }

    fn verify_token(
        _token: String,
        _now: u64,
        _settings: Settings,
    ) -> Result<Identity, TokenRejection> {
        Err(TokenRejection::Malformed)
    }
}

/// Deep recursion the optimiser cannot turn into a loop.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 16]);
    if depth == 0 {
        return frame[0];
    }
    recurse(depth - 1).wrapping_add(frame[3])
}

bindings::export!(Misbehaving with_types_in bindings);
