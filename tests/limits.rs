//! The per-client limits in the domain, with the in-memory stores and a manual clock: a store
//! that fails lets frames through, the order of a frame's budgets, a refused room message that
//! leaves no gap, presence charged to the one joining, every kind of refusal counting toward
//! closing, and the connections a user holds (a newcomer counted, a gone one not).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use webchat::adapters::memory::{
    ManualClock, MemoryConnectionApi, MemoryEventBus, MemoryLimits, MemoryRoomStore, MemoryStore,
};
use webchat::auth::Identity;
use webchat::domain::limits::{Limits, Rate, Taken};
use webchat::domain::{Admitted, Chat, ConnectError, Deadline, Sender, Settings};
use webchat::ports::{
    ConnectionApi, ConnectionRecord, ConnectionStore, LimitStore, NoMetrics, Outcome, RoomStore,
    StoreError,
};

type TestChat = Chat<MemoryStore, MemoryConnectionApi, MemoryEventBus, MemoryRoomStore>;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-06T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn chat(limits: Limits, store: Arc<dyn LimitStore>) -> (TestChat, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(start()));
    let chat = Chat {
        store: MemoryStore::new(),
        rooms: MemoryRoomStore::new(100),
        api: MemoryConnectionApi::new(),
        bus: MemoryEventBus::recording(),
        clock: clock.clone(),
        settings: Settings {
            limits,
            ..Settings::default()
        },
        shards: None,
        metrics: Arc::new(NoMetrics),
        limits: store,
    };
    (chat, clock)
}

fn memory() -> Arc<dyn LimitStore> {
    Arc::new(MemoryLimits::default())
}

/// Stores and opens a connection a minute before the clock's start (past the connect window).
fn connect(chat: &TestChat, id: &str) {
    chat.store.insert(ConnectionRecord::new(
        id.into(),
        Some(id.into()),
        start() - chrono::Duration::seconds(60),
    ));
    chat.api.open(id);
}

fn frames(chat: &TestChat, id: &str) -> Vec<Value> {
    chat.api
        .posts_to(id)
        .iter()
        .map(|frame| serde_json::from_str(frame).unwrap())
        .collect()
}

fn last(chat: &TestChat, id: &str) -> Value {
    frames(chat, id).pop().expect("a frame")
}

async fn join(chat: &TestChat, id: &str, room: &str) {
    let body = json!({"action": "join", "room": room}).to_string();
    chat.join(id, &body, Deadline::NONE).await.unwrap();
}

async fn say(chat: &TestChat, id: &str, room: &str, message: &str) {
    let body = json!({"action": "broadcast", "room": room, "message": message}).to_string();
    chat.broadcast(id, &body, Deadline::NONE).await.unwrap();
}

/// A limits store that always fails (DynamoDB down).
struct Failing;

impl LimitStore for Failing {
    fn take<'a>(
        &'a self,
        _key: &'a str,
        _cost: u64,
        _rate: Rate,
        _now_us: i64,
    ) -> BoxFuture<'a, Result<Taken, StoreError>> {
        Box::pin(async { Err(StoreError("the limits' table is unavailable".into())) })
    }
}

#[tokio::test]
async fn a_store_that_fails_lets_frames_and_broadcasts_through() {
    let limits = Limits {
        frames: Some(Rate::per_second(1, 1)),
        deliveries: Some(Rate::per_minute(1)),
        ..Limits::default()
    };
    let (chat, _) = chat(limits, Arc::new(Failing));
    connect(&chat, "a=");
    connect(&chat, "b=");
    for _ in 0..30 {
        assert_eq!(
            chat.admit(Sender::from("a="), Deadline::NONE)
                .await
                .unwrap(),
            Admitted::Yes
        );
    }
    // a budget of 1 could never be charged 2 (forbidden needs no store), but 1 could
    let body = json!({"action": "broadcast", "message": "hi"}).to_string();
    chat.broadcast("a=", &body, Deadline::NONE).await.unwrap();
    assert_eq!(last(&chat, "a=")["code"], "forbidden");
    let (chat, _) = self::chat(
        Limits {
            deliveries: Some(Rate::per_minute(5)),
            ..limits
        },
        Arc::new(Failing),
    );
    connect(&chat, "a=");
    connect(&chat, "b=");
    for _ in 0..3 {
        chat.broadcast("a=", &body, Deadline::NONE).await.unwrap();
    }
    assert_eq!(
        frames(&chat, "b=")
            .iter()
            .filter(|f| f["type"] == "broadcast")
            .count(),
        3
    );
}

#[tokio::test]
async fn a_frame_takes_its_connections_budget_then_its_users() {
    let limits = Limits {
        frames: Some(Rate::per_second(1, 1)),
        user_frames: Some(Rate::per_second(1, 2)),
        ..Limits::off()
    };
    let (chat, _) = chat(limits, memory());
    let ada = Identity {
        user: "u-ada".into(),
        name: "Ada".into(),
        expires_at: i64::MAX,
    };
    let from = |id| Sender {
        connection_id: id,
        identity: Some(&ada),
    };
    for id in ["a=", "b=", "c="] {
        connect(&chat, id);
    }
    let admit = async |id| chat.admit(from(id), Deadline::NONE).await.unwrap();
    assert_eq!(admit("a=").await, Admitted::Yes);
    // a's own budget refuses; the user's bucket is left as it was
    assert_eq!(admit("a=").await, Admitted::No);
    assert!(
        last(&chat, "a=")["message"]
            .as_str()
            .unwrap()
            .contains("this connection may send 1 a second")
    );
    assert_eq!(admit("b=").await, Admitted::Yes);
    // the user's two are spent, by a and b: c's first frame is refused for the user
    assert_eq!(admit("c=").await, Admitted::No);
    let refused = last(&chat, "c=");
    assert_eq!(refused["code"], "rate_limited");
    assert_eq!(refused["retryAfterMs"], 1000);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("your connections together may send 1 a second, 2 at once"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_room_message_past_the_budget_is_neither_numbered_nor_kept() {
    let limits = Limits {
        deliveries: Some(Rate::per_minute(3)),
        ..Limits::off()
    };
    let (chat, clock) = chat(limits, memory());
    connect(&chat, "a=");
    connect(&chat, "b=");
    join(&chat, "a=", "r").await;
    join(&chat, "b=", "r").await;
    say(&chat, "a=", "r", "one").await;
    say(&chat, "a=", "r", "two").await;
    let refused = last(&chat, "a=");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    // one delivery left, two needed: the next comes back in 20 s (3 a minute)
    assert_eq!(refused["retryAfterMs"], 20_000);
    clock.advance(chrono::Duration::seconds(20));
    say(&chat, "a=", "r", "three").await;
    let heard: Vec<(u64, String)> = frames(&chat, "b=")
        .iter()
        .filter(|f| f["type"] == "broadcast")
        .map(|f| (f["seq"].as_u64().unwrap(), f["message"].to_string()))
        .collect();
    assert_eq!(
        heard,
        [(1, "\"one\"".to_owned()), (2, "\"three\"".to_owned())]
    );
    let meta = chat.rooms.meta("r").await.unwrap();
    assert_eq!(meta.seq, 2, "no number was spent on the refused one");
}

#[tokio::test]
async fn presence_is_charged_to_the_one_joining_and_untold_past_its_budget() {
    let (mut chat, _) = chat(Limits::off(), memory());
    for id in ["a=", "b=", "c=", "d=", "e=", "f="] {
        connect(&chat, id);
    }
    for id in ["a=", "b=", "c=", "d="] {
        join(&chat, id, "big").await;
    }
    join(&chat, "a=", "small").await;
    chat.settings.limits.deliveries = Some(Rate::per_minute(3));
    let presence = |chat: &TestChat, id| {
        frames(chat, id)
            .iter()
            .filter(|f| f["type"] == "presence")
            .count()
    };
    let before = presence(&chat, "b=");
    // telling the big room's 4 would cost more than the budget of 3: joined, untold
    join(&chat, "e=", "big").await;
    assert_eq!(last(&chat, "e=")["type"], "joined");
    assert_eq!(presence(&chat, "b="), before);
    // the small room's one other fits
    let before = presence(&chat, "a=");
    join(&chat, "f=", "small").await;
    assert_eq!(presence(&chat, "a="), before + 1);
}

#[tokio::test]
async fn every_kind_of_refusal_counts_toward_closing_the_connection() {
    let limits = Limits {
        deliveries: Some(Rate::per_minute(1)),
        refusals_to_close: Limits::default().refusals_to_close,
        ..Limits::off()
    };
    let (chat, _) = chat(limits, memory());
    connect(&chat, "a=");
    connect(&chat, "b=");
    let body = json!({"action": "broadcast", "message": "to both"}).to_string();
    for _ in 0..99 {
        chat.broadcast("a=", &body, Deadline::NONE).await.unwrap();
        assert_eq!(last(&chat, "a=")["code"], "forbidden");
    }
    assert!(matches!(
        chat.api.describe("a=").await.unwrap(),
        Outcome::Done(_)
    ));
    // the 100th refusal in a minute says so, and closes
    chat.broadcast("a=", &body, Deadline::NONE).await.unwrap();
    let last = last(&chat, "a=");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .ends_with("so it is being closed"),
        "{last}"
    );
    assert_eq!(chat.api.describe("a=").await.unwrap(), Outcome::Gone);
    assert!(matches!(
        chat.api.describe("b=").await.unwrap(),
        Outcome::Done(_)
    ));
}

#[tokio::test]
async fn at_a_users_limit_a_newcomer_counts_and_a_gone_connection_does_not() {
    let limits = Limits {
        connections_per_user: Some(2),
        ..Limits::off()
    };
    let (chat, _) = chat(limits, memory());
    let ada = Identity {
        user: "u-ada".into(),
        name: "Ada".into(),
        expires_at: i64::MAX,
    };
    // one still connecting (its $connect returned a moment ago: 410 until it is established),
    // one gone a minute ago without a $disconnect
    chat.store.insert(
        ConnectionRecord::new("new=".into(), Some("Ada".into()), start())
            .of_user(Some("u-ada".into())),
    );
    chat.store.insert(
        ConnectionRecord::new(
            "gone=".into(),
            Some("Ada".into()),
            start() - chrono::Duration::seconds(60),
        )
        .of_user(Some("u-ada".into())),
    );
    chat.connect("x=", None, Some(&ada), Some(start()))
        .await
        .expect("the gone one does not count");
    assert!(
        chat.store.get("gone=", 0).await.unwrap().is_none(),
        "pruned"
    );
    assert!(chat.store.get("new=", 0).await.unwrap().is_some(), "kept");
    // now the newcomer and x: the limit
    let refused = chat.connect("y=", None, Some(&ada), Some(start())).await;
    let Err(ConnectError::TooMany(error)) = refused else {
        panic!("refused at the limit: {refused:?}");
    };
    assert_eq!(error.code.to_string(), "too_many_connections");
    assert!(error.message.contains("at most 2"), "{}", error.message);
    assert!(chat.store.get("y=", 0).await.unwrap().is_none());
}
