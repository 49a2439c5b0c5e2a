//! Table administration, for `gitgazer-ws table create` only: the request
//! path never creates or describes tables.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};

use super::DynamoDbStore;
use super::item::{CONNECTION_ID, EXPIRES_AT, INTEGRATION_ID, SUB};

impl DynamoDbStore {
    /// Creates the table with its GSI (on-demand billing), and with
    /// `with_sub_index` the KEYS_ONLY GSI on `sub` too, waits until it is
    /// active, and enables TTL on `expiresAt`. An existing table is kept.
    /// Endpoints without UpdateTimeToLive (dynalite) get a warning.
    pub async fn create_table(&self, with_sub_index: bool) -> anyhow::Result<()> {
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
        let keys_only_index = |name: &str, attribute: &str| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(attribute, KeyType::Hash)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
        };
        let mut create = self
            .client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute(INTEGRATION_ID)?)
            .attribute_definitions(string_attribute(CONNECTION_ID)?)
            .key_schema(key(INTEGRATION_ID, KeyType::Hash)?)
            .key_schema(key(CONNECTION_ID, KeyType::Range)?)
            .global_secondary_indexes(keys_only_index(
                &self.options.connection_id_index,
                CONNECTION_ID,
            )?);
        if with_sub_index {
            create = create
                .attribute_definitions(string_attribute(SUB)?)
                .global_secondary_indexes(keys_only_index(&self.options.sub_index, SUB)?);
        }
        let created = create.send().await;
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
                        .all(|i| i.index_status() == Some(&IndexStatus::Active));
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
}
