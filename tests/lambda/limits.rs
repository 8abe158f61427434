//! The limits' buckets on DynamoDB (moto): the same GCRA as in memory, through conditional
//! updates, one budget shared by two store instances (as by two function instances).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use webchat::adapters::limits::DynamoLimits;
use webchat::domain::limits::{Rate, Taken};
use webchat::ports::LimitStore;

use super::moto;

async fn stores() -> (DynamoLimits, DynamoLimits, aws_sdk_dynamodb::Client, String) {
    let (client, connections) = moto::client_and_table().await;
    let table = moto::rooms_table_of(&connections);
    (
        DynamoLimits::new(client.clone(), table.clone()),
        DynamoLimits::new(client.clone(), table.clone()),
        client,
        table,
    )
}

fn allowed(taken: Taken) -> bool {
    matches!(taken, Taken::Allowed { .. })
}

#[tokio::test]
async fn a_bucket_gives_its_burst_then_refuses_with_when_to_retry() {
    let (limits, _, client, table) = stores().await;
    let rate = Rate::per_second(10, 20);
    let now = Utc::now().timestamp_micros();
    let mut passed = 0;
    for _ in 0..25 {
        passed += usize::from(allowed(limits.take("conn#a", 1, rate, now).await.unwrap()));
    }
    assert_eq!(passed, 20);
    assert_eq!(
        limits.take("conn#a", 1, rate, now).await.unwrap(),
        Taken::Refused {
            retry_after: Duration::from_millis(100)
        }
    );
    // one interval on, one more passes; the bucket is one item with its expiry
    assert!(allowed(
        limits.take("conn#a", 1, rate, now + 100_000).await.unwrap()
    ));
    assert!(!allowed(
        limits.take("conn#a", 1, rate, now + 100_000).await.unwrap()
    ));
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("limit#conn#a".into()))
        .key("sk", AttributeValue::S("#bucket".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let expires: i64 = item["expiresAt"].as_n().unwrap().parse().unwrap();
    assert!(expires > now / 1_000_000, "a TTL past the bucket's refill");
    // an hour later the bucket is full again: its burst, and no more
    let later = now + 3_600_000_000;
    let mut passed = 0;
    for _ in 0..21 {
        passed += usize::from(allowed(
            limits.take("conn#a", 1, rate, later).await.unwrap(),
        ));
    }
    assert_eq!(passed, 20);
}

#[tokio::test]
async fn two_instances_share_one_budget() {
    let (one, two, _, _) = stores().await;
    let rate = Rate::per_second(10, 20);
    let now = Utc::now().timestamp_micros();
    let mut passed = 0;
    for i in 0..40 {
        let store = if i % 2 == 0 { &one } else { &two };
        passed += usize::from(allowed(store.take("user#u-1", 1, rate, now).await.unwrap()));
    }
    assert_eq!(passed, 20, "the burst once, not once per instance");
}

#[tokio::test]
async fn a_delivery_budget_is_spent_by_audience_size() {
    let (limits, _, _, _) = stores().await;
    let rate = Rate::per_minute(10_000);
    let now = Utc::now().timestamp_micros();
    assert!(allowed(
        limits.take("conn#b", 9_400, rate, now).await.unwrap()
    ));
    assert!(allowed(
        limits.take("conn#b", 600, rate, now).await.unwrap()
    ));
    assert_eq!(
        limits.take("conn#b", 600, rate, now).await.unwrap(),
        Taken::Refused {
            retry_after: Duration::from_millis(3_600)
        }
    );
    // more than the whole budget is never allowed, whatever is left
    assert!(!allowed(
        limits.take("conn#c", 10_001, rate, now).await.unwrap()
    ));
    assert!(allowed(
        limits.take("conn#c", 10_000, rate, now).await.unwrap()
    ));
}
