//! The limits' buckets on DynamoDB (moto): the same GCRA as in memory, through conditional
//! updates, one budget shared by two store instances (as by two function instances).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use serde_json::Value;
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

/// The frames `connection_id` was sent, split into rate_limited errors and the rest.
fn refused_and_served(stack: &super::Stack, connection_id: &str) -> (Vec<Value>, Vec<Value>) {
    super::frames(stack.fake.delivered_to(connection_id))
        .into_iter()
        .partition(|frame| frame["code"] == "rate_limited")
}

#[tokio::test]
async fn two_instances_of_a_shipped_function_share_one_frame_budget() {
    let stack = super::Stack::new().await;
    stack.put("c1=", Some("ada"), 60).await;
    // a burst of 4, then one a second: the test's eight frames take well under a second
    let settings = [("FRAME_RATE", "1".to_owned()), ("FRAME_BURST", "4".into())];
    let first = stack.function_with("list", &settings).await;
    let second = stack.function_with("list", &settings).await;
    let started = std::time::Instant::now();
    for i in 0..8 {
        let instance = if i % 2 == 0 { &first } else { &second };
        let event = super::websocket_event("list", "c1=", Some(r#"{"action":"list"}"#));
        assert_eq!(instance.invoke(&event).await.response()["statusCode"], 200);
    }
    let (refused, served) = refused_and_served(&stack, "c1=");
    // apart, each instance would have served its own burst of 4: all eight; together, the burst
    // and one a second for as long as the eight took
    let bound = 4 + started.elapsed().as_secs() as usize + 1;
    assert!(
        (4..=bound.min(7)).contains(&served.len()),
        "one budget of 4 (and 1 a second since): {served:?}"
    );
    assert_eq!(refused.len(), 8 - served.len());
    for frame in &refused {
        assert!(frame["retryAfterMs"].as_u64().unwrap() <= 1_000, "{frame}");
        assert!(
            frame["message"]
                .as_str()
                .unwrap()
                .contains("1 a second, 4 at once"),
            "{frame}"
        );
    }
}

#[tokio::test]
async fn broadcasts_from_two_instances_spend_one_delivery_budget_by_audience() {
    let stack = super::Stack::new().await;
    for id in ["c1=", "c2=", "c3="] {
        stack.put(id, Some(id), 60).await;
    }
    // 5 deliveries a minute: a broadcast to the three costs 3
    let settings = [("DELIVERY_BUDGET", "5".to_owned())];
    let first = stack.function_with("broadcast", &settings).await;
    let second = stack.function_with("broadcast", &settings).await;
    let started = std::time::Instant::now();
    let say = |text: &str| {
        super::websocket_event(
            "broadcast",
            "c1=",
            Some(&format!(r#"{{"action":"broadcast","message":"{text}"}}"#)),
        )
    };
    first.invoke(&say("one")).await.response();
    second.invoke(&say("two")).await.response();
    let heard: Vec<String> = super::frames(stack.fake.delivered_to("c2="))
        .iter()
        .filter_map(|frame| frame["message"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(heard, ["one"], "the second did not fit what was left");
    let (refused, _) = refused_and_served(&stack, "c1=");
    assert_eq!(refused.len(), 1, "{refused:?}");
    let message = refused[0]["message"].as_str().unwrap();
    assert!(message.contains("would reach 3 connections"), "{message}");
    // 2 are left, 3 needed: the third comes back 12 s after the first broadcast (5 a minute)
    let retry = refused[0]["retryAfterMs"].as_u64().unwrap();
    let since = started.elapsed().as_millis() as u64;
    assert!(
        (12_000u64.saturating_sub(since + 1)..=12_000).contains(&retry),
        "{retry}"
    );
}

#[tokio::test]
async fn a_users_connect_past_their_limit_is_refused_with_429_and_why() {
    let stack = super::Stack::new().await;
    let exp = Utc::now().timestamp() + 3600;
    for id in ["a1=", "a2="] {
        stack.put_user(id, "u-ada", "Ada").await;
    }
    let connect = stack
        .function_with("connect", &[("CONNECTIONS_PER_USER", "2".to_owned())])
        .await;
    let event = super::identity::signed_in(super::connect_event("a3=", None), "u-ada", "Ada", exp);
    let answer = connect.invoke(&event).await.response();
    assert_eq!(answer["statusCode"], 429, "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], "too_many_connections");
    assert!(
        body["message"].as_str().unwrap().contains("at most 2"),
        "{body}"
    );
    // one of the two is gone (its $disconnect never came): it no longer counts
    stack.fake.gone("a1=");
    let answer = connect.invoke(&event).await.response();
    assert_eq!(answer["statusCode"], 200, "{answer}");
}
