//! Metrics: every name, label and unit lives here, recorded through the
//! `metrics` facade (a well-kept crate with a Prometheus exporter; the call
//! sites stay one line and cost nothing when no recorder is installed, as in
//! the one-shot commands). `serve` renders them for Prometheus on the
//! management listener (`prometheus`); the Lambda entry writes one CloudWatch
//! EMF line per invocation (`emf`).
//!
//! No label takes a value from a client: statuses, rejection classes,
//! operations and reasons are fixed sets, so cardinality stays bounded.

pub mod emf;
pub mod prometheus;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};

use crate::clock::unix_now_millis;
use crate::wit::types::TokenRejection;

pub const CONNECTS: &str = "gitgazer_ws_connects_total";
pub const DISCONNECTS: &str = "gitgazer_ws_disconnects_total";
pub const REFRESHES: &str = "gitgazer_ws_refreshes_total";
pub const RECORDS_WRITTEN: &str = "gitgazer_ws_records_written_total";
pub const RECORDS_DELETED: &str = "gitgazer_ws_records_deleted_total";
pub const POLICY_DURATION: &str = "gitgazer_ws_policy_call_duration_seconds";
pub const POLICY_FAILURES: &str = "gitgazer_ws_policy_failures_total";
pub const POLICY_INSTANCES: &str = "gitgazer_ws_policy_instances_in_use";
pub const KEY_SET_FETCHES: &str = "gitgazer_ws_key_set_fetches_total";
pub const KEY_SET_AGE: &str = "gitgazer_ws_key_set_age_seconds";
pub const KEY_SET_KEYS: &str = "gitgazer_ws_key_set_keys";
pub const STORE_CALLS: &str = "gitgazer_ws_store_calls_total";
pub const STORE_DURATION: &str = "gitgazer_ws_store_call_duration_seconds";
pub const STORE_RESUBMITTED: &str = "gitgazer_ws_store_unprocessed_resubmitted_total";
pub const STORE_PENDING_ROLLBACKS: &str = "gitgazer_ws_store_pending_rollbacks";
pub const SOCKETS_OPEN: &str = "gitgazer_ws_sockets_open";
pub const SOCKETS_OPENED: &str = "gitgazer_ws_sockets_opened_total";
pub const SOCKETS_CLOSED: &str = "gitgazer_ws_sockets_closed_total";
pub const SOCKET_QUEUED_BYTES: &str = "gitgazer_ws_socket_send_queue_bytes";
pub const DELIVERIES: &str = "gitgazer_ws_deliveries_total";
pub const DELIVERY_DURATION: &str = "gitgazer_ws_delivery_duration_seconds";

/// Says what each metric means, once, for the exporter's `# HELP` lines.
pub fn describe() {
    describe_counter!(
        CONNECTS,
        "CONNECT decisions by status and token rejection class (none: not a token refusal)"
    );
    describe_counter!(DISCONNECTS, "DISCONNECT decisions by status");
    describe_counter!(
        REFRESHES,
        "in-band refreshes by outcome: 1000 refreshed, else the close code"
    );
    describe_counter!(RECORDS_WRITTEN, "connection records stored");
    describe_counter!(
        RECORDS_DELETED,
        "connection records deleted (DISCONNECTs, rollbacks, gone connections)"
    );
    describe_histogram!(
        POLICY_DURATION,
        Unit::Seconds,
        "one policy call, admission to answer, by export"
    );
    describe_counter!(
        POLICY_FAILURES,
        "policy calls answered 500 by the host: trap, deadline (epoch interruption) or instantiate"
    );
    describe_gauge!(POLICY_INSTANCES, "policy instances running now");
    describe_counter!(KEY_SET_FETCHES, "key set fetches by outcome");
    describe_gauge!(
        KEY_SET_AGE,
        Unit::Seconds,
        "age of the key set in use (absent before the first good fetch)"
    );
    describe_gauge!(KEY_SET_KEYS, "keys in the key set in use");
    describe_counter!(STORE_CALLS, "store calls by operation and outcome");
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "one store call, by operation"
    );
    describe_counter!(
        STORE_RESUBMITTED,
        "items DynamoDB returned unprocessed and were resubmitted"
    );
    describe_gauge!(
        STORE_PENDING_ROLLBACKS,
        "records of failed CONNECTs still being removed in the background"
    );
    describe_gauge!(SOCKETS_OPEN, "self-hosted WebSockets open now");
    describe_counter!(SOCKETS_OPENED, "self-hosted WebSockets opened");
    describe_counter!(SOCKETS_CLOSED, "self-hosted WebSockets closed, by reason");
    describe_gauge!(
        SOCKET_QUEUED_BYTES,
        Unit::Bytes,
        "bytes waiting in every socket's send queue"
    );
    describe_counter!(DELIVERIES, "messages posted to connections, by outcome");
    describe_histogram!(
        DELIVERY_DURATION,
        Unit::Seconds,
        "one post to one connection"
    );
}

/// Creates the counters of the fixed label sets at zero, so `rate()` and
/// `increase()` see the first event (Prometheus's advice) and a scrape lists
/// every name from the start. Rejection classes appear when first seen.
pub fn initialize() {
    for status in ["200", "400", "401", "429", "500", "503"] {
        counter!(CONNECTS, "status" => status, "rejection" => "none").absolute(0);
    }
    for status in ["200", "400", "429", "500"] {
        counter!(DISCONNECTS, "status" => status).absolute(0);
    }
    for code in REFRESH_CODES {
        counter!(REFRESHES, "code" => code).absolute(0);
    }
    counter!(RECORDS_WRITTEN).absolute(0);
    counter!(RECORDS_DELETED).absolute(0);
    counter!(STORE_RESUBMITTED).absolute(0);
    counter!(SOCKETS_OPENED).absolute(0);
    for export in EXPORTS {
        for kind in [
            PolicyFailure::Trap,
            PolicyFailure::Deadline,
            PolicyFailure::Instantiate,
        ] {
            counter!(POLICY_FAILURES, "export" => export, "kind" => kind.label()).absolute(0);
        }
    }
    for outcome in KEY_SET_OUTCOMES {
        counter!(KEY_SET_FETCHES, "outcome" => outcome).absolute(0);
    }
    for operation in STORE_OPERATIONS {
        for outcome in STORE_OUTCOMES {
            counter!(STORE_CALLS, "operation" => operation, "outcome" => outcome).absolute(0);
        }
    }
    for reason in CLOSE_REASONS {
        counter!(SOCKETS_CLOSED, "reason" => reason).absolute(0);
    }
    for outcome in DELIVERY_OUTCOMES {
        counter!(DELIVERIES, "outcome" => outcome).absolute(0);
    }
}

/// The label values, each a fixed set.
pub const EXPORTS: [&str; 3] = ["handle-connect", "handle-disconnect", "handle-refresh"];
pub const REFRESH_CODES: [&str; 6] = ["1000", "1011", "4001", "4003", "4029", "other"];
pub const KEY_SET_OUTCOMES: [&str; 5] = ["ok", "unreachable", "http_error", "too_large", "refused"];
pub const STORE_OPERATIONS: [&str; 9] = [
    "put_all",
    "keys_of",
    "delete",
    "records_of",
    "record",
    "revoked_before",
    "revoke",
    "records_of_user",
    "records_of_sub",
];
pub const STORE_OUTCOMES: [&str; 6] = [
    "ok",
    "validation",
    "throttled",
    "not_found",
    "unavailable",
    "other",
];
pub const CLOSE_REASONS: [&str; 14] = [
    "client",
    "lost",
    "idle",
    "max_age",
    "ping_timeout",
    "deleted",
    "shutdown",
    "slow_reader",
    "token_expired",
    "revoked",
    "refresh_refused",
    "rate_limited",
    "too_big",
    "other",
];
pub const DELIVERY_OUTCOMES: [&str; 5] = ["delivered", "gone", "failed", "expired", "expired_auth"];

/// Set once a process-wide recorder is installed (`serve`, Lambda): from
/// then on the hot paths below register each series once and keep its
/// handle, instead of a registry lookup per event (which cost about 7 % of
/// a CONNECT+DISCONNECT pair). Without it (tests with a local recorder)
/// every event looks its series up.
static INSTALLED: AtomicBool = AtomicBool::new(false);

pub(crate) fn recorder_installed() {
    INSTALLED.store(true, Ordering::Release);
}

/// The handle in `slot`, registered on first use once a recorder is
/// installed; before that, a fresh lookup.
fn cached<T: Clone>(slot: &OnceLock<T>, register: impl FnOnce() -> T) -> T {
    if INSTALLED.load(Ordering::Acquire) {
        slot.get_or_init(register).clone()
    } else {
        register()
    }
}

/// One slot per status label and rejection class (plus `none`).
const REJECTION_SLOTS: usize = 17;
static CONNECT_SLOTS: [OnceLock<Counter>; STATUSES.len() * REJECTION_SLOTS] =
    [const { OnceLock::new() }; STATUSES.len() * REJECTION_SLOTS];
static DISCONNECT_SLOTS: [OnceLock<Counter>; STATUSES.len()] =
    [const { OnceLock::new() }; STATUSES.len()];
static POLICY_SLOTS: [OnceLock<Histogram>; EXPORTS.len()] =
    [const { OnceLock::new() }; EXPORTS.len()];
static STORE_CALL_SLOTS: [OnceLock<Counter>; STORE_OPERATIONS.len() * STORE_OUTCOMES.len()] =
    [const { OnceLock::new() }; STORE_OPERATIONS.len() * STORE_OUTCOMES.len()];
static STORE_DURATION_SLOTS: [OnceLock<Histogram>; STORE_OPERATIONS.len()] =
    [const { OnceLock::new() }; STORE_OPERATIONS.len()];
static RECORDS_WRITTEN_SLOT: OnceLock<Counter> = OnceLock::new();
static RECORDS_DELETED_SLOT: OnceLock<Counter> = OnceLock::new();

fn index_of(set: &[&str], value: &str) -> usize {
    set.iter()
        .position(|v| *v == value)
        .unwrap_or(set.len() - 1)
}

/// A CONNECT's decision.
pub fn connect(status: u16, rejection: Option<TokenRejection>) {
    let status = status_index(status);
    let class = rejection.map_or(0, |r| r as usize + 1);
    let register = || {
        let rejection = rejection.as_ref().map_or("none", TokenRejection::name);
        counter!(CONNECTS, "status" => STATUSES[status], "rejection" => rejection)
    };
    match CONNECT_SLOTS.get(status * REJECTION_SLOTS + class) {
        Some(slot) if class < REJECTION_SLOTS => cached(slot, register).increment(1),
        _ => register().increment(1),
    }
}

/// A DISCONNECT's decision.
pub fn disconnect(status: u16) {
    let status = status_index(status);
    cached(
        &DISCONNECT_SLOTS[status],
        || counter!(DISCONNECTS, "status" => STATUSES[status]),
    )
    .increment(1);
}

/// An in-band refresh's outcome: 1000, or the code its socket closed with.
pub fn refresh(code: u16) {
    let code = match code {
        1000 => "1000",
        1011 => "1011",
        4001 => "4001",
        4003 => "4003",
        4029 => "4029",
        _ => "other",
    };
    counter!(REFRESHES, "code" => code).increment(1);
}

/// A policy call: its export (`handle-connect`, ...), time, and how it ended.
pub fn policy_call(export: &'static str, elapsed: Duration, failure: Option<PolicyFailure>) {
    let register = || histogram!(POLICY_DURATION, "export" => export);
    match EXPORTS.iter().position(|e| *e == export) {
        Some(i) => cached(&POLICY_SLOTS[i], register),
        None => register(),
    }
    .record(elapsed.as_secs_f64());
    if let Some(failure) = failure {
        counter!(POLICY_FAILURES, "export" => export, "kind" => failure.label()).increment(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyFailure {
    Trap,
    Deadline,
    Instantiate,
}

impl PolicyFailure {
    pub fn label(self) -> &'static str {
        match self {
            PolicyFailure::Trap => "trap",
            PolicyFailure::Deadline => "deadline",
            PolicyFailure::Instantiate => "instantiate",
        }
    }
}

/// A key set fetch's outcome: `ok`, `unreachable`, `http_error`,
/// `too_large`, `refused` (a document the policy does not accept).
pub fn key_set_fetch(outcome: &'static str) {
    counter!(KEY_SET_FETCHES, "outcome" => outcome).increment(1);
}

/// When the key set in use was fetched (ms since the epoch; 0: none yet).
static KEY_SET_FETCHED_AT_MS: AtomicU64 = AtomicU64::new(0);

/// A good key set is now in use.
pub fn key_set_loaded(keys: usize) {
    KEY_SET_FETCHED_AT_MS.store(unix_now_millis(), Ordering::Relaxed);
    gauge!(KEY_SET_KEYS).set(keys as f64);
}

/// Age of the key set in use; `None` before the first good one.
pub fn key_set_age() -> Option<Duration> {
    let at = KEY_SET_FETCHED_AT_MS.load(Ordering::Relaxed);
    (at != 0).then(|| Duration::from_millis(unix_now_millis().saturating_sub(at)))
}

/// A store call: operation (`put_all`, `keys_of`, `delete`, `records_of`),
/// outcome (`ok` or the store error's kind) and time.
pub fn store_call(operation: &'static str, outcome: &'static str, elapsed: Duration) {
    let op = index_of(&STORE_OPERATIONS, operation);
    let out = index_of(&STORE_OUTCOMES, outcome);
    cached(&STORE_CALL_SLOTS[op * STORE_OUTCOMES.len() + out], || {
        counter!(STORE_CALLS, "operation" => STORE_OPERATIONS[op], "outcome" => STORE_OUTCOMES[out])
    })
    .increment(1);
    cached(
        &STORE_DURATION_SLOTS[op],
        || histogram!(STORE_DURATION, "operation" => STORE_OPERATIONS[op]),
    )
    .record(elapsed.as_secs_f64());
}

pub fn records_written(count: usize) {
    cached(&RECORDS_WRITTEN_SLOT, || counter!(RECORDS_WRITTEN)).increment(count as u64);
}

pub fn records_deleted(count: u32) {
    cached(&RECORDS_DELETED_SLOT, || counter!(RECORDS_DELETED)).increment(u64::from(count));
}

pub fn unprocessed_resubmitted(items: usize) {
    counter!(STORE_RESUBMITTED).increment(items as u64);
}

pub fn socket_opened() {
    counter!(SOCKETS_OPENED).increment(1);
}

/// A socket closed: `client`, `lost`, `idle`, `max_age`, `ping_timeout`,
/// `deleted`, `shutdown`, `slow_reader`.
pub fn socket_closed(reason: &'static str) {
    counter!(SOCKETS_CLOSED, "reason" => reason).increment(1);
}

/// One post to one connection: `delivered`, `gone`, `failed`, `expired`.
pub fn delivery(outcome: &'static str, elapsed: Option<Duration>) {
    counter!(DELIVERIES, "outcome" => outcome).increment(1);
    if let Some(elapsed) = elapsed {
        histogram!(DELIVERY_DURATION).record(elapsed.as_secs_f64());
    }
}

/// What a scrape reads from the running parts rather than from events.
pub struct Gauges {
    pub sockets_open: usize,
    pub socket_queued_bytes: usize,
    pub pending_rollbacks: usize,
    pub policy_instances: usize,
}

pub fn set_gauges(gauges: &Gauges) {
    gauge!(SOCKETS_OPEN).set(gauges.sockets_open as f64);
    gauge!(SOCKET_QUEUED_BYTES).set(gauges.socket_queued_bytes as f64);
    gauge!(STORE_PENDING_ROLLBACKS).set(gauges.pending_rollbacks as f64);
    gauge!(POLICY_INSTANCES).set(gauges.policy_instances as f64);
    if let Some(age) = key_set_age() {
        gauge!(KEY_SET_AGE).set(age.as_secs_f64());
    }
}

/// Statuses are a fixed set of labels: a status the policy could answer
/// but we do not expect is `other` (the last).
const STATUSES: [&str; 12] = [
    "200", "400", "401", "403", "404", "409", "410", "413", "429", "500", "503", "other",
];

fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        400 => 1,
        401 => 2,
        403 => 3,
        404 => 4,
        409 => 5,
        410 => 6,
        413 => 7,
        429 => 8,
        500 => 9,
        503 => 10,
        _ => 11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_has_its_own_label_and_the_rest_are_other() {
        for (i, label) in STATUSES.iter().enumerate() {
            if let Ok(status) = label.parse::<u16>() {
                assert_eq!(status_index(status), i);
            }
        }
        assert_eq!(STATUSES[status_index(418)], "other");
    }

    #[test]
    fn every_rejection_class_has_a_connect_slot() {
        // The WIT's last class; a new one must fit too (or grow the slots).
        let last = TokenRejection::Revoked as usize;
        assert!(last + 1 < REJECTION_SLOTS, "{last}");
    }
}
