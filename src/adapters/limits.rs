//! The limits' buckets on DynamoDB (issue 23), shared by every function instance. A bucket is
//! one item, `pk` = `limit#<key>`, `sk` = `#bucket`, in the rooms table (`pk`, `sk` strings, TTL on `expiresAt`), holding its GCRA
//! state `tat` in microseconds ([`crate::domain::limits`]).
//!
//! Taking from a bucket is a conditional UpdateItem, and DynamoDB's expressions have no `max`, so
//! the two cases of `max(tat, now)` are two updates, each conditional on its case:
//!
//! - a full bucket (no item, or `tat` passed): `SET tat = :now + cost × interval`, under
//!   `attribute_not_exists(tat) OR tat < :now`. A client sending within its rate finds its bucket
//!   full each time: one write a frame.
//! - a bucket being spent: `SET tat = tat + cost × interval`, under `tat BETWEEN :now AND :last`
//!   (`:last`, the latest `tat` that leaves room for the cost, is computed here: a condition has
//!   no arithmetic). On a refusal DynamoDB returns the item as it was
//!   (`ReturnValuesOnConditionCheckFailure`), whose `tat` says when to retry: no read.
//!
//! The full case is tried first. A race between the two (another instance spending the bucket
//! in between) is tried again, three times at most, then refused for one interval. Each write,
//! allowed or refused, is one write unit (the item is under 1 KB).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use crate::adapters::dynamodb::attributes::EXPIRES_AT;
use crate::adapters::dynamodb::{condition_failed, store_error};
use crate::adapters::rooms::attributes::{PK, SK};
use crate::adapters::rooms::{Item, n, number, s};
use crate::domain::limits::{Rate, Taken, take};
use crate::ports::{LimitStore, StoreError};
use crate::telemetry::{aws_span, call};

/// A bucket's state attribute: its theoretical arrival time, microseconds since the epoch.
const TAT: &str = "tat";

/// Races lost to another instance before a take gives up (and refuses for one interval).
const ATTEMPTS: usize = 3;

/// Buckets as items of `table` (`pk`, `sk`, TTL on `expiresAt`).
#[derive(Clone, Debug)]
pub struct DynamoLimits {
    client: Client,
    table: String,
}

impl DynamoLimits {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLimits {
            client,
            table: table.into(),
        }
    }

    fn update(
        &self,
        key: &str,
        expires_at: i64,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(format!("limit#{key}")))
            .key(SK, s("#bucket"))
            .expression_attribute_names("#tat", TAT)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":expires", n(expires_at))
    }
}

/// The `tat` of an item, if it has one.
fn tat_of(item: Option<&Item>) -> Option<i64> {
    number(item?, TAT)
}

impl LimitStore for DynamoLimits {
    fn take<'a>(
        &'a self,
        key: &'a str,
        cost: u64,
        rate: Rate,
        now_us: i64,
    ) -> futures_util::future::BoxFuture<'a, Result<Taken, StoreError>> {
        Box::pin(self.take_now(key, cost, rate, now_us))
    }
}

impl DynamoLimits {
    async fn take_now(
        &self,
        key: &str,
        cost: u64,
        rate: Rate,
        now_us: i64,
    ) -> Result<Taken, StoreError> {
        // more than the whole burst never passes: no write
        if !rate.can_ever_take(cost) {
            return Ok(take(None, now_us, cost, rate));
        }
        let increment = i64::try_from(cost)
            .unwrap_or(i64::MAX)
            .saturating_mul(rate.interval_us);
        let room = i64::try_from(rate.burst.saturating_sub(cost))
            .unwrap_or(i64::MAX)
            .saturating_mul(rate.interval_us);
        // kept until the bucket would be full again, and a minute more
        let full_again = now_us.saturating_add(
            i64::try_from(rate.burst)
                .unwrap_or(i64::MAX)
                .saturating_mul(rate.interval_us),
        );
        let expires_at = full_again / 1_000_000 + 60;
        for _ in 0..ATTEMPTS {
            let fresh = now_us.saturating_add(increment);
            let refill = self
                .update(key, expires_at)
                .update_expression("SET #tat = :fresh, #expires = :expires")
                .condition_expression("attribute_not_exists(#tat) OR #tat < :now")
                .expression_attribute_values(":fresh", n(fresh))
                .expression_attribute_values(":now", n(now_us))
                .send();
            match call(aws_span("DynamoDB", "UpdateItem"), refill).await {
                Ok(_) => return Ok(Taken::Allowed { tat: fresh }),
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(store_error(error)),
            }
            let spend = self
                .update(key, expires_at)
                .update_expression("SET #tat = #tat + :increment, #expires = :expires")
                .condition_expression("#tat BETWEEN :now AND :last")
                .expression_attribute_values(":increment", n(increment))
                .expression_attribute_values(":now", n(now_us))
                .expression_attribute_values(":last", n(now_us.saturating_add(room)))
                .return_values(ReturnValue::UpdatedNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send();
            match call(aws_span("DynamoDB", "UpdateItem"), spend).await {
                Ok(output) => {
                    let tat = tat_of(output.attributes()).unwrap_or(fresh);
                    return Ok(Taken::Allowed { tat });
                }
                Err(error) if condition_failed(&error) => {
                    let old = match error.as_service_error() {
                        Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                            tat_of(failed.item())
                        }
                        _ => None,
                    };
                    match old {
                        // spent past the cost: refused, and when it would pass
                        Some(tat) if tat >= now_us => {
                            return Ok(take(Some(tat), now_us, cost, rate));
                        }
                        // full again, or gone, since the first write: try again
                        _ => continue,
                    }
                }
                Err(error) => return Err(store_error(error)),
            }
        }
        tracing::warn!(
            key,
            "a limit's bucket kept changing under this take; refused once"
        );
        Ok(Taken::Refused {
            retry_after: std::time::Duration::from_micros(
                u64::try_from(rate.interval_us).unwrap_or(u64::MAX),
            ),
        })
    }
}
