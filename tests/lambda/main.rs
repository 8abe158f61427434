//! The shipped function binaries, run as Lambda runs them (a fake Runtime API), against moto
//! (DynamoDB) and a recording EventBridge / `@connections` server; and the AWS adapters on their
//! own, against the same emulators and against webchat-local's `@connections`.
//!
//! This level keeps what only it can catch: wire shapes, init, configuration, the Runtime API's
//! deadline, and the real adapters in a route's path. What each route does is tested once, in
//! `tests/routes.rs`.
//!
//! It needs the function binaries and webchat-local: `cargo test --all-features` (without the
//! features it compiles to nothing).
#![cfg(all(feature = "aws", feature = "local"))]

mod adapters;
mod authorize;
mod contract;
mod fake_aws;
mod identity;
mod limits;
mod moto;
mod otlp;
mod rooms;
mod runtime_api;
mod shards;
#[path = "../support/mod.rs"]
mod support;
mod tracing;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use fake_aws::FakeAws;
use runtime_api::Function;
use serde_json::{Value, json};

/// One test's world: a fresh table in moto and a fresh recording server.
pub struct Stack {
    pub fake: FakeAws,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
}

impl Stack {
    pub async fn new() -> Stack {
        let (dynamodb, table) = moto::client_and_table().await;
        Stack {
            fake: FakeAws::start().await,
            dynamodb,
            table,
        }
    }

    /// The functions' environment, as the stack sets it, plus the emulators' endpoints.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.fake.function_env(&self.table, moto::endpoint());
        env.push(("LOG_LEVEL", "debug".into()));
        env
    }

    pub async fn function(&self, name: &str) -> Function {
        self.function_with(name, &[]).await
    }

    pub async fn function_with(&self, name: &str, extra: &[(&'static str, String)]) -> Function {
        let mut env = self.env();
        env.extend(extra.iter().cloned());
        Function::start(name, &env).await
    }

    /// Stores a connection record as `$connect` would, connected `age_seconds` ago.
    pub async fn put(&self, id: &str, name: Option<&str>, age_seconds: i64) {
        let connected_at = Utc::now() - chrono::Duration::seconds(age_seconds);
        let text = connected_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.put_written(id, name, &text, connected_at.timestamp() + 7500)
            .await;
    }

    /// Stores a connection record with `connectedAt` written as `connected_at` says, as another
    /// writer (an older version, a migration, a person) may have stored it.
    pub async fn put_written(
        &self,
        id: &str,
        name: Option<&str>,
        connected_at: &str,
        expires_at: i64,
    ) {
        let mut item = HashMap::from([
            ("connectionId".to_string(), AttributeValue::S(id.into())),
            (
                "connectedAt".to_string(),
                AttributeValue::S(connected_at.into()),
            ),
            (
                "expiresAt".to_string(),
                AttributeValue::N(expires_at.to_string()),
            ),
        ]);
        if let Some(name) = name {
            item.insert("name".into(), AttributeValue::S(name.into()));
        }
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }

    /// Starts `broadcast` and has `sender` broadcast "hi" through it; the function, for its logs.
    pub async fn broadcast_hi(&self, sender: &str) -> Function {
        let broadcast = self.function("broadcast").await;
        let body = r#"{"action":"broadcast","message":"hi"}"#;
        broadcast
            .invoke(&websocket_event("broadcast", sender, Some(body)))
            .await
            .response();
        broadcast
    }

    /// The stored connection ids that start with `prefix`, in order.
    pub async fn ids_starting(&self, prefix: &str) -> Vec<String> {
        let mut ids = self.ids().await;
        ids.retain(|id| id.starts_with(prefix));
        ids
    }

    /// Every item in the table, by connection id.
    pub async fn items(&self) -> HashMap<String, HashMap<String, AttributeValue>> {
        let output = self
            .dynamodb
            .scan()
            .table_name(&self.table)
            .send()
            .await
            .unwrap();
        output
            .items()
            .iter()
            .map(|item| (item["connectionId"].as_s().unwrap().clone(), item.clone()))
            .collect()
    }

    pub async fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.items().await.into_keys().collect();
        ids.sort();
        ids
    }
}

/// An event exactly as API Gateway sends it to a websocket route's Lambda integration.
pub fn websocket_event(route_key: &str, connection_id: &str, body: Option<&str>) -> Value {
    let now = Utc::now().timestamp_millis();
    let event_type = match route_key {
        "$connect" => "CONNECT",
        "$disconnect" => "DISCONNECT",
        _ => "MESSAGE",
    };
    let mut event = json!({
        "requestContext": {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": "Fk8JsHs_IAMFmKQ=",
            "requestTime": "28/Nov/2026:07:00:00 +0000",
            "messageDirection": "IN",
            "stage": "test",
            "connectedAt": now - 1000,
            "requestTimeEpoch": now,
            "identity": {"userAgent": "wscat", "sourceIp": "203.0.113.7"},
            "requestId": "Fk8JsHs_IAMFmKQ=",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "connectionId": connection_id,
            "apiId": "abc123"
        },
        "isBase64Encoded": false
    });
    match event_type {
        "MESSAGE" => {
            event["body"] = json!(body.unwrap_or_default());
            event["requestContext"]["messageId"] = json!("Fk8JtdQdIAMCJqQ=");
        }
        "CONNECT" => {
            event["headers"] = json!({
                "Host": "abc123.execute-api.us-east-1.amazonaws.com",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
                "X-Forwarded-For": "203.0.113.7",
                "X-Forwarded-Port": "443",
                "X-Forwarded-Proto": "https"
            });
            event["multiValueHeaders"] =
                json!({"Host": ["abc123.execute-api.us-east-1.amazonaws.com"]});
        }
        _ => {
            event["requestContext"]["disconnectStatusCode"] = json!(1001);
            event["requestContext"]["disconnectReason"] = json!("Going away");
        }
    }
    event
}

pub fn connect_event(connection_id: &str, name: Option<&str>) -> Value {
    let mut event = websocket_event("$connect", connection_id, None);
    if let Some(name) = name {
        event["queryStringParameters"] = json!({"name": name});
        event["multiValueQueryStringParameters"] = json!({"name": [name]});
    }
    event
}

/// An event exactly as an EventBridge rule hands it to its target.
pub fn welcome_event(connection_id: &str) -> Value {
    json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "welcome",
        "source": "webchat",
        "account": "123456789012",
        "time": "2026-11-28T07:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"connectionId": connection_id, "message": format!("Welcome! - connected on {connection_id}")}
    })
}

fn frames(bodies: Vec<String>) -> Vec<Value> {
    bodies
        .iter()
        .map(|body| serde_json::from_str(body).unwrap())
        .collect()
}

#[tokio::test]
async fn connect_stores_the_connection_and_publishes_the_welcome() {
    let stack = Stack::new().await;
    let connect = stack.function("connect").await;
    let answer = connect
        .invoke(&connect_event("L0SM9cOFvHcCIhw=", Some("alice")))
        .await
        .response();
    assert_eq!(answer["statusCode"], 200);

    let items = stack.items().await;
    let item = &items["L0SM9cOFvHcCIhw="];
    assert_eq!(item["name"].as_s().unwrap(), "alice");
    let connected_at =
        chrono::DateTime::parse_from_rfc3339(item["connectedAt"].as_s().unwrap()).unwrap();
    let expires_at: i64 = item["expiresAt"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires_at, connected_at.timestamp() + 2 * 3600 + 300);

    let put = stack.fake.put_events();
    assert_eq!(put.len(), 1);
    let entry = &put[0]["Entries"][0];
    assert_eq!(entry["Source"], "webchat");
    assert_eq!(entry["DetailType"], "welcome");
    assert_eq!(entry["EventBusName"], "webchat-test");
    let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        detail,
        json!({"connectionId": "L0SM9cOFvHcCIhw=", "message": "Welcome! - connected on L0SM9cOFvHcCIhw=", "name": "alice"})
    );
}

#[tokio::test]
async fn connect_fails_when_put_events_reports_a_failed_entry() {
    let stack = Stack::new().await;
    stack.fake.fail_put_events(1);
    let connect = stack.function("connect").await;
    let (error_type, body) = connect.invoke(&connect_event("abc=", None)).await.error();
    assert_eq!(error_type, "RouteFailed");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("InternalFailure"),
        "{body}"
    );
    assert!(
        stack.ids().await.is_empty(),
        "a refused connection leaves no record"
    );
    // and the next connect works
    assert_eq!(
        connect
            .invoke(&connect_event("def=", None))
            .await
            .response()["statusCode"],
        200
    );
    assert_eq!(stack.ids().await, vec!["def="]);
}

#[tokio::test]
async fn broadcast_reaches_every_page_prunes_the_gone_and_skips_the_expired() {
    let stack = Stack::new().await;
    for id in ["a=", "b=", "c=", "d=", "e=", "f="] {
        stack.put(id, (id == "a=").then_some("alice"), 60).await;
    }
    stack.put("expired=", None, 3 * 3600).await;
    stack.fake.gone("c=");
    stack.fake.gone("e=");
    let broadcast = stack
        .function_with("broadcast", &[("SCAN_PAGE_SIZE", "2".into())])
        .await;
    let body = r#"{"action":"broadcast","message":"Anybody home? <b>\"ü\"</b>"}"#;
    let answer = broadcast
        .invoke(&websocket_event("broadcast", "a=", Some(body)))
        .await
        .response();
    assert_eq!(answer["statusCode"], 200);

    for id in ["a=", "b=", "d=", "f="] {
        let frames = frames(stack.fake.delivered_to(id));
        assert_eq!(frames.len(), 1, "{id}");
        assert_eq!(frames[0]["type"], "broadcast");
        assert_eq!(frames[0]["from"], "a=");
        assert_eq!(frames[0]["name"], "alice");
        assert_eq!(frames[0]["message"], "Anybody home? <b>\"ü\"</b>");
    }
    let posted_to_expired = stack
        .fake
        .calls()
        .iter()
        .any(|call| call.connection_id == "expired=");
    assert!(!posted_to_expired, "expired records are skipped");
    assert_eq!(
        stack.ids().await,
        vec!["a=", "b=", "d=", "expired=", "f="],
        "exactly the gone ones are pruned"
    );
    assert!(
        broadcast
            .logs()
            .iter()
            .any(|line| line.contains("\"delivered\":4") && line.contains("\"pruned\":2")),
        "a summary is logged"
    );
}

/// `connectedAt` as other writers may store it: valid RFC 3339, but not in the form this code
/// writes. A conditional delete that formatted the parsed time again would never match them.
const OTHER_FORMS: [&str; 3] = [
    "2026-11-28T07:00:00Z",
    "2026-11-28T08:00:00.5+01:00",
    "2026-11-28T07:00:00.123456Z",
];

#[tokio::test]
async fn a_gone_connection_is_pruned_whatever_rfc_3339_form_its_connected_at_was_written_in() {
    let stack = Stack::new().await;
    let expires_at = Utc::now().timestamp() + 3600;
    stack.put("a=", Some("alice"), 60).await;
    let ids = |route: &str| -> Vec<String> {
        (0..OTHER_FORMS.len())
            .map(|i| format!("{route}{i}="))
            .collect()
    };
    for route in ["broadcast", "chat", "cleanup"] {
        for (id, form) in ids(route).iter().zip(OTHER_FORMS) {
            stack.put_written(id, None, form, expires_at).await;
        }
    }
    let gone = |route: &str| ids(route).iter().for_each(|id| stack.fake.gone(id));

    gone("broadcast");
    stack.broadcast_hi("a=").await;
    let left = stack.ids_starting("broadcast").await;
    assert!(left.is_empty(), "a broadcast prunes them: {left:?}");

    gone("chat");
    let chat = stack.function("chat").await;
    for id in ids("chat") {
        let to = format!(r#"{{"action":"chat","connection":"{id}","message":"Yo!"}}"#);
        chat.invoke(&websocket_event("chat", "a=", Some(&to)))
            .await
            .response();
    }
    let left = stack.ids_starting("chat").await;
    assert!(left.is_empty(), "a chat prunes its target: {left:?}");

    gone("cleanup");
    let cleanup = stack.function("cleanup").await;
    let report = cleanup.invoke(&json!({})).await.response();
    assert_eq!(report["gone"], OTHER_FORMS.len(), "{report}");
    assert_eq!(stack.ids().await, vec!["a="], "cleanup prunes the rest");
}

#[tokio::test]
async fn a_broadcast_cut_short_by_the_deadline_says_so_to_the_sender_and_in_its_log() {
    let stack = Stack::new().await;
    for i in 0..60 {
        stack.put(&format!("c{i:02}="), None, 60).await;
    }
    stack.fake.set_delay(std::time::Duration::from_millis(100));
    let broadcast = stack
        .function_with("broadcast", &[("FANOUT_CONCURRENCY", "1".into())])
        .await;
    // a fifth kept for the span export, posts stop a tenth before that: 2.8 s of posts at
    // 100 ms each, one at a time, for 60 connections that would take 6 s
    broadcast.api.set_timeout(std::time::Duration::from_secs(4));
    let started = std::time::Instant::now();
    let body = r#"{"action":"broadcast","message":"hi"}"#;
    let answer = broadcast
        .invoke(&websocket_event("broadcast", "c00=", Some(body)))
        .await
        .response();
    assert_eq!(answer["statusCode"], 200);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let delivered = stack
        .fake
        .delivered()
        .iter()
        .filter(|(_, body)| body.contains("\"broadcast\""))
        .count();
    assert!((1..60).contains(&delivered), "{delivered} delivered");
    let told = frames(stack.fake.delivered_to("c00="));
    let told = told.last().unwrap();
    assert_eq!(told["code"], "delivery_incomplete");
    assert!(
        told["message"]
            .as_str()
            .unwrap()
            .contains(&format!("reached {delivered} connections"))
    );
    let summary = broadcast
        .logs()
        .into_iter()
        .find(|line| line.contains("broadcast incomplete"))
        .expect("the summary is logged");
    for field in ["delivered", "pruned", "failed", "not_attempted", "complete"] {
        assert!(
            summary.contains(&format!("\"{field}\":")),
            "{field}: {summary}"
        );
    }
}

#[tokio::test]
async fn a_throttled_scan_is_retried_with_backoff_and_the_broadcast_completes() {
    let stack = Stack::new().await;
    for id in ["a=", "b=", "c="] {
        stack.put(id, None, 60).await;
    }
    // four throttled Scans in a row: more than the SDK's default three attempts
    stack.fake.throttle_dynamodb(moto::endpoint(), "Scan", 4);
    let broadcast = stack
        .function_with(
            "broadcast",
            &[("AWS_ENDPOINT_URL_DYNAMODB", stack.fake.endpoint())],
        )
        .await;
    let body = r#"{"action":"broadcast","message":"hi"}"#;
    let answer = broadcast
        .invoke(&websocket_event("broadcast", "a=", Some(body)))
        .await
        .response();
    assert_eq!(answer["statusCode"], 200, "{:?}", broadcast.logs());
    assert_eq!(stack.fake.throttles_left("Scan"), 0);
    for id in ["a=", "b=", "c="] {
        let frames = frames(stack.fake.delivered_to(id));
        assert_eq!(frames.len(), 1, "{id}: {frames:?}");
        assert_eq!(frames[0]["type"], "broadcast");
    }
}

#[tokio::test]
async fn post_delivers_the_welcome_after_the_connection_is_established() {
    let stack = Stack::new().await;
    stack.fake.script("new=", &[410, 410]); // $connect has not returned yet
    let post = stack.function("post").await;
    post.invoke(&welcome_event("new=")).await.response();
    assert_eq!(
        frames(stack.fake.delivered_to("new=")),
        vec![
            json!({"type":"welcome","connectionId":"new=","user":null,"name":null,"message":"Welcome! - connected on new="})
        ]
    );
}

#[tokio::test]
async fn cleanup_removes_expired_and_gone_records_only() {
    let stack = Stack::new().await;
    for id in ["live1=", "live2=", "gone1=", "gone2="] {
        stack.put(id, None, 600).await;
    }
    stack.put("expired=", None, 3 * 3600).await;
    stack.fake.gone("gone1=");
    stack.fake.gone("gone2=");
    let cleanup = stack.function("cleanup").await;
    let scheduler_event = json!({"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.scheduler","account":"123456789012","time":"2026-11-28T07:00:00Z","region":"us-east-1","resources":[],"detail":{}});
    let report = cleanup.invoke(&scheduler_event).await.response();
    assert_eq!(
        report,
        json!({"checked": 5, "expired": 1, "gone": 2, "failed": 0, "complete": true})
    );
    assert_eq!(stack.ids().await, vec!["live1=", "live2="]);
    let described: Vec<String> = stack
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "GET")
        .map(|c| c.connection_id)
        .collect();
    assert!(
        !described.contains(&"expired=".to_string()),
        "an expired record needs no GetConnection"
    );
    // whatever the schedule sends is accepted
    assert!(matches!(
        cleanup.invoke(&json!({})).await,
        runtime_api::Answer::Response(_)
    ));
}

#[tokio::test]
async fn a_malformed_event_is_an_invocation_error_and_the_function_keeps_serving() {
    let stack = Stack::new().await;
    stack.put("a=", None, 60).await;
    let list = stack.function("list").await;
    let mut no_id = websocket_event("list", "a=", Some(r#"{"action":"list"}"#));
    no_id["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("connectionId");
    let (error_type, body) = list.invoke(&no_id).await.error();
    assert_eq!(error_type, "MalformedEvent");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("connectionId"),
        "{body}"
    );

    let (_, _) = list.api.invoke_raw("this is not JSON").await.error();
    let (_, _) = list.invoke(&json!([1, 2, 3])).await.error();

    let served = list
        .invoke(&websocket_event("list", "a=", Some(r#"{"action":"list"}"#)))
        .await
        .response();
    assert_eq!(served["statusCode"], 200);
    assert_eq!(stack.fake.delivered_to("a=").len(), 1);

    let post = stack.function("post").await;
    let mut wrong = welcome_event("a=");
    wrong["detail"] = json!({"who": "knows"});
    assert_eq!(post.invoke(&wrong).await.error().0, "MalformedEvent");
    post.invoke(&welcome_event("a=")).await.response();
}

#[tokio::test]
async fn missing_configuration_is_an_init_error_that_names_the_variable() {
    let stack = Stack::new().await;
    for missing in [
        "CONNECTIONS_TABLE",
        "ROOMS_TABLE",
        "EVENT_BUS_NAME",
        "WEBSOCKET_API_ENDPOINT",
    ] {
        let env: Vec<(&str, String)> = stack
            .env()
            .into_iter()
            .filter(|(name, _)| *name != missing)
            .collect();
        let mut function = Function::start("broadcast", &env).await;
        let (error_type, body) = function.api.init_error().await;
        assert_eq!(error_type, "Runtime.InvalidConfiguration");
        assert!(
            body["errorMessage"].as_str().unwrap().starts_with(missing),
            "{body}"
        );
        assert!(!function.exited().await.success());
    }
    let mut function = stack
        .function_with("chat", &[("FANOUT_CONCURRENCY", "zero".into())])
        .await;
    let (_, body) = function.api.init_error().await;
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("FANOUT_CONCURRENCY"),
        "{body}"
    );
    assert!(!function.exited().await.success());
}

#[tokio::test]
async fn every_function_starts_and_asks_for_work() {
    let stack = Stack::new().await;
    // the authorizer's configuration is its own; the others ignore it
    let issuer = [
        ("JWT_ISSUER", "https://issuer.example.com".to_string()),
        ("JWT_AUDIENCE", "webchat".to_string()),
    ];
    for function in webchat::lambda::Function::ALL {
        let function = stack.function_with(function.name(), &issuer).await;
        function.api.next_called(1).await;
    }
}

#[tokio::test]
async fn a_harness_that_sets_only_the_runtime_api_and_the_configuration_is_served() {
    let stack = Stack::new().await;
    let mut env = stack.env();
    env.extend([
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
    ]);
    let default = Function::start_bare("default", &env, false).await;
    let answer = default
        .invoke(&websocket_event("$default", "a=", Some("?")))
        .await
        .response();
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(stack.fake.delivered_to("a=").len(), 1);
}

#[test]
fn every_function_has_its_binary_and_every_other_binary_is_a_tool() {
    let mut binaries: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin"))
            .unwrap()
            .map(|entry| {
                entry
                    .unwrap()
                    .file_name()
                    .into_string()
                    .unwrap()
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .filter(|name| name != "webchat-local" && name != "webchat")
            .collect();
    binaries.sort();
    let mut functions: Vec<String> = webchat::lambda::Function::ALL
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    functions.sort();
    assert_eq!(binaries, functions);
}
