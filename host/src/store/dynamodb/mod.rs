//! Connection records in DynamoDB, in the table layout the rest of GitGazer
//! reads (`item`); `admin` creates that table.
//!
//! Who retries what:
//! - the SDK (standard retry mode, [`SDK_MAX_ATTEMPTS`] attempts with
//!   jittered backoff) retries whole requests that fail with throttling or
//!   transient errors; when it gives up, the error is final for us too;
//! - `batches` resubmits `UnprocessedItems` (a *successful* BatchWriteItem
//!   answer that the SDK cannot see as a failure) with exponential backoff
//!   and full jitter, bounded in attempts and in total time.
//!
//! Concurrent writes share BatchWriteItem calls (`batches`: a call costs
//! about as much CPU for one item as for 25); puts and deletes queue apart.
//! Concurrent CONNECTs' revocation reads share BatchGetItem calls (`reads`).
//! Concurrent deliveries to one integration share the read of its records
//! (`records`), never one that began before they arrived.
//! A role without `dynamodb:BatchGetItem` (deployments older than that) is
//! told once in the log, and each read is then a Query, as before.
//!
//! `put_all` is all-or-nothing: when a chunk cannot be written, every chunk
//! attempted so far is deleted again before the error is returned; a delete
//! that fails too is retried in the background (`rollback`). A GSI is
//! eventually consistent: a DISCONNECT right after its CONNECT may find fewer
//! records on real DynamoDB; `expiresAt` bounds how long a missed one lives.

mod admin;
mod batches;
mod group;
mod item;
mod reads;
mod records;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, WriteRequest};

use super::rollback::{Pending, RecentUncertain, RollbackRetrier, RollbackRetry};
use super::{ConnectionRecord, ConnectionStore, RecordKey, StoreError};
use crate::retry::Backoff;
use batches::{SendBatch, SharedBatches};
use item::{
    CONNECTION_ID, INTEGRATION_ID, REVOKED_BEFORE, SUB, delete_request, key_attributes,
    put_request, record_from, revocation_item, revoked_before_of, string_attribute,
};
use reads::{Got, SendGet, SharedReads};
use records::SharedByKey;

/// BatchWriteItem's limit of requests per call.
pub const BATCH_LIMIT: usize = 25;
/// Attempts the SDK makes per request (first try included).
pub const SDK_MAX_ATTEMPTS: u32 = 3;
/// How long one attempt may take before the SDK abandons it and retries.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// How `UnprocessedItems` are resubmitted.
#[derive(Debug, Clone)]
pub struct UnprocessedRetry {
    /// Resubmissions of one batch at most.
    pub max_resubmissions: u32,
    pub backoff: Backoff,
    /// Time one batch may take, resubmissions included.
    pub total_budget: Duration,
}

impl Default for UnprocessedRetry {
    fn default() -> Self {
        Self {
            max_resubmissions: 8,
            backoff: Backoff {
                base: Duration::from_millis(25),
                max: Duration::from_millis(800),
            },
            total_budget: Duration::from_secs(5),
        }
    }
}

impl UnprocessedRetry {
    /// The wait before resubmission `resubmission` (1 for the first) of the
    /// `left` items or keys a call started at `started` left unprocessed,
    /// or the error that ends the call's retries once the budget is spent.
    fn next_wait(
        &self,
        operation: &str,
        left: usize,
        resubmission: u32,
        started: Instant,
    ) -> Result<Duration, StoreError> {
        let delay = self.backoff.delay(resubmission);
        if resubmission > self.max_resubmissions || started.elapsed() + delay > self.total_budget {
            return Err(StoreError::Throttled(format!(
                "{operation}: {left} still unprocessed after {} resubmissions",
                resubmission - 1
            )));
        }
        Ok(delay)
    }
}

#[derive(Debug, Clone)]
pub struct DynamoDbOptions {
    pub table: String,
    /// The GSI on `connectionId`.
    pub connection_id_index: String,
    /// The optional KEYS_ONLY GSI on `sub` (`evict` without
    /// `--integration` needs it; `table create --with-sub-index` makes it).
    pub sub_index: String,
    /// Region override; `None` takes the SDK's chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Items per Query page; `None` lets DynamoDB fill 1 MB pages.
    pub query_page_limit: Option<i32>,
    pub unprocessed_retry: UnprocessedRetry,
    pub rollback_retry: RollbackRetry,
}

/// Cheap to clone (the SDK client is shared): background rollbacks hold one.
#[derive(Clone)]
pub struct DynamoDbStore {
    client: Client,
    options: DynamoDbOptions,
    puts: SharedBatches<Calls>,
    deletes: SharedBatches<Calls>,
    revocations: SharedReads<Calls>,
    /// Concurrent deliveries' reads of one integration's records.
    integration_reads: SharedByKey<Result<Vec<ConnectionRecord>, StoreError>>,
    /// Set when BatchGetItem was refused (the role lacks the permission).
    batch_get_denied: Arc<AtomicBool>,
    rollbacks: RollbackRetrier,
    recent_uncertain: RecentUncertain,
}

impl DynamoDbStore {
    /// Builds the client once (standard credential chain, and
    /// `AWS_ENDPOINT_URL_DYNAMODB` for a local endpoint such as dynalite).
    pub async fn connect(options: DynamoDbOptions) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(SDK_MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(50))
                    .with_max_backoff(Duration::from_secs(1)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(1))
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(Duration::from_secs(8))
                    .build(),
            )
            // Stalled-stream protection fails a body that moves under 1 B/s
            // for 5 s; every attempt here, its small bodies included, is cut
            // at 3 s anyway (and retried), so it only added a throughput
            // check with its own timers to every request and response body
            // (about 4 % of a socket lifetime's CPU, BENCHMARKS.md).
            .stalled_stream_protection(
                aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
            );
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let config = loader.load().await;
        let client = Client::new(&config);
        let batch_get_denied = Arc::new(AtomicBool::new(false));
        let calls = Calls {
            client: client.clone(),
            table: options.table.clone(),
            batch_get_denied: batch_get_denied.clone(),
        };
        let batches = || {
            SharedBatches::new(
                calls.clone(),
                options.unprocessed_retry.clone(),
                ATTEMPT_TIMEOUT,
                group::STALLED_AFTER,
            )
        };
        Self {
            puts: batches(),
            deletes: batches(),
            revocations: SharedReads::new(
                calls.clone(),
                options.unprocessed_retry.clone(),
                group::STALLED_AFTER,
            ),
            integration_reads: SharedByKey::default(),
            batch_get_denied,
            client,
            rollbacks: RollbackRetrier::new(options.rollback_retry.clone()),
            recent_uncertain: RecentUncertain::default(),
            options,
        }
    }

    /// After a DISCONNECT's delete: if the connection's records were written
    /// by a write that outlived an attempt, within the settle time, delete
    /// them once more later (the abandoned attempt may land after us).
    fn confirm_if_uncertain(&self, keys: &[RecordKey]) {
        let Some(connection_id) = keys.first().map(|k| k.connection_id.as_str()) else {
            return;
        };
        let settle = self.options.rollback_retry.settle;
        if let Some(expires_at) = self.recent_uncertain.take(connection_id, settle) {
            tracing::info!(
                connection_id,
                "disconnect soon after an uncertain write; confirming later"
            );
            self.schedule_background_delete(keys.to_vec(), expires_at, Pending::ConfirmOnly);
        }
    }

    /// Hands keys to the background retrier.
    fn schedule_background_delete(&self, keys: Vec<RecordKey>, expires_at: u64, pending: Pending) {
        let store = self.clone();
        self.rollbacks
            .schedule(keys, expires_at, pending, move |keys| {
                let store = store.clone();
                async move { store.delete_keys(&keys).await }
            });
    }

    /// Deletes what a failed write may have stored; hands the keys to the
    /// background retrier when the delete fails, or when the write was
    /// uncertain and may still land.
    async fn roll_back_keys(&self, keys: Vec<RecordKey>, expires_at: u64, uncertain: bool) {
        let pending = match self.delete_keys(&keys).await {
            Ok(_) => {
                tracing::warn!(records = keys.len(), "write failed; rolled back");
                uncertain.then_some(Pending::ConfirmOnly)
            }
            Err(error) => {
                tracing::error!(
                    records = keys.len(),
                    %error,
                    "rollback failed; retrying in the background until the records are gone or expired"
                );
                Some(Pending::Retry { uncertain })
            }
        };
        if let Some(pending) = pending {
            self.schedule_background_delete(keys, expires_at, pending);
        }
    }

    /// Every item a Query on the table matches, over all its pages
    /// (following `LastEvaluatedKey`), each read by `read`; `query` adds the
    /// index, the key condition and the consistency.
    async fn query_all<T>(
        &self,
        query: impl Fn(QueryFluentBuilder) -> QueryFluentBuilder,
        read: impl Fn(&HashMap<String, AttributeValue>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let page = query(self.client.query().table_name(&self.options.table))
                .set_limit(self.options.query_page_limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify("Query", e))?;
            for item in page.items() {
                all.push(read(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(all),
            }
        }
    }

    /// Every record of an integration, read now (`records_of` shares it).
    async fn query_records_of(
        &self,
        integration_id: &str,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        // Strongly consistent: a record stored a moment ago is a reader
        // waiting for this event.
        let query = |query: QueryFluentBuilder| {
            query
                .consistent_read(true)
                .key_condition_expression("#i = :i")
                .expression_attribute_names("#i", INTEGRATION_ID)
                .expression_attribute_values(":i", AttributeValue::S(integration_id.to_owned()))
        };
        self.query_all(query, record_from).await
    }

    /// `revoked_before` without BatchGetItem.
    async fn revoked_before_by_query(&self, sub: &str) -> Result<Option<u64>, StoreError> {
        // A strongly consistent Query on the whole key (as `record`): one
        // item, the cost of a GetItem, with the permission every CONNECT
        // role has.
        let key = super::revocation_key(sub);
        let query = |query: QueryFluentBuilder| {
            query
                .consistent_read(true)
                .key_condition_expression("#i = :i AND #c = :c")
                .projection_expression("#r")
                .expression_attribute_names("#i", INTEGRATION_ID)
                .expression_attribute_names("#c", CONNECTION_ID)
                .expression_attribute_names("#r", REVOKED_BEFORE)
                .expression_attribute_values(":i", AttributeValue::S(key.integration_id.clone()))
                .expression_attribute_values(":c", AttributeValue::S(key.connection_id.clone()))
        };
        let found = self
            .query_all(query, |item| {
                revoked_before_of(item).ok_or_else(|| {
                    StoreError::Other(format!(
                        "Query: a revocation without a numeric {REVOKED_BEFORE}"
                    ))
                })
            })
            .await?;
        Ok(found.into_iter().next())
    }

    /// Deletes keys in chunks; returns how many were deleted.
    async fn delete_keys(&self, keys: &[RecordKey]) -> Result<u32, StoreError> {
        let keys = unique(keys.iter().cloned(), |k| k.clone());
        let mut deleted = 0u32;
        for chunk in keys.chunks(BATCH_LIMIT) {
            let requests = chunk
                .iter()
                .map(delete_request)
                .collect::<Result<Vec<_>, _>>()?;
            self.deletes.write(requests).await.result?;
            deleted += chunk.len() as u32;
        }
        Ok(deleted)
    }
}

/// The calls the queues send.
#[derive(Clone)]
struct Calls {
    client: Client,
    table: String,
    batch_get_denied: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl SendBatch for Calls {
    async fn send(&self, requests: Vec<WriteRequest>) -> Result<Vec<WriteRequest>, StoreError> {
        let output = self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await
            .map_err(|e| classify("BatchWriteItem", e))?;
        Ok(output
            .unprocessed_items
            .and_then(|mut items| items.remove(&self.table))
            .unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl SendGet for Calls {
    async fn get(&self, subs: Vec<String>) -> Result<Got, StoreError> {
        let keys = subs
            .iter()
            .map(|sub| key_attributes(&super::revocation_key(sub)))
            .collect();
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .projection_expression("#i, #r")
            .expression_attribute_names("#i", INTEGRATION_ID)
            .expression_attribute_names("#r", REVOKED_BEFORE)
            .build()
            .map_err(|e| StoreError::Other(format!("building a BatchGetItem: {e}")))?;
        let sent = self
            .client
            .batch_get_item()
            .request_items(&self.table, request)
            .send()
            .await;
        let output = match sent {
            Ok(output) => output,
            Err(error) => {
                if let SdkError::ServiceError(service) = &error
                    && service.err().code() == Some("AccessDeniedException")
                    && !self.batch_get_denied.swap(true, Ordering::SeqCst)
                {
                    tracing::warn!(
                        table = %self.table,
                        "dynamodb:BatchGetItem is not allowed: each CONNECT now reads its revocation with a Query of its own; grant it to share those reads"
                    );
                }
                return Err(classify("BatchGetItem", error));
            }
        };
        // A revocation's key is `revoked {sub}` in both halves.
        let sub_of = |item: &HashMap<String, AttributeValue>| {
            string_attribute(item, INTEGRATION_ID).ok().and_then(|key| {
                key.strip_prefix(super::REVOCATION_PREFIX)
                    .map(str::to_owned)
            })
        };
        let mut got = Got::default();
        let items = output.responses.and_then(|mut all| all.remove(&self.table));
        for item in items.unwrap_or_default() {
            let (Some(sub), Some(before)) = (sub_of(&item), revoked_before_of(&item)) else {
                return Err(StoreError::Other(format!(
                    "BatchGetItem: a revocation without its key or a numeric {REVOKED_BEFORE}"
                )));
            };
            got.revoked_before.insert(sub, before);
        }
        let unprocessed = output
            .unprocessed_keys
            .and_then(|mut all| all.remove(&self.table));
        got.unprocessed = unprocessed
            .map(|keys| keys.keys.iter().filter_map(sub_of).collect())
            .unwrap_or_default();
        Ok(got)
    }
}

#[async_trait::async_trait]
impl ConnectionStore for DynamoDbStore {
    async fn put_all(&self, records: &[ConnectionRecord]) -> Result<(), StoreError> {
        // BatchWriteItem refuses duplicate keys in one call.
        let records = unique(records.iter().cloned(), ConnectionRecord::key);
        let mut attempted: Vec<RecordKey> = Vec::with_capacity(records.len());
        let mut outlived_an_attempt = false;
        for chunk in records.chunks(BATCH_LIMIT) {
            attempted.extend(chunk.iter().map(ConnectionRecord::key));
            let requests = chunk
                .iter()
                .map(put_request)
                .collect::<Result<Vec<_>, _>>()?;
            let written = self.puts.write(requests).await;
            outlived_an_attempt |= written.outlived_an_attempt;
            if let Err(error) = written.result {
                // All or nothing: remove what this call may have written. A
                // timeout or a lost connection leaves the write's outcome
                // unknown: it may still land, so the rollback is confirmed.
                let uncertain = outlived_an_attempt
                    || matches!(error, StoreError::Unavailable(_) | StoreError::Other(_));
                let expires_at = records.iter().map(|r| r.expires_at).max().unwrap_or(0);
                self.roll_back_keys(attempted, expires_at, uncertain).await;
                return Err(error);
            }
        }
        if outlived_an_attempt && let Some(record) = records.first() {
            let settle = self.options.rollback_retry.settle;
            self.recent_uncertain
                .remember(&record.connection_id, record.expires_at, settle);
        }
        Ok(())
    }

    async fn keys_of(&self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
        // No ConsistentRead: a GSI refuses it (eventually consistent).
        let query = |query: QueryFluentBuilder| {
            query
                .index_name(&self.options.connection_id_index)
                .key_condition_expression("#c = :c")
                .expression_attribute_names("#c", CONNECTION_ID)
                .expression_attribute_values(":c", AttributeValue::S(connection_id.to_owned()))
        };
        self.query_all(query, |item| {
            Ok(RecordKey {
                integration_id: string_attribute(item, INTEGRATION_ID)?,
                connection_id: string_attribute(item, CONNECTION_ID)?,
            })
        })
        .await
    }

    async fn records_of(&self, integration_id: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        // Shared with the deliveries that wait with this one (`records`).
        let store = self.clone();
        let read = move |integration_id: String| {
            let store = store.clone();
            async move { store.query_records_of(&integration_id).await }
        };
        self.integration_reads
            .read(integration_id, read)
            .await
            .unwrap_or_else(|| {
                Err(StoreError::Other(
                    "Query: the shared read of the records ended without an answer".to_owned(),
                ))
            })
    }

    async fn record(&self, key: &RecordKey) -> Result<Option<ConnectionRecord>, StoreError> {
        // A Query on the whole key (strongly consistent), so the paging and
        // error mapping are those of every other read.
        let query = |query: QueryFluentBuilder| {
            query
                .consistent_read(true)
                .key_condition_expression("#i = :i AND #c = :c")
                .expression_attribute_names("#i", INTEGRATION_ID)
                .expression_attribute_names("#c", CONNECTION_ID)
                .expression_attribute_values(":i", AttributeValue::S(key.integration_id.clone()))
                .expression_attribute_values(":c", AttributeValue::S(key.connection_id.clone()))
        };
        Ok(self.query_all(query, record_from).await?.into_iter().next())
    }

    async fn revoked_before(&self, sub: &str) -> Result<Option<u64>, StoreError> {
        if !self.batch_get_denied.load(Ordering::SeqCst) {
            let result = self.revocations.revoked_before(sub).await;
            if result.is_ok() || !self.batch_get_denied.load(Ordering::SeqCst) {
                return result;
            }
        }
        self.revoked_before_by_query(sub).await
    }

    async fn revoke(&self, sub: &str, before: u64, expires_at: u64) -> Result<(), StoreError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.options.table)
            .set_item(Some(revocation_item(sub, before, expires_at)))
            // Never move a revocation earlier (two operators, two clocks).
            .condition_expression("attribute_not_exists(#r) OR #r <= :r")
            .expression_attribute_names("#r", REVOKED_BEFORE)
            .expression_attribute_values(":r", AttributeValue::N(before.to_string()))
            .send()
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(service))
                if service.err().code() == Some("ConditionalCheckFailedException") =>
            {
                Ok(())
            }
            Err(error) => Err(classify("PutItem", error)),
        }
    }

    async fn records_of_user(
        &self,
        integration_id: &str,
        sub: &str,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        // The integration's partition, filtered: a filter saves transfer,
        // not read capacity.
        let query = |query: QueryFluentBuilder| {
            query
                .consistent_read(true)
                .key_condition_expression("#i = :i")
                .filter_expression("#s = :s")
                .expression_attribute_names("#i", INTEGRATION_ID)
                .expression_attribute_names("#s", SUB)
                .expression_attribute_values(":i", AttributeValue::S(integration_id.to_owned()))
                .expression_attribute_values(":s", AttributeValue::S(sub.to_owned()))
        };
        self.query_all(query, record_from).await
    }

    async fn records_of_sub(&self, sub: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        // The index holds keys only; each record is then read whole (its
        // endpoint says where to close it). One gone meanwhile is skipped.
        let query = |query: QueryFluentBuilder| {
            query
                .index_name(&self.options.sub_index)
                .key_condition_expression("#s = :s")
                .expression_attribute_names("#s", SUB)
                .expression_attribute_values(":s", AttributeValue::S(sub.to_owned()))
        };
        let keys = self
            .query_all(query, |item| {
                Ok(RecordKey {
                    integration_id: string_attribute(item, INTEGRATION_ID)?,
                    connection_id: string_attribute(item, CONNECTION_ID)?,
                })
            })
            .await?;
        let mut records = Vec::with_capacity(keys.len());
        for key in &keys {
            if let Some(record) = self.record(key).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn delete(&self, keys: &[RecordKey]) -> Result<u32, StoreError> {
        let deleted = self.delete_keys(keys).await?;
        self.confirm_if_uncertain(keys);
        Ok(deleted)
    }

    async fn roll_back(&self, keys: &[RecordKey], expires_at: u64) {
        self.roll_back_keys(keys.to_vec(), expires_at, false).await;
    }

    fn pending_rollbacks(&self) -> usize {
        self.rollbacks.pending_keys()
    }

    fn describe(&self) -> String {
        format!("dynamodb:{}", self.options.table)
    }
}

/// Keeps the first of each key, in order.
fn unique<T, K: std::hash::Hash + Eq>(
    items: impl Iterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(key(item))).collect()
}

/// Maps an SDK error to the store error classes of the WIT.
fn classify<E, R>(operation: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = format!("{operation}: {}", DisplayErrorContext(&error));
    match &error {
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ValidationException" | "SerializationException") => {
                StoreError::Validation(detail)
            }
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded",
            ) => StoreError::Throttled(detail),
            Some("ResourceNotFoundException") => StoreError::NotFound(detail),
            Some("InternalServerError" | "ServiceUnavailable") => StoreError::Unavailable(detail),
            _ => StoreError::Other(detail),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => StoreError::Unavailable(detail),
        _ => StoreError::Other(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error code `classify` names, and the error kinds that carry
    /// no code, with the class each must map to (the class decides the
    /// status: validation 400, throttled 429, not found 404, else 500).
    #[test]
    fn classify_maps_every_code_and_error_kind_to_its_class() {
        use aws_sdk_dynamodb::error::{ConnectorError, ErrorMetadata};
        use aws_sdk_dynamodb::operation::query::QueryError;

        fn class(error: &StoreError) -> &'static str {
            match error {
                StoreError::Validation(_) => "validation",
                StoreError::Throttled(_) => "throttled",
                StoreError::NotFound(_) => "not-found",
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Other(_) => "other",
            }
        }
        let service = |code: Option<&str>| {
            let mut meta = ErrorMetadata::builder().message("detail from the service");
            if let Some(code) = code {
                meta = meta.code(code);
            }
            SdkError::<QueryError, ()>::service_error(QueryError::generic(meta.build()), ())
        };
        let cases: Vec<(&str, SdkError<QueryError, ()>, &str)> = vec![
            (
                "validation",
                service(Some("ValidationException")),
                "validation",
            ),
            (
                "serialization",
                service(Some("SerializationException")),
                "validation",
            ),
            (
                "provisioned throughput",
                service(Some("ProvisionedThroughputExceededException")),
                "throttled",
            ),
            (
                "throttling",
                service(Some("ThrottlingException")),
                "throttled",
            ),
            (
                "request limit",
                service(Some("RequestLimitExceeded")),
                "throttled",
            ),
            (
                "no table",
                service(Some("ResourceNotFoundException")),
                "not-found",
            ),
            (
                "internal",
                service(Some("InternalServerError")),
                "unavailable",
            ),
            (
                "unavailable",
                service(Some("ServiceUnavailable")),
                "unavailable",
            ),
            (
                "another code",
                service(Some("ConditionalCheckFailedException")),
                "other",
            ),
            ("no code", service(None), "other"),
            (
                "timeout",
                SdkError::timeout_error("attempt timed out"),
                "unavailable",
            ),
            (
                "dispatch",
                SdkError::dispatch_failure(ConnectorError::io("connection refused".into())),
                "unavailable",
            ),
            (
                "construction",
                SdkError::construction_failure("no region"),
                "other",
            ),
            (
                "response",
                SdkError::response_error("truncated body", ()),
                "other",
            ),
        ];
        for (name, error, expected) in cases {
            let mapped = classify("Query", error);
            assert_eq!(class(&mapped), expected, "{name}: {mapped}");
            assert!(mapped.to_string().contains("Query"), "{name}: {mapped}");
        }
    }

    #[test]
    fn unique_keeps_the_first_of_each_key() {
        let items = vec![("a", 1), ("b", 2), ("a", 3)];
        assert_eq!(unique(items.into_iter(), |i| i.0), vec![("a", 1), ("b", 2)]);
    }
}
