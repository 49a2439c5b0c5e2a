//! The item layout the rest of GitGazer reads: hash key `integrationId` (S),
//! range key `connectionId` (S), and `sub`, `connectedAt`, `expiresAt` (N,
//! the TTL attribute) on each item; a KEYS_ONLY GSI on `connectionId`.
//! `endpoint` (S), where the connection can be reached, only on items whose
//! CONNECT named one; GitGazer's own reader ignores it. `authExpiresAt` (N),
//! the `exp` of the token the connection was authorised with, on items
//! whose CONNECT knew it: delivery stops at it; `authIssuedAt` (N), that
//! token's `iat`, which an API Gateway refresh checks the new token against.
//!
//! A user's revocation is an item of its own (`revocation_item`): both key
//! halves `revoked {sub}` (see `store::revocation_key`), `revokedBefore` (N)
//! and `expiresAt` (N, the same TTL), no `sub`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};

use crate::store::{ConnectionRecord, RecordKey, StoreError};

pub const INTEGRATION_ID: &str = "integrationId";
pub const CONNECTION_ID: &str = "connectionId";
pub const SUB: &str = "sub";
pub const CONNECTED_AT: &str = "connectedAt";
pub const EXPIRES_AT: &str = "expiresAt";
pub const ENDPOINT: &str = "endpoint";
pub const AUTH_EXPIRES_AT: &str = "authExpiresAt";
pub const AUTH_ISSUED_AT: &str = "authIssuedAt";
pub const REVOKED_BEFORE: &str = "revokedBefore";

/// The `expiresAt` of a record written without one.
pub const NO_EXPIRY: u64 = u64::MAX;

pub(super) fn put_request(record: &ConnectionRecord) -> Result<WriteRequest, StoreError> {
    let mut item = HashMap::from([
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
    if let Some(endpoint) = &record.endpoint {
        item.insert(ENDPOINT.to_owned(), AttributeValue::S(endpoint.clone()));
    }
    for (name, value) in [
        (AUTH_EXPIRES_AT, record.auth_expires_at),
        (AUTH_ISSUED_AT, record.auth_issued_at),
    ] {
        if let Some(value) = value {
            item.insert(name.to_owned(), AttributeValue::N(value.to_string()));
        }
    }
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| StoreError::Other(format!("building a PutRequest: {e}")))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

pub(super) fn delete_request(key: &RecordKey) -> Result<WriteRequest, StoreError> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key_attributes(key)))
        .build()
        .map_err(|e| StoreError::Other(format!("building a DeleteRequest: {e}")))?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

/// The item of `sub`'s revocation.
pub(super) fn revocation_item(
    sub: &str,
    before: u64,
    expires_at: u64,
) -> HashMap<String, AttributeValue> {
    let mut item = key_attributes(&crate::store::revocation_key(sub));
    item.insert(
        REVOKED_BEFORE.to_owned(),
        AttributeValue::N(before.to_string()),
    );
    item.insert(
        EXPIRES_AT.to_owned(),
        AttributeValue::N(expires_at.to_string()),
    );
    item
}

pub(super) fn key_attributes(key: &RecordKey) -> HashMap<String, AttributeValue> {
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

/// A stored item as a record. The keys are required; `sub` and
/// `connectedAt` may be missing on records written by other tools (empty
/// then; `connectedAt` is kept as written, e.g. the original handler's
/// milliseconds). The original handler wrote no `expiresAt`: such a record
/// never expires here ([`NO_EXPIRY`]), as it never expires in the table.
pub(super) fn record_from(
    item: &HashMap<String, AttributeValue>,
) -> Result<ConnectionRecord, StoreError> {
    let expires_at = match item.get(EXPIRES_AT) {
        None => Some(NO_EXPIRY),
        Some(AttributeValue::N(number)) => number.parse().ok(),
        Some(_) => None,
    }
    .ok_or_else(|| StoreError::Other(format!("Query: an item with a non-numeric {EXPIRES_AT}")))?;
    let optional_number = |name: &str| {
        match item.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(number)) => number.parse().map(Some).map_err(|_| ()),
            Some(_) => Err(()),
        }
        .map_err(|()| StoreError::Other(format!("Query: an item with a non-numeric {name}")))
    };
    let auth_expires_at = optional_number(AUTH_EXPIRES_AT)?;
    let auth_issued_at = optional_number(AUTH_ISSUED_AT)?;
    Ok(ConnectionRecord {
        integration_id: string_attribute(item, INTEGRATION_ID)?,
        connection_id: string_attribute(item, CONNECTION_ID)?,
        sub: string_attribute(item, SUB).unwrap_or_default(),
        connected_at: string_attribute(item, CONNECTED_AT).unwrap_or_default(),
        expires_at,
        endpoint: string_attribute(item, ENDPOINT).ok(),
        auth_expires_at,
        auth_issued_at,
    })
}

pub(super) fn string_attribute(
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

/// The key a write request names (every request built here names one).
pub(super) fn request_key(request: &WriteRequest) -> Option<RecordKey> {
    let attributes = match (&request.put_request, &request.delete_request) {
        (Some(put), _) => &put.item,
        (None, Some(delete)) => &delete.key,
        (None, None) => return None,
    };
    Some(RecordKey {
        integration_id: string_attribute(attributes, INTEGRATION_ID).ok()?,
        connection_id: string_attribute(attributes, CONNECTION_ID).ok()?,
    })
}

/// A revocation item's `revokedBefore`; `None` when it is not a number.
pub(super) fn revoked_before_of(item: &HashMap<String, AttributeValue>) -> Option<u64> {
    match item.get(REVOKED_BEFORE) {
        Some(AttributeValue::N(number)) => number.parse().ok(),
        _ => None,
    }
}
