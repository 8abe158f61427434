//! The connection store on DynamoDB: one item per connection, keyed by `connectionId`, with
//! `expiresAt` as the table's TTL attribute.
//!
//! Every Scan is paginated (the domain follows the cursor to the end) and projected to the
//! attributes the caller needs. Expired items are skipped on every read, server-side by a filter
//! and again client-side, because TTL deletion can lag by days.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::ports::{
    ConnectedAt, ConnectionRecord, ConnectionStore, Page, Recipient, Segment, StoreError, rfc3339,
};
use crate::telemetry::{aws_span, call};

/// The item's attribute names. The Pulumi program declares the key and the TTL attribute from
/// the same names.
pub mod attributes {
    /// The partition key (a string).
    pub const CONNECTION_ID: &str = "connectionId";
    /// The display name (a string), absent when the client gave none.
    pub const NAME: &str = "name";
    /// RFC 3339 (a string).
    pub const CONNECTED_AT: &str = "connectedAt";
    /// Epoch seconds (a number): the TTL attribute.
    pub const EXPIRES_AT: &str = "expiresAt";
    /// The signed-in user, the token's `sub` (a string), absent without sign-in: the partition
    /// key of [`USER_INDEX`].
    pub const USER: &str = "userId";
    /// The global secondary index by [`USER`] (sparse: only signed-in connections are in it),
    /// projecting `connectedAt` and `expiresAt`: a chat to a user is one Query of it.
    pub const USER_INDEX: &str = "byUser";
}
use attributes::{CONNECTED_AT, CONNECTION_ID, EXPIRES_AT, NAME, USER, USER_INDEX};

type Item = HashMap<String, AttributeValue>;

/// Pages of a user's connections read at most (each up to 1 MB of index items).
const MAX_USER_PAGES: usize = 10;

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    page_size: Option<i32>,
}

impl DynamoStore {
    /// `page_size` bounds the items a Scan page examines; `None` leaves DynamoDB's 1 MB pages.
    pub fn new(client: Client, table: impl Into<String>, page_size: Option<i32>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            page_size,
        }
    }

    /// One page of a Scan, projected to `attributes`, skipping items expired at `live_at` (by
    /// a filter; callers check again, since a filter only saves transfer). Returns the items
    /// and the cursor of the next page.
    async fn scan_page(
        &self,
        live_at: Option<i64>,
        segment: Segment,
        cursor: Option<String>,
        attributes: &[&str],
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let projection = attributes
            .iter()
            .map(|a| format!("#{a}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut scan = self
            .client
            .scan()
            .table_name(&self.table)
            .set_limit(self.page_size)
            .set_exclusive_start_key(
                cursor.map(|id| HashMap::from([(CONNECTION_ID.to_owned(), AttributeValue::S(id))])),
            )
            .projection_expression(projection);
        if segment.total > 1 {
            scan = scan
                .segment(segment.index as i32)
                .total_segments(segment.total as i32);
        }
        for attribute in attributes {
            scan = scan.expression_attribute_names(format!("#{attribute}"), *attribute);
        }
        if let Some(now) = live_at {
            scan = scan
                .filter_expression(format!("#{EXPIRES_AT} > :now"))
                .expression_attribute_names(format!("#{EXPIRES_AT}"), EXPIRES_AT)
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        }
        let output = call(aws_span("DynamoDB", "Scan"), scan.send())
            .await
            .map_err(store_error)?;
        let next = next_cursor(output.last_evaluated_key());
        Ok((output.items.unwrap_or_default(), next))
    }
}

/// Whether a DynamoDB call failed its condition (a conditional write that did not apply).
pub(crate) fn condition_failed<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    error.code() == Some("ConditionalCheckFailedException")
}

/// A DynamoDB call's failure, with the SDK's whole context, as the store's error.
pub(crate) fn store_error(error: impl std::error::Error) -> StoreError {
    StoreError(DisplayErrorContext(error).to_string())
}

fn next_cursor(last_evaluated_key: Option<&Item>) -> Option<String> {
    last_evaluated_key?.get(CONNECTION_ID)?.as_s().ok().cloned()
}

fn to_item(record: &ConnectionRecord) -> Item {
    let mut item = HashMap::from([
        (
            CONNECTION_ID.to_owned(),
            AttributeValue::S(record.connection_id.clone()),
        ),
        (
            CONNECTED_AT.to_owned(),
            AttributeValue::S(
                record
                    .connected_at
                    .text()
                    .map_or_else(|| rfc3339(record.connected_at.time()), str::to_owned),
            ),
        ),
        (
            EXPIRES_AT.to_owned(),
            AttributeValue::N(record.expires_at.to_string()),
        ),
    ]);
    if let Some(name) = &record.name {
        item.insert(NAME.to_owned(), AttributeValue::S(name.clone()));
    }
    if let Some(user) = &record.user {
        item.insert(USER.to_owned(), AttributeValue::S(user.clone()));
    }
    item
}

/// A live recipient from an item projected to its id, `connectedAt` and `expiresAt`; `None` for
/// one expired at `live_at` or not written by this code.
fn recipient(item: &Item, live_at: i64) -> Option<Recipient> {
    let expires_at: i64 = item.get(EXPIRES_AT)?.as_n().ok()?.parse().ok()?;
    let connection_id = item.get(CONNECTION_ID)?.as_s().ok()?.clone();
    // A record this code did not write may lack a valid `connectedAt`: still deliver to it, as
    // to an old connection (a 410 from it is then pruned).
    let connected_at = ConnectedAt::stored(
        item.get(CONNECTED_AT)
            .and_then(|value| value.as_s().ok())
            .cloned(),
    );
    if !connected_at.is_valid() {
        tracing::warn!(
            connection_id,
            "a connection item without a valid connectedAt"
        );
    }
    (live_at < expires_at).then_some(Recipient {
        connection_id,
        connected_at,
    })
}

/// An item as a record; `None` (and a warning) for an item this code did not write.
fn from_item(item: &Item) -> Option<ConnectionRecord> {
    let text = |name: &str| item.get(name).and_then(|value| value.as_s().ok());
    let parsed = (|| {
        let connected_at = ConnectedAt::stored(text(CONNECTED_AT).cloned());
        Some(ConnectionRecord {
            connection_id: text(CONNECTION_ID)?.clone(),
            user: text(USER).cloned(),
            name: text(NAME).cloned(),
            connected_at: connected_at.is_valid().then_some(connected_at)?,
            expires_at: item.get(EXPIRES_AT)?.as_n().ok()?.parse().ok()?,
        })
    })();
    if parsed.is_none() {
        tracing::warn!(item = ?item.get(CONNECTION_ID), "skipping a malformed connection item");
    }
    parsed
}

impl ConnectionStore for DynamoStore {
    async fn put(&self, record: ConnectionRecord) -> Result<(), StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&record)))
            .send();
        call(aws_span("DynamoDB", "PutItem"), put)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn get(
        &self,
        connection_id: &str,
        live_at: i64,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(CONNECTION_ID, AttributeValue::S(connection_id.to_owned()))
            .consistent_read(true)
            .send();
        let output = call(aws_span("DynamoDB", "GetItem"), get)
            .await
            .map_err(store_error)?;
        Ok(output
            .item()
            .and_then(from_item)
            .filter(|record| record.is_live_at(live_at)))
    }

    async fn delete(&self, connection_id: &str) -> Result<(), StoreError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(CONNECTION_ID, AttributeValue::S(connection_id.to_owned()))
            .send();
        call(aws_span("DynamoDB", "DeleteItem"), delete)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn delete_if_connected_at(
        &self,
        connection_id: &str,
        connected_at: &ConnectedAt,
    ) -> Result<bool, StoreError> {
        // The text exactly as it was read, never the parsed time formatted again: any RFC 3339
        // form a record was written in matches itself.
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(CONNECTION_ID, AttributeValue::S(connection_id.to_owned()))
            .expression_attribute_names(format!("#{CONNECTED_AT}"), CONNECTED_AT);
        let delete = match connected_at.text() {
            Some(text) => delete
                .condition_expression(format!("#{CONNECTED_AT} = :connectedAt"))
                .expression_attribute_values(":connectedAt", AttributeValue::S(text.to_owned())),
            // Read without one: still without one (and still there).
            None => delete
                .condition_expression(format!(
                    "attribute_exists(#{CONNECTION_ID}) AND attribute_not_exists(#{CONNECTED_AT})"
                ))
                .expression_attribute_names(format!("#{CONNECTION_ID}"), CONNECTION_ID),
        };
        let delete = delete.send();
        match call(aws_span("DynamoDB", "DeleteItem"), delete).await {
            Ok(_) => Ok(true),
            // No such item, or one written since: it stays.
            Err(error) if condition_failed(&error) => Ok(false),
            Err(error) => Err(store_error(error)),
        }
    }

    async fn scan_recipients(
        &self,
        live_at: i64,
        segment: Segment,
        cursor: Option<String>,
    ) -> Result<Page<Recipient>, StoreError> {
        let (items, next) = self
            .scan_page(
                Some(live_at),
                segment,
                cursor,
                &[CONNECTION_ID, CONNECTED_AT, EXPIRES_AT],
            )
            .await?;
        let items = items
            .iter()
            .filter_map(|item| recipient(item, live_at))
            .collect();
        Ok(Page { items, next })
    }

    async fn connections_of(&self, user: &str, live_at: i64) -> Result<Vec<Recipient>, StoreError> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        // a user has a handful of connections; the bound keeps a pathological one finite
        for _ in 0..MAX_USER_PAGES {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(USER_INDEX)
                .key_condition_expression(format!("#{USER} = :user"))
                .filter_expression(format!("#{EXPIRES_AT} > :now"))
                .expression_attribute_names(format!("#{USER}"), USER)
                .expression_attribute_names(format!("#{EXPIRES_AT}"), EXPIRES_AT)
                .expression_attribute_values(":user", AttributeValue::S(user.to_owned()))
                .expression_attribute_values(":now", AttributeValue::N(live_at.to_string()))
                .set_exclusive_start_key(start.take())
                .send();
            let output = call(aws_span("DynamoDB", "Query"), query)
                .await
                .map_err(store_error)?;
            found.extend(
                output
                    .items()
                    .iter()
                    .filter_map(|item| recipient(item, live_at)),
            );
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn scan_records(
        &self,
        live_at: Option<i64>,
        cursor: Option<String>,
    ) -> Result<Page<ConnectionRecord>, StoreError> {
        let (items, next) = self
            .scan_page(
                live_at,
                Segment::WHOLE,
                cursor,
                &[CONNECTION_ID, USER, NAME, CONNECTED_AT, EXPIRES_AT],
            )
            .await?;
        let items = items
            .iter()
            .filter_map(from_item)
            .filter(|record| live_at.is_none_or(|now| record.is_live_at(now)))
            .collect();
        Ok(Page { items, next })
    }

    async fn count_estimate(&self) -> Result<u64, StoreError> {
        let describe = self.client.describe_table().table_name(&self.table).send();
        let output = call(aws_span("DynamoDB", "DescribeTable"), describe)
            .await
            .map_err(store_error)?;
        let count = output.table().and_then(|table| table.item_count());
        Ok(count.unwrap_or(0).max(0) as u64)
    }
}
