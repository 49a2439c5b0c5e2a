//! Connection records in DynamoDB, in the table layout the rest of GitGazer
//! reads: hash key `integrationId` (S), range key `connectionId` (S), a
//! KEYS_ONLY GSI on `connectionId`, and `sub`, `connectedAt`, `expiresAt`
//! (N, the TTL attribute) on each item.
//!
//! Who retries what:
//! - the SDK (standard retry mode, [`SDK_MAX_ATTEMPTS`] attempts with
//!   jittered backoff) retries whole requests that fail with throttling or
//!   transient errors; when it gives up, the error is final for us too;
//! - this module resubmits `UnprocessedItems` (a *successful* BatchWriteItem
//!   answer that the SDK cannot see as a failure) with exponential backoff
//!   and full jitter, bounded in attempts and in total time.
//!
//! `put_all` is all-or-nothing: when a chunk cannot be written, every chunk
//! attempted so far is deleted again before the error is returned; a delete
//! that fails too is retried in the background (`rollback`). A GSI is
//! eventually consistent: a DISCONNECT right after its CONNECT may find fewer
//! records on real DynamoDB; `expiresAt` bounds how long a missed one lives.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, PutRequest, ScalarAttributeType,
    TableStatus, TimeToLiveSpecification, WriteRequest,
};

use super::rollback::{Pending, RollbackRetrier, RollbackRetry};
use super::{ConnectionRecord, ConnectionStore, RecordKey, StoreError};

/// BatchWriteItem's limit of requests per call.
pub const BATCH_LIMIT: usize = 25;
/// Attempts the SDK makes per request (first try included).
pub const SDK_MAX_ATTEMPTS: u32 = 3;
/// How long one attempt may take before the SDK abandons it and retries.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections whose write may have a straggler, remembered at most.
const MAX_RECENT_UNCERTAIN: usize = 10_000;

const INTEGRATION_ID: &str = "integrationId";
const CONNECTION_ID: &str = "connectionId";
const SUB: &str = "sub";
const CONNECTED_AT: &str = "connectedAt";
const EXPIRES_AT: &str = "expiresAt";

/// How `UnprocessedItems` are resubmitted.
#[derive(Debug, Clone)]
pub struct UnprocessedRetry {
    /// Resubmissions of one batch at most.
    pub max_resubmissions: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Time one batch may take, resubmissions included.
    pub total_budget: Duration,
}

impl Default for UnprocessedRetry {
    fn default() -> Self {
        Self {
            max_resubmissions: 8,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_millis(800),
            total_budget: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DynamoDbOptions {
    pub table: String,
    /// The GSI on `connectionId`.
    pub connection_id_index: String,
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
    rollbacks: RollbackRetrier,
    /// Connections stored by a write that outlived an attempt: an abandoned
    /// attempt may still land after a quick DISCONNECT deleted the records,
    /// so that DISCONNECT is confirmed after the settle time.
    /// Value: when written, and the records' `expiresAt`.
    recent_uncertain: Arc<Mutex<HashMap<String, (Instant, u64)>>>,
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
            );
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let config = loader.load().await;
        Self {
            client: Client::new(&config),
            rollbacks: RollbackRetrier::new(options.rollback_retry.clone()),
            recent_uncertain: Arc::default(),
            options,
        }
    }

    /// Creates the table with its GSI (on-demand billing), waits until it is
    /// active, and enables TTL on `expiresAt`. An existing table is kept.
    /// Endpoints without UpdateTimeToLive (dynalite) get a warning.
    pub async fn create_table(&self) -> anyhow::Result<()> {
        let table = &self.options.table;
        let key = |name: &str, key_type| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
        };
        let string_attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(&self.options.connection_id_index)
            .key_schema(key(CONNECTION_ID, KeyType::Hash)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()?;
        let created = self
            .client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute(INTEGRATION_ID)?)
            .attribute_definitions(string_attribute(CONNECTION_ID)?)
            .key_schema(key(INTEGRATION_ID, KeyType::Hash)?)
            .key_schema(key(CONNECTION_ID, KeyType::Range)?)
            .global_secondary_indexes(index)
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table, "table created"),
            Err(e) if e.code() == Some("ResourceInUseException") => {
                tracing::info!(table, "table exists; keeping it")
            }
            Err(e) => anyhow::bail!("creating table {table}: {}", DisplayErrorContext(&e)),
        }
        self.wait_until_active().await?;

        let ttl = self
            .client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(EXPIRES_AT)
                    .build()?,
            )
            .send()
            .await;
        match ttl {
            Ok(_) => tracing::info!(table, attribute = EXPIRES_AT, "TTL enabled"),
            Err(e) if e.code() == Some("UnknownOperationException") => tracing::warn!(
                table,
                "TTL not supported by this endpoint (UpdateTimeToLive unknown); records expire only on real DynamoDB"
            ),
            Err(e) if e.message().is_some_and(|m| m.contains("already enabled")) => {
                tracing::info!(table, "TTL already enabled")
            }
            Err(e) => anyhow::bail!("enabling TTL on {table}: {}", DisplayErrorContext(&e)),
        }
        Ok(())
    }

    async fn wait_until_active(&self) -> anyhow::Result<()> {
        let table = &self.options.table;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let described = self.client.describe_table().table_name(table).send().await;
            let active = match &described {
                Ok(out) => {
                    let table_active =
                        out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active);
                    let indexes_active = out
                        .table()
                        .map(|t| t.global_secondary_indexes())
                        .unwrap_or_default()
                        .iter()
                        .all(|i| {
                            i.index_status() == Some(&aws_sdk_dynamodb::types::IndexStatus::Active)
                        });
                    table_active && indexes_active
                }
                // Briefly invisible right after CreateTable on some endpoints.
                Err(e) if e.code() == Some("ResourceNotFoundException") => false,
                Err(e) => anyhow::bail!("describing table {table}: {}", DisplayErrorContext(e)),
            };
            if active {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("table {table} did not become active within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes the requests, resubmitting `UnprocessedItems` until none are
    /// left or the retry budget is spent.
    async fn write_batch(&self, mut pending: Vec<WriteRequest>) -> Result<(), StoreError> {
        let retry = &self.options.unprocessed_retry;
        let started = Instant::now();
        let mut resubmissions = 0;
        loop {
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.options.table, pending)
                .send()
                .await
                .map_err(|e| classify("BatchWriteItem", e))?;
            let unprocessed = output
                .unprocessed_items
                .and_then(|mut items| items.remove(&self.options.table))
                .unwrap_or_default();
            if unprocessed.is_empty() {
                return Ok(());
            }
            resubmissions += 1;
            let delay = backoff(retry, resubmissions);
            if resubmissions > retry.max_resubmissions
                || started.elapsed() + delay > retry.total_budget
            {
                return Err(StoreError::Throttled(format!(
                    "BatchWriteItem: {} items still unprocessed after {} resubmissions",
                    unprocessed.len(),
                    resubmissions - 1
                )));
            }
            tracing::debug!(
                items = unprocessed.len(),
                resubmissions,
                delay_ms = delay.as_millis() as u64,
                "resubmitting unprocessed items"
            );
            tokio::time::sleep(delay).await;
            pending = unprocessed;
        }
    }

    fn remember_uncertain(&self, connection_id: &str, expires_at: u64) {
        let settle = self.options.rollback_retry.settle;
        let mut recent = self
            .recent_uncertain
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        recent.retain(|_, (written, _)| written.elapsed() < settle);
        if recent.len() < MAX_RECENT_UNCERTAIN {
            recent.insert(connection_id.to_owned(), (Instant::now(), expires_at));
        }
    }

    /// After a DISCONNECT's delete: if the connection's records were written
    /// by a write that outlived an attempt, within the settle time, delete
    /// them once more later (the abandoned attempt may land after us).
    fn confirm_if_uncertain(&self, keys: &[RecordKey]) {
        let Some(connection_id) = keys.first().map(|k| k.connection_id.clone()) else {
            return;
        };
        let written = {
            let mut recent = self
                .recent_uncertain
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            recent.remove(&connection_id)
        };
        if let Some((at, expires_at)) = written
            && at.elapsed() < self.options.rollback_retry.settle
        {
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

    /// Deletes keys in chunks; returns how many were deleted.
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

    async fn delete_keys(&self, keys: &[RecordKey]) -> Result<u32, StoreError> {
        let keys = unique(keys.iter().cloned(), |k| k.clone());
        let mut deleted = 0u32;
        for chunk in keys.chunks(BATCH_LIMIT) {
            let requests = chunk
                .iter()
                .map(delete_request)
                .collect::<Result<Vec<_>, _>>()?;
            self.write_batch(requests).await?;
            deleted += chunk.len() as u32;
        }
        Ok(deleted)
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
            let started = Instant::now();
            let result = self.write_batch(requests).await;
            outlived_an_attempt |= started.elapsed() >= ATTEMPT_TIMEOUT;
            if let Err(error) = result {
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
            self.remember_uncertain(&record.connection_id, record.expires_at);
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

fn put_request(record: &ConnectionRecord) -> Result<WriteRequest, StoreError> {
    let item = HashMap::from([
        (
            INTEGRATION_ID.to_owned(),
            AttributeValue::S(record.integration_id.clone()),
        ),
        (
            CONNECTION_ID.to_owned(),
            AttributeValue::S(record.connection_id.clone()),
        ),
        (SUB.to_owned(), AttributeValue::S(record.sub.clone())),
        (
            CONNECTED_AT.to_owned(),
            AttributeValue::S(record.connected_at.clone()),
        ),
        (
            EXPIRES_AT.to_owned(),
            AttributeValue::N(record.expires_at.to_string()),
        ),
    ]);
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| StoreError::Other(format!("building a PutRequest: {e}")))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn delete_request(key: &RecordKey) -> Result<WriteRequest, StoreError> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key_attributes(key)))
        .build()
        .map_err(|e| StoreError::Other(format!("building a DeleteRequest: {e}")))?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

fn key_attributes(key: &RecordKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            INTEGRATION_ID.to_owned(),
            AttributeValue::S(key.integration_id.clone()),
        ),
        (
            CONNECTION_ID.to_owned(),
            AttributeValue::S(key.connection_id.clone()),
        ),
    ])
}

/// A stored item as a record; `sub` and `connectedAt` may be missing on
/// records written by other tools (empty then), the keys and `expiresAt`
/// may not.
fn record_from(item: &HashMap<String, AttributeValue>) -> Result<ConnectionRecord, StoreError> {
    let expires_at = match item.get(EXPIRES_AT) {
        Some(AttributeValue::N(number)) => number.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| StoreError::Other(format!("Query: an item without a numeric {EXPIRES_AT}")))?;
    Ok(ConnectionRecord {
        integration_id: string_attribute(item, INTEGRATION_ID)?,
        connection_id: string_attribute(item, CONNECTION_ID)?,
        sub: string_attribute(item, SUB).unwrap_or_default(),
        connected_at: string_attribute(item, CONNECTED_AT).unwrap_or_default(),
        expires_at,
    })
}

fn string_attribute(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> Result<String, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(StoreError::Other(format!(
            "Query: an item without a string {name}"
        ))),
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

/// Exponential backoff with full jitter: uniform in [0, min(max, base·2^n)].
fn backoff(retry: &UnprocessedRetry, attempt: u32) -> Duration {
    let exponential = retry
        .base_delay
        .saturating_mul(1u32 << attempt.min(16))
        .min(retry.max_delay);
    exponential.mul_f64(fastrand::f64())
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

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let retry = UnprocessedRetry::default();
        for attempt in 0..40 {
            assert!(backoff(&retry, attempt) <= retry.max_delay);
        }
        // Full jitter: over many draws the mean of attempt 3 (cap 200 ms)
        // sits near 100 ms, well above attempt 0's (cap 25 ms).
        let mean = |attempt| {
            (0..2000)
                .map(|_| backoff(&retry, attempt).as_secs_f64())
                .sum::<f64>()
                / 2000.0
        };
        assert!(mean(3) > mean(0) * 3.0);
    }

    #[test]
    fn unique_keeps_the_first_of_each_key() {
        let items = vec![("a", 1), ("b", 2), ("a", 3)];
        assert_eq!(unique(items.into_iter(), |i| i.0), vec![("a", 1), ("b", 2)]);
    }
}
