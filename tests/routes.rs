//! Every route, driven through the domain and the Lambda glue with the in-memory adapters, which
//! record what they were asked to do.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use webchat::adapters::memory::Peer;
use webchat::adapters::memory::{
    ManualClock, MemoryConnectionApi, MemoryEventBus, MemoryMetrics, MemoryRoomStore, MemoryStore,
    StoreCall,
};
use webchat::auth::Identity;
use webchat::domain::{
    Backoff, Chat, CleanupReport, ConnectError, Deadline, Deliveries, Sender, Settings, Summary,
};
use webchat::lambda::authorizer;
use webchat::lambda::events::{self, ConnectionMeta, Kind, StageMeta};
use webchat::lambda::{self, HandlerError};
use webchat::ports::{ApiError, ConnectionRecord, Outcome};
use webchat::protocol::{MAX_FRAME_BYTES, RouteKey, WelcomeDetail};

type TestChat = Chat<MemoryStore, MemoryConnectionApi, MemoryEventBus, MemoryRoomStore>;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn quick(attempts: u32) -> Backoff {
    Backoff {
        attempts,
        base: Duration::from_millis(1),
        max: Duration::from_millis(2),
    }
}

/// A chat over recording fakes; the store serves 2 records a page so every scan paginates.
fn chat() -> (TestChat, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(start()));
    let chat = Chat {
        store: MemoryStore::recording(2),
        rooms: MemoryRoomStore::new(2),
        api: MemoryConnectionApi::new(),
        bus: MemoryEventBus::recording(),
        clock: clock.clone(),
        settings: Settings {
            posts_in_flight: 4,
            throttle_backoff: quick(3),
            welcome_backoff: quick(4),
            // not about limits (tests/limits.rs is)
            limits: webchat::domain::limits::Limits::off(),
            ..Settings::default()
        },
        shards: None,
        metrics: std::sync::Arc::new(webchat::ports::NoMetrics),
        limits: std::sync::Arc::new(webchat::adapters::memory::MemoryLimits::default()),
    };
    (chat, clock)
}

/// Stores and opens a connection, as a completed `$connect` would, a minute before the clock's
/// start (past the connect window, so a 410 from it means it is gone).
fn join(chat: &TestChat, id: &str, name: Option<&str>) {
    chat.store.insert(ConnectionRecord::new(
        id.into(),
        name.map(Into::into),
        start() - chrono::Duration::seconds(60),
    ));
    chat.api.open(id);
}

/// Stores a connection whose `$connect` has not returned yet: `@connections` answers 410.
fn join_connecting(chat: &TestChat, id: &str) {
    chat.store
        .insert(ConnectionRecord::new(id.into(), None, start()));
}

fn frames_to(chat: &TestChat, id: &str) -> Vec<Value> {
    chat.api
        .posts_to(id)
        .iter()
        .map(|frame| serde_json::from_str(frame).unwrap())
        .collect()
}

fn only_error_code(chat: &TestChat, id: &str) -> String {
    let frames = frames_to(chat, id);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert!(frames[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    frames[0]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn connect_stores_the_connection_and_publishes_its_welcome() {
    let (chat, _) = chat();
    let record = chat
        .connect("abc=", Some("alice"), None, Some(start()))
        .await
        .unwrap();
    assert_eq!(record.name.as_deref(), Some("alice"));
    assert_eq!(record.expires_at, start().timestamp() + 2 * 3600 + 300);
    assert_eq!(chat.store.records(), vec![record]);
    let events = chat.bus.published();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].source, "webchat");
    assert_eq!(events[0].detail_type, "welcome");
    let detail: Value = serde_json::from_str(&events[0].detail).unwrap();
    assert_eq!(
        detail,
        json!({"connectionId": "abc=", "message": "Welcome! - connected on abc=", "name": "alice"})
    );
}

#[tokio::test]
async fn connect_refuses_an_invalid_name_and_keeps_nothing() {
    let (chat, _) = chat();
    let refused = chat
        .connect("abc=", Some("<script>"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(refused, ConnectError::Refused(_)));
    assert!(chat.store.is_empty());
    assert!(chat.bus.published().is_empty());
}

#[tokio::test]
async fn connect_fails_without_leaving_a_record_when_the_bus_fails() {
    let (chat, _) = chat();
    chat.bus.set_failing(Some("PutEvents failed"));
    let failed = chat.connect("abc=", None, None, None).await.unwrap_err();
    assert!(matches!(failed, ConnectError::Failed(_)));
    assert!(chat.store.is_empty());
}

#[tokio::test]
async fn connect_fails_when_the_store_fails() {
    let (chat, _) = chat();
    chat.store.set_failing(Some("DynamoDB is down"));
    assert!(matches!(
        chat.connect("abc=", None, None, None).await,
        Err(ConnectError::Failed(_))
    ));
}

#[tokio::test]
async fn connect_publishes_the_welcome_before_storing_the_record() {
    // Until $connect returns, @connections answers 410 for the new connection, and a broadcast
    // that found its record would prune it: the record is written as late as possible.
    let (chat, _) = chat();
    chat.connect("abc=", None, None, None).await.unwrap();
    let calls = chat.store.calls();
    assert_eq!(calls, vec![StoreCall::Put("abc=".into())]);
    assert_eq!(chat.bus.published().len(), 1);
    chat.bus.set_failing(Some("PutEvents failed"));
    assert!(chat.connect("def=", None, None, None).await.is_err());
    assert_eq!(
        chat.store.calls().len(),
        1,
        "nothing stored for a refused connection"
    );
}

#[tokio::test]
async fn disconnect_forgets_the_connection() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    join(&chat, "b", None);
    chat.disconnect("a", Deadline::NONE).await.unwrap();
    assert!(!chat.store.contains("a"));
    assert!(chat.store.contains("b"));
    chat.disconnect("never-was", Deadline::NONE).await.unwrap();
}

#[tokio::test]
async fn default_tells_the_sender_what_was_wrong_with_the_frame() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    join(&chat, "b", None);
    chat.default("a", b"not json", false, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "invalid_json");
    chat.default("b", br#"{"action":"dance"}"#, false, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(only_error_code(&chat, "b"), "unknown_action");
}

#[tokio::test]
async fn broadcast_reaches_every_live_connection_across_pages_with_the_senders_name() {
    let (chat, clock) = chat();
    for id in ["a", "b", "c", "d", "e"] {
        join(&chat, id, (id == "a").then_some("alice"));
    }
    // a record past its expiry is not delivered to even though its socket still answers
    let mut stale = ConnectionRecord::new("old".into(), None, start());
    stale.expires_at = start().timestamp() + 60;
    chat.store.insert(stale);
    chat.api.open("old");
    clock.advance(chrono::Duration::seconds(61));

    chat.broadcast(
        "a",
        r#"{"action":"broadcast","message":"Anybody <b>home</b>? \"✓\""}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    for id in ["a", "b", "c", "d", "e"] {
        let frames = frames_to(&chat, id);
        assert_eq!(frames.len(), 1, "{id}");
        assert_eq!(
            frames[0],
            json!({"type":"broadcast","from":"a","user":null,"name":"alice","message":"Anybody <b>home</b>? \"✓\"","sentAt":"2026-11-28T08:01:01.000Z"})
        );
    }
    assert!(chat.api.posts_to("old").is_empty());
    let scans = chat
        .store
        .calls()
        .into_iter()
        .filter(|c| *c == StoreCall::ScanRecipients)
        .count();
    assert!(
        scans >= 3,
        "six records two a page need three scans, got {scans}"
    );
}

#[tokio::test]
async fn broadcast_prunes_exactly_the_connections_that_are_gone_and_still_delivers_to_the_rest() {
    let (chat, _) = chat();
    for id in ["a", "b", "c", "d"] {
        join(&chat, id, None);
    }
    chat.api.remove("b");
    chat.api.remove("d");
    chat.broadcast(
        "a",
        r#"{"action":"broadcast","message":"hi"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(frames_to(&chat, "a").len(), 1);
    assert_eq!(frames_to(&chat, "c").len(), 1);
    let kept: Vec<String> = chat
        .store
        .records()
        .into_iter()
        .map(|r| r.connection_id)
        .collect();
    assert_eq!(kept, vec!["a", "c"]);
}

#[tokio::test]
async fn a_broadcast_and_a_cleanup_each_report_one_summary_with_their_counts() {
    let (mut chat, clock) = chat();
    let metrics = Arc::new(MemoryMetrics::default());
    chat.metrics = metrics.clone();
    for id in ["a", "b", "c"] {
        join(&chat, id, None);
    }
    chat.api.remove("c");
    let body = r#"{"action":"broadcast","message":"hi"}"#;
    chat.broadcast("a", body, Deadline::NONE).await.unwrap();
    join(&chat, "d", None);
    chat.api.remove("d");
    clock.advance(chrono::Duration::seconds(60));
    chat.cleanup(Deadline::NONE).await.unwrap();

    let summaries = metrics.summaries();
    let [Summary::Inline(broadcast), Summary::Cleanup { report, .. }] = &summaries[..] else {
        panic!("one broadcast summary, then one cleanup summary: {summaries:?}");
    };
    assert_eq!(broadcast.sender, "a");
    assert_eq!(
        broadcast.deliveries,
        Deliveries {
            delivered: 2,
            pruned: 1,
            complete: true,
            ..Deliveries::default()
        }
    );
    assert_eq!((report.checked, report.gone), (3, 1));
}

#[tokio::test]
async fn broadcast_retries_throttling_within_its_budget() {
    let (chat, _) = chat();
    for id in ["a", "b", "c"] {
        join(&chat, id, None);
    }
    let throttled = || Err(ApiError::Throttled("LimitExceededException".into()));
    chat.api.script("b", [throttled(), throttled()]); // two 429s, then it works
    chat.api
        .script("c", [throttled(), throttled(), throttled()]); // past the 3-call budget
    chat.broadcast(
        "a",
        r#"{"action":"broadcast","message":"hi"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    let to_sender = frames_to(&chat, "a");
    assert_eq!(to_sender.len(), 2, "{to_sender:?}");
    assert_eq!(to_sender[0]["type"], "broadcast");
    assert_eq!(
        to_sender[1]["code"], "delivery_incomplete",
        "the sender is told"
    );
    let told = to_sender[1]["message"].as_str().unwrap();
    assert!(
        told.contains("reached 2 connections") && told.contains("1 could not be reached"),
        "{told}"
    );
    assert_eq!(frames_to(&chat, "b").len(), 1);
    assert!(frames_to(&chat, "c").is_empty());
    assert!(
        chat.store.contains("c"),
        "a throttled connection is not gone"
    );
}

#[tokio::test]
async fn broadcast_rejects_a_bad_message_without_delivering_anything() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    join(&chat, "b", None);
    chat.broadcast("a", r#"{"action":"broadcast"}"#, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "missing_field");
    chat.broadcast(
        "b",
        &json!({"action":"broadcast","message":"x".repeat(16 * 1024 + 1)}).to_string(),
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(only_error_code(&chat, "b"), "message_too_large");
    assert_eq!(chat.api.posts().len(), 2);
}

#[tokio::test]
async fn a_failing_store_tells_the_sender_internal_and_reports_the_error() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    chat.store
        .set_failing(Some("ProvisionedThroughputExceeded"));
    assert!(
        chat.broadcast(
            "a",
            r#"{"action":"broadcast","message":"hi"}"#,
            Deadline::NONE
        )
        .await
        .is_err()
    );
    let frames = frames_to(&chat, "a");
    assert_eq!(frames[0]["code"], "internal");
    assert!(
        !frames[0]["message"]
            .as_str()
            .unwrap()
            .contains("Provisioned"),
        "internal detail must not leak"
    );
    assert!(
        chat.list("a", r#"{"action":"list"}"#, Deadline::NONE)
            .await
            .is_err()
    );
    assert!(
        chat.chat(
            "a",
            r#"{"action":"chat","connection":"b","message":"x"}"#,
            Deadline::NONE
        )
        .await
        .is_err()
    );
    assert_eq!(frames_to(&chat, "a").len(), 3);
}

#[tokio::test]
async fn list_sends_every_live_connection_in_frames_that_each_fit() {
    let (chat, _) = chat();
    for i in 0..600 {
        join(
            &chat,
            &format!("conn-{i:04}-xxxxx="),
            Some(&format!("name_{i:027}")),
        );
    }
    let mut expired = ConnectionRecord::new("conn-0300-expired=".into(), None, start());
    expired.expires_at = start().timestamp() - 1;
    chat.store.insert(expired);
    chat.list("conn-0000-xxxxx=", r#"{"action":"list"}"#, Deadline::NONE)
        .await
        .unwrap();
    let frames = chat.api.posts_to("conn-0000-xxxxx=");
    assert!(frames.len() >= 2, "600 entries do not fit one 32 KB frame");
    let mut listed = Vec::new();
    for frame in &frames {
        assert!(frame.len() <= MAX_FRAME_BYTES);
        let value: Value = serde_json::from_str(frame).unwrap();
        assert_eq!(value["type"], "connections");
        for entry in value["connections"].as_array().unwrap() {
            assert_eq!(entry["connectedAt"], "2026-11-28T07:59:00.000Z");
            listed.push(entry["connectionId"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        listed.len(),
        600,
        "every live connection, and no expired one"
    );
    assert!(!listed.contains(&"conn-0300-expired=".to_owned()));
    assert_eq!(listed[0], "conn-0000-xxxxx=");
}

#[tokio::test]
async fn chat_delivers_to_one_connection_only() {
    let (chat, _) = chat();
    join(&chat, "a", Some("alice"));
    join(&chat, "b", None);
    join(&chat, "c", None);
    chat.chat(
        "a",
        r#"{"action":"chat","connection":"b","message":"Yo!"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    let frames = frames_to(&chat, "b");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "chat");
    assert_eq!(frames[0]["from"], "a");
    assert_eq!(frames[0]["to"], "b");
    assert_eq!(frames[0]["name"], "alice");
    assert_eq!(frames[0]["message"], "Yo!");
    assert_eq!(
        frames_to(&chat, "a"),
        frames,
        "the sender's copy, once delivered, is the frame its target got"
    );
    assert!(frames_to(&chat, "c").is_empty());
}

#[tokio::test]
async fn a_chat_to_oneself_arrives_once() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    let body = r#"{"action":"chat","connection":"a","message":"note"}"#;
    chat.chat("a", body, Deadline::NONE).await.unwrap();
    assert_eq!(frames_to(&chat, "a").len(), 1);
}

#[tokio::test]
async fn a_chat_to_a_name_says_that_connection_takes_an_id() {
    let (chat, _) = chat();
    join(&chat, "L0SM9cOFvHcCIhw=", None);
    let body = r#"{"action":"chat","connection":"bob","message":"hi"}"#;
    chat.chat("L0SM9cOFvHcCIhw=", body, Deadline::NONE)
        .await
        .unwrap();
    let frames = frames_to(&chat, "L0SM9cOFvHcCIhw=");
    assert_eq!(frames[0]["code"], "connection_not_found");
    let message = frames[0]["message"].as_str().unwrap();
    assert!(message.contains("not a name"), "{message}");
}

#[tokio::test]
async fn chat_to_an_unknown_connection_answers_connection_not_found() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    chat.chat(
        "a",
        r#"{"action":"chat","connection":"nobody","message":"Yo!"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "connection_not_found");
}

#[tokio::test]
async fn chat_to_a_gone_connection_answers_connection_not_found_and_prunes_it() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    join(&chat, "b", None);
    chat.api.remove("b");
    chat.chat(
        "a",
        r#"{"action":"chat","connection":"b","message":"Yo!"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "connection_not_found");
    assert!(!chat.store.contains("b"));
    assert!(chat.store.contains("a"));
}

#[tokio::test]
async fn chat_checks_its_fields() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    chat.chat("a", r#"{"action":"chat","message":"Yo!"}"#, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "missing_field");
}

#[tokio::test]
async fn post_delivers_the_welcome_retrying_while_the_connection_is_not_yet_established() {
    let (chat, _) = chat();
    chat.api.open("abc=");
    chat.api
        .script("abc=", [Ok(Outcome::Gone), Ok(Outcome::Gone)]);
    let welcome = WelcomeDetail {
        connection_id: "abc=".into(),
        message: "Welcome! - connected on abc=".into(),
        user: None,
        name: None,
    };
    assert_eq!(
        chat.post(&welcome, Deadline::NONE).await.unwrap(),
        Outcome::Done(())
    );
    assert_eq!(
        frames_to(&chat, "abc="),
        vec![
            json!({"type":"welcome","connectionId":"abc=","user":null,"name":null,"message":"Welcome! - connected on abc="})
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn post_gives_up_on_a_connection_that_stays_gone() {
    let (mut chat, _) = chat();
    chat.settings.welcome_backoff = Settings::default().welcome_backoff;
    let welcome = WelcomeDetail {
        connection_id: "left=".into(),
        message: "hi".into(),
        user: None,
        name: None,
    };
    assert_eq!(
        chat.post(&welcome, Deadline::NONE).await.unwrap(),
        Outcome::Gone
    );
    let attempts = chat.api.attempts_to("left=");
    assert!(
        (2..=10).contains(&attempts),
        "retried briefly with the shipped settings, then gave up: {attempts} attempts"
    );
}

#[tokio::test]
async fn cleanup_removes_expired_and_gone_records_and_keeps_live_ones() {
    let (chat, clock) = chat();
    for id in ["live-1", "live-2", "gone-1", "gone-2"] {
        join(&chat, id, None);
    }
    chat.api.remove("gone-1");
    chat.api.remove("gone-2");
    let mut expired = ConnectionRecord::new("expired".into(), None, start());
    expired.expires_at = start().timestamp() + 10;
    chat.store.insert(expired);
    chat.api.open("expired");
    // past the connect window: a 410 now means gone, not still connecting
    clock.advance(chrono::Duration::seconds(60));

    let report = chat.cleanup(Deadline::NONE).await.unwrap();
    assert_eq!(
        report,
        CleanupReport {
            checked: 5,
            expired: 1,
            gone: 2,
            failed: 0,
            complete: true,
        }
    );
    let kept: Vec<String> = chat
        .store
        .records()
        .into_iter()
        .map(|r| r.connection_id)
        .collect();
    assert_eq!(kept, vec!["live-1", "live-2"]);
    assert!(
        !chat.api.describes().contains(&"expired".to_string()),
        "expired records need no GetConnection"
    );
}

/// An event for `route` from connection `connection_id` (connected at 1 795 852 800 000 ms),
/// built as the local gateway builds it; `None` leaves the connection id out (no API Gateway
/// event lacks one).
fn websocket_event(
    route: RouteKey,
    connection_id: Option<&str>,
    body: Option<&str>,
) -> ApiGatewayWebsocketProxyRequest {
    let stage = StageMeta {
        api_id: "api".into(),
        stage: "local".into(),
        domain_name: "example".into(),
    };
    let connection = ConnectionMeta {
        connection_id: connection_id.unwrap_or_default().into(),
        connected_at: DateTime::from_timestamp_millis(1_795_852_800_000).unwrap(),
        source_ip: None,
        user_agent: None,
        authorizer: Default::default(),
    };
    let headers = http::HeaderMap::new();
    let kind = match route {
        RouteKey::Connect => Kind::Connect {
            headers: &headers,
            query: &[],
        },
        RouteKey::Disconnect => Kind::Disconnect {
            status_code: 1000,
            reason: String::new(),
        },
        _ => Kind::Message {
            route,
            body: body.unwrap_or_default().into(),
            base64: false,
        },
    };
    let mut event = events::websocket_event(&stage, &connection, kind);
    event.request_context.connection_id = connection_id.map(Into::into);
    event
}

#[tokio::test]
async fn the_lambda_glue_answers_200_and_runs_the_route() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    let event = websocket_event(
        RouteKey::Broadcast,
        Some("a"),
        Some(r#"{"action":"broadcast","message":"hi"}"#),
    );
    let response = lambda::websocket(&chat, RouteKey::Broadcast, &event, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(response.status_code, 200);
    assert_eq!(frames_to(&chat, "a")[0]["message"], "hi");
}

#[tokio::test]
async fn the_lambda_glue_refuses_a_connect_with_a_bad_name_with_400() {
    let (chat, _) = chat();
    let mut event = websocket_event(RouteKey::Connect, Some("a"), None);
    event.query_string_parameters =
        std::collections::HashMap::from([("name".to_string(), "no spaces".to_string())]).into();
    let response = lambda::websocket(&chat, RouteKey::Connect, &event, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(response.status_code, 400);
    assert!(chat.store.is_empty());
}

#[tokio::test]
async fn the_lambda_glue_takes_connected_at_from_api_gateway() {
    let (chat, _) = chat();
    let event = websocket_event(RouteKey::Connect, Some("a"), None);
    lambda::websocket(&chat, RouteKey::Connect, &event, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        chat.store.records()[0]
            .connected_at
            .time()
            .timestamp_millis(),
        1_795_852_800_000
    );
}

#[tokio::test]
async fn an_event_without_a_connection_id_is_a_malformed_event() {
    let (chat, _) = chat();
    let event = websocket_event(RouteKey::List, None, None);
    let error = lambda::websocket(&chat, RouteKey::List, &event, Deadline::NONE)
        .await
        .unwrap_err();
    assert!(matches!(error, HandlerError::MalformedEvent(_)), "{error}");
}

#[tokio::test]
async fn binary_frames_reach_default_base64_encoded() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    let mut event = websocket_event(RouteKey::Default, Some("a"), Some("AAEC/w=="));
    event.is_base64_encoded = true;
    lambda::websocket(&chat, RouteKey::Default, &event, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "invalid_json");
}

#[tokio::test]
async fn post_rejects_events_that_are_not_welcomes() {
    let (chat, _) = chat();
    let event: EventBridgeEvent<Value> = serde_json::from_value(json!({
        "version": "0", "id": "x", "detail-type": "something-else", "source": "webchat",
        "account": "1", "time": "2026-11-28T08:00:00Z", "region": "eu-west-1", "resources": [],
        "detail": {"connectionId": "a", "message": "m"}
    }))
    .unwrap();
    assert!(matches!(
        lambda::post(&chat, event, Deadline::NONE).await,
        Err(HandlerError::MalformedEvent(_))
    ));
    let event: EventBridgeEvent<Value> = serde_json::from_value(json!({
        "detail-type": "welcome", "source": "webchat", "detail": {"connection": 1}
    }))
    .unwrap();
    assert!(matches!(
        lambda::post(&chat, event, Deadline::NONE).await,
        Err(HandlerError::MalformedEvent(_))
    ));
}

mod never_panics {
    //! Property tests over request parsing through the Lambda glue: whatever a client sends, and
    //! whatever shape an event arrives in, no route panics and every frame gets an answer.

    use super::*;
    use proptest::prelude::*;

    fn route() -> impl Strategy<Value = RouteKey> {
        prop::sample::select(RouteKey::ALL.to_vec())
    }

    fn body() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            (
                prop::sample::select(vec!["broadcast", "list", "chat", "", "x"]),
                any::<Option<String>>(),
                any::<Option<String>>()
            )
                .prop_map(|(action, connection, message)| {
                    json!({"action": action, "connection": connection, "message": message})
                        .to_string()
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_frame_on_any_route_is_answered(route in route(), body in body(), base64 in any::<bool>()) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (chat, _) = chat();
                join(&chat, "a", Some("alice"));
                join(&chat, "b", None);
                let mut event = websocket_event(route, Some("a"), Some(&body));
                event.is_base64_encoded = base64;
                event.query_string_parameters =
                    std::collections::HashMap::from([("name".to_string(), body.clone())]).into();
                let response = lambda::websocket(&chat, route, &event, Deadline::NONE).await.unwrap();
                prop_assert!(response.status_code == 200 || (route == RouteKey::Connect && response.status_code == 400));
                if !matches!(route, RouteKey::Connect | RouteKey::Disconnect) {
                    prop_assert!(!chat.api.posts().is_empty(), "every frame is answered or delivered");
                }
                Ok(())
            })?;
        }

        #[test]
        fn any_json_event_is_served_or_rejected_without_panicking(event in arb_json(4)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (chat, _) = chat();
                if let Ok(event) = serde_json::from_value::<ApiGatewayWebsocketProxyRequest>(event.clone()) {
                    for route in RouteKey::ALL {
                        let _ = lambda::websocket(&chat, route, &event, Deadline::NONE).await;
                    }
                }
                if let Ok(event) = serde_json::from_value::<EventBridgeEvent<Value>>(event) {
                    let _ = lambda::post(&chat, event, Deadline::NONE).await;
                }
            });
        }
    }

    fn arb_json(depth: u32) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec![
                "requestContext",
                "connectionId",
                "routeKey",
                "body",
                "detail",
                "source",
                "webchat",
                "welcome",
                "$connect",
                "a"
            ])
            .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(depth, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "requestContext",
                        "connectionId",
                        "routeKey",
                        "eventType",
                        "body",
                        "isBase64Encoded",
                        "connectedAt",
                        "requestTimeEpoch",
                        "queryStringParameters",
                        "detail",
                        "detail-type",
                        "source",
                        "name",
                        "message",
                        "identity",
                    ])
                    .prop_map(String::from),
                    inner,
                    0..6,
                )
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }
}

#[tokio::test]
async fn broadcast_keeps_a_newcomer_that_answers_gone_while_it_connects() {
    let (mut chat, _) = chat();
    let metrics = Arc::new(MemoryMetrics::default());
    chat.metrics = metrics.clone();
    join(&chat, "a", None);
    join_connecting(&chat, "new");
    join(&chat, "old", None);
    chat.api.remove("old");
    chat.broadcast(
        "a",
        r#"{"action":"broadcast","message":"hi"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert!(
        chat.store.contains("new"),
        "a newcomer is never pruned on 410"
    );
    assert!(
        !chat.store.contains("old"),
        "an older 410 is pruned as before"
    );
    let to_sender = frames_to(&chat, "a");
    assert_eq!(
        to_sender.len(),
        1,
        "a newcomer is no failure: {to_sender:?}"
    );
    let summaries = metrics.summaries();
    let [Summary::Inline(broadcast)] = &summaries[..] else {
        panic!("one broadcast summary: {summaries:?}");
    };
    assert_eq!(
        broadcast.deliveries,
        Deliveries {
            delivered: 1,
            pruned: 1,
            connecting: 1,
            complete: true,
            ..Deliveries::default()
        },
        "the newcomer is counted as connecting"
    );
}

#[tokio::test]
async fn chat_to_a_newcomer_still_connecting_keeps_it_and_says_so() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    join_connecting(&chat, "new");
    chat.chat(
        "a",
        r#"{"action":"chat","connection":"new","message":"Yo!"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "connection_not_found");
    assert!(
        frames_to(&chat, "a")[0]["message"]
            .as_str()
            .unwrap()
            .contains("still connecting")
    );
    assert!(chat.store.contains("new"));
}

#[tokio::test]
async fn cleanup_keeps_a_newcomer_still_connecting() {
    let (chat, _) = chat();
    join_connecting(&chat, "new");
    join(&chat, "old", None);
    chat.api.remove("old");
    let report = chat.cleanup(Deadline::NONE).await.unwrap();
    assert_eq!((report.checked, report.gone), (2, 1));
    assert!(chat.store.contains("new"));
    assert!(!chat.store.contains("old"));
}

/// Settings with a short deadline reserve and margin, so deadline tests take a second.
fn in_a_hurry(chat: &mut TestChat) {
    chat.settings.posts_in_flight = 1;
    chat.settings.deadline_reserve = Duration::from_millis(100);
    chat.settings.stop_margin = Duration::from_millis(200);
}

// Timing tests run on paused time: the clock moves only when every task waits, so the deadline
// arithmetic is exact however busy the machine.
#[tokio::test(start_paused = true)]
async fn broadcast_stops_starting_posts_before_the_deadline_and_tells_the_sender() {
    let (mut chat, _) = chat();
    in_a_hurry(&mut chat);
    for i in 0..30 {
        join(&chat, &format!("c{i:02}"), None);
    }
    chat.api.set_delay(Duration::from_millis(40));
    // the reserve is 100 ms and the stop margin 70 (a tenth of 700): posts start until 530 ms,
    // one at a time, 40 ms each, so 14 of the 30 are reached
    let deadline = Deadline::after(Duration::from_millis(700));
    chat.broadcast("c00", r#"{"action":"broadcast","message":"hi"}"#, deadline)
        .await
        .unwrap();
    let to_sender = frames_to(&chat, "c00");
    assert_eq!(to_sender[0]["type"], "broadcast");
    let told = to_sender.last().unwrap();
    assert_eq!(told["code"], "delivery_incomplete");
    let message = told["message"].as_str().unwrap();
    assert!(message.contains("time limit"), "{message}");
    let delivered = chat
        .api
        .posts()
        .iter()
        .filter(|(_, frame)| frame.contains("\"broadcast\""))
        .count();
    assert_eq!(delivered, 14);
    assert!(
        message.contains(&format!("reached {delivered} connections")),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_that_hangs_is_cut_off_before_the_deadline() {
    let (mut chat, _) = chat();
    in_a_hurry(&mut chat);
    join(&chat, "a", None);
    join(&chat, "b", None);
    chat.api.set_delay(Duration::from_secs(30));
    chat.api.script("a", [Ok(Outcome::Done(()))]); // the sender's reply goes through
    let started = tokio::time::Instant::now();
    let result = chat
        .chat(
            "a",
            r#"{"action":"chat","connection":"b","message":"Yo!"}"#,
            Deadline::after(Duration::from_millis(500)),
        )
        .await;
    assert!(result.is_err(), "a post cut off is a failure");
    assert_eq!(
        only_error_code(&chat, "a"),
        "internal",
        "the sender is told in time"
    );
    assert!(
        started.elapsed() <= Duration::from_millis(500),
        "a post that never answers does not outlive the deadline ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_scan_that_fails_midway_tells_the_sender_and_fails_the_invocation() {
    let (chat, _) = chat();
    for id in ["a", "b", "c", "d", "e", "f"] {
        join(&chat, id, None);
    }
    chat.store.fail_scans_after(1); // the first page of 2, then the Scan fails
    let result = chat
        .broadcast(
            "a",
            r#"{"action":"broadcast","message":"hi"}"#,
            Deadline::NONE,
        )
        .await;
    assert!(result.is_err(), "the invocation reports the failed Scan");
    let to_sender = frames_to(&chat, "a");
    assert_eq!(to_sender.len(), 2, "{to_sender:?}");
    assert_eq!(to_sender[1]["code"], "delivery_incomplete");
    let message = to_sender[1]["message"].as_str().unwrap();
    assert!(message.contains("reached 2 connections"), "{message}");
    assert!(
        message.contains("could not be read to its end"),
        "{message}"
    );
}

// --- signed-in connections (the authorizer's identity) ---------------------------------------

fn identity(user: &str, name: &str) -> Identity {
    Identity {
        user: user.into(),
        name: name.into(),
        // an hour after the clock's start
        expires_at: start().timestamp() + 3600,
    }
}

/// Stores and opens a connection of a signed-in user, as `join` does.
fn join_as(chat: &TestChat, id: &str, who: &Identity) {
    chat.store.insert(
        ConnectionRecord::new(
            id.into(),
            Some(who.name.clone()),
            start() - chrono::Duration::seconds(60),
        )
        .of_user(Some(who.user.clone())),
    );
    chat.api.open(id);
}

/// The event as API Gateway sends it on a connection its authorizer allowed: the context, and
/// `principalId`, in `requestContext.authorizer`.
fn signed_in(
    mut event: ApiGatewayWebsocketProxyRequest,
    who: &Identity,
) -> ApiGatewayWebsocketProxyRequest {
    let mut fields: std::collections::HashMap<String, Value> =
        authorizer::context_of(who).into_iter().collect();
    fields.insert("principalId".into(), json!(who.user));
    fields.insert("integrationLatency".into(), json!(41));
    event.request_context.authorizer.fields = fields;
    event
}

#[tokio::test]
async fn a_signed_in_connect_takes_user_and_name_from_the_token_not_the_query() {
    let (chat, _) = chat();
    let ada = identity("u-ada", "Ada Lovelace");
    let mut event = signed_in(websocket_event(RouteKey::Connect, Some("a"), None), &ada);
    // a name the query would refuse is ignored, not refused
    event.query_string_parameters =
        std::collections::HashMap::from([("name".to_string(), "<script>".to_string())]).into();
    event.headers.insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("webchat.v1, eyJ.token"),
    );
    let response = lambda::websocket(&chat, RouteKey::Connect, &event, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(response.status_code, 200);
    assert_eq!(
        response.headers.get("sec-websocket-protocol").unwrap(),
        "webchat.v1",
        "the subprotocol the browser offered is echoed"
    );
    let record = &chat.store.records()[0];
    assert_eq!(record.user.as_deref(), Some("u-ada"));
    assert_eq!(record.name.as_deref(), Some("Ada Lovelace"));
    let detail: Value = serde_json::from_str(&chat.bus.published()[0].detail).unwrap();
    assert_eq!(detail["user"], "u-ada");
    assert_eq!(detail["name"], "Ada Lovelace");
    // the welcome then says who
    let welcome: WelcomeDetail = serde_json::from_value(detail).unwrap();
    chat.api.open("a");
    chat.post(&welcome, Deadline::NONE).await.unwrap();
    assert_eq!(
        frames_to(&chat, "a")[0],
        json!({"type":"welcome","connectionId":"a","user":"u-ada","name":"Ada Lovelace","message":"Welcome! - connected on a"})
    );
}

#[tokio::test]
async fn a_connect_without_the_subprotocol_gets_no_protocol_header() {
    let (chat, _) = chat();
    let event = websocket_event(RouteKey::Connect, Some("a"), None);
    let response = lambda::websocket(&chat, RouteKey::Connect, &event, Deadline::NONE)
        .await
        .unwrap();
    assert!(response.headers.get("sec-websocket-protocol").is_none());
}

#[tokio::test]
async fn broadcasts_chats_and_lists_say_who_without_reading_the_store_for_the_sender() {
    let (chat, _) = chat();
    let ada = identity("u-ada", "Ada Lovelace");
    let bob = identity("u-bob", "Bob");
    join_as(&chat, "a", &ada);
    join_as(&chat, "b", &bob);
    join(&chat, "c", Some("carol"));
    let event = signed_in(
        websocket_event(
            RouteKey::Broadcast,
            Some("a"),
            Some(r#"{"action":"broadcast","message":"hi"}"#),
        ),
        &ada,
    );
    lambda::websocket(&chat, RouteKey::Broadcast, &event, Deadline::NONE)
        .await
        .unwrap();
    for id in ["a", "b", "c"] {
        let frame = &frames_to(&chat, id)[0];
        assert_eq!(frame["user"], "u-ada", "{id}");
        assert_eq!(frame["name"], "Ada Lovelace", "{id}");
    }
    assert!(
        !chat.store.calls().contains(&StoreCall::Get("a".into())),
        "the sender's identity came from the event"
    );
    chat.list("c", r#"{"action":"list"}"#, Deadline::NONE)
        .await
        .unwrap();
    let listed = frames_to(&chat, "c").pop().unwrap();
    let mut users: Vec<Value> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["user"].clone())
        .collect();
    users.sort_by_key(Value::to_string);
    assert_eq!(users, [json!("u-ada"), json!("u-bob"), Value::Null]);
}

#[tokio::test]
async fn a_chat_to_a_user_reaches_each_of_their_connections_and_only_the_senders_copy() {
    let (chat, _) = chat();
    let ada = identity("u-ada", "Ada");
    let bob = identity("u-bob", "Bob");
    join_as(&chat, "ada-1", &ada);
    join_as(&chat, "ada-2", &ada);
    join_as(&chat, "bob-1", &bob);
    join_as(&chat, "bob-2", &bob);
    join_as(&chat, "bob-3", &bob);
    chat.api.remove("bob-3"); // gone, not yet pruned
    let sender = Sender {
        connection_id: "ada-1",
        identity: Some(&ada),
    };
    chat.chat(
        sender,
        r#"{"action":"chat","user":"u-bob","message":"psst"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    let expected = json!({"type":"chat","from":"ada-1","toUser":"u-bob","user":"u-ada","name":"Ada","message":"psst","sentAt":"2026-11-28T08:00:00.000Z"});
    for id in ["bob-1", "bob-2", "ada-1"] {
        assert_eq!(frames_to(&chat, id), vec![expected.clone()], "{id}");
    }
    assert!(
        frames_to(&chat, "ada-2").is_empty(),
        "the sender's other tab"
    );
    assert!(
        !chat
            .store
            .records()
            .iter()
            .any(|r| r.connection_id == "bob-3"),
        "the gone connection was pruned"
    );

    // to oneself: every own connection, the sender's once
    chat.chat(
        sender,
        r#"{"action":"chat","user":"u-ada","message":"note"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(frames_to(&chat, "ada-1").len(), 2);
    assert_eq!(frames_to(&chat, "ada-2").len(), 1);
}

#[tokio::test]
async fn a_chat_to_a_user_with_no_live_connection_is_user_not_found() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    chat.chat(
        "a",
        r#"{"action":"chat","user":"u-nobody","message":"hello?"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "user_not_found");
}

#[tokio::test]
async fn a_chat_to_both_or_neither_is_refused_with_its_code() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    chat.chat(
        "a",
        r#"{"action":"chat","user":"u","connection":"a","message":"x"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "invalid_field");
    join(&chat, "b", None);
    chat.chat("b", r#"{"action":"chat","message":"x"}"#, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(only_error_code(&chat, "b"), "missing_field");
}

#[tokio::test]
async fn a_frame_after_the_token_expired_is_answered_token_expired_and_the_connection_closed() {
    let (chat, clock) = chat();
    let ada = identity("u-ada", "Ada");
    join_as(&chat, "a", &ada);
    join(&chat, "b", None);
    clock.advance(chrono::Duration::seconds(3601));
    for (route, body) in [
        (
            RouteKey::Broadcast,
            r#"{"action":"broadcast","message":"late"}"#,
        ),
        (RouteKey::List, r#"{"action":"list"}"#),
    ] {
        let event = signed_in(websocket_event(route, Some("a"), Some(body)), &ada);
        let response = lambda::websocket(&chat, route, &event, Deadline::NONE)
            .await
            .unwrap();
        assert_eq!(response.status_code, 200);
    }
    assert_eq!(only_error_code(&chat, "a"), "token_expired");
    assert!(frames_to(&chat, "b").is_empty(), "nothing was broadcast");
    assert!(
        chat.api.peer("a").is_none_or(|peer| peer.info().is_none()),
        "closed"
    );
    // the expiry came from the event: no store read decided it
    assert!(!chat.store.calls().contains(&StoreCall::Get("a".into())));
}

#[tokio::test]
async fn a_frame_at_the_tokens_last_second_still_goes_through() {
    let (chat, clock) = chat();
    let ada = identity("u-ada", "Ada");
    join_as(&chat, "a", &ada);
    clock.advance(chrono::Duration::seconds(3600));
    let event = signed_in(
        websocket_event(
            RouteKey::Broadcast,
            Some("a"),
            Some(r#"{"action":"broadcast","message":"just in time"}"#),
        ),
        &ada,
    );
    lambda::websocket(&chat, RouteKey::Broadcast, &event, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(frames_to(&chat, "a")[0]["message"], "just in time");
}

#[tokio::test]
async fn a_broadcast_to_a_room_never_reaches_anyone_outside_it() {
    let (chat, _) = chat();
    join(&chat, "a", None);
    join(&chat, "b", None);
    chat.broadcast(
        "a",
        r#"{"action":"broadcast","room":"lobby","message":"members only"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(only_error_code(&chat, "a"), "not_a_member");
    assert!(frames_to(&chat, "b").is_empty());
}
