//! Rooms in the domain, with the in-memory stores: join and leave, a room's messages and only
//! its members hearing them, history pages and the catch-up after a reconnect, presence and its
//! limit, membership ending with the connection, and a large room's sharded fan-out.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use webchat::adapters::memory::{
    ManualClock, MemoryConnectionApi, MemoryEventBus, MemoryMetrics, MemoryQueue, MemoryRoomStore,
    MemoryStore, QueueSettings, settle, sqs_event,
};
use webchat::auth::Identity;
use webchat::domain::{Backoff, Chat, Deadline, Sender, Settings, Summary};
use webchat::lambda;
use webchat::ports::{ConnectionRecord, RoomStore, ShardJob};

type TestChat = Chat<MemoryStore, MemoryConnectionApi, MemoryEventBus, MemoryRoomStore>;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-06T08:00:00Z")
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

struct Test {
    chat: TestChat,
    clock: Arc<ManualClock>,
    metrics: Arc<MemoryMetrics>,
}

/// A chat over recording fakes, pages of 2 members (every room's read paginates), no queue.
fn chat(settings: Settings) -> Test {
    let clock = Arc::new(ManualClock::at(start()));
    let metrics = Arc::new(MemoryMetrics::default());
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
            ..settings
        },
        shards: None,
        metrics: metrics.clone(),
        limits: std::sync::Arc::new(webchat::adapters::memory::MemoryLimits::default()),
    };
    Test {
        chat,
        clock,
        metrics,
    }
}

/// Stores and opens a connection a minute before the clock's start (past the connect window).
fn connect(chat: &TestChat, id: &str, name: &str) {
    chat.store.insert(ConnectionRecord::new(
        id.into(),
        Some(name.into()),
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

/// The frames sent to `id` since the last call (a cursor per connection kept by the caller).
fn new_frames(chat: &TestChat, id: &str, seen: &mut usize) -> Vec<Value> {
    let all = frames(chat, id);
    let new = all[*seen..].to_vec();
    *seen = all.len();
    new
}

async fn join(chat: &TestChat, id: &str, room: &str) {
    let body = json!({"action": "join", "room": room}).to_string();
    chat.join(id, &body, Deadline::NONE).await.unwrap();
}

async fn say(chat: &TestChat, id: &str, room: &str, message: &str) {
    let body = json!({"action": "broadcast", "room": room, "message": message}).to_string();
    chat.broadcast(id, &body, Deadline::NONE).await.unwrap();
}

fn last(chat: &TestChat, id: &str) -> Value {
    frames(chat, id).pop().expect("a frame")
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

#[tokio::test]
async fn a_join_answers_the_rooms_seq_and_joining_again_is_harmless() {
    let Test { chat, .. } = chat(Settings::default());
    connect(&chat, "a=", "ada");
    join(&chat, "a=", "general").await;
    assert_eq!(
        last(&chat, "a="),
        json!({"type":"joined","room":"general","seq":0,"presence":true})
    );
    say(&chat, "a=", "general", "one").await;
    join(&chat, "a=", "general").await;
    assert_eq!(
        last(&chat, "a="),
        json!({"type":"joined","room":"general","seq":1,"presence":true})
    );
    assert_eq!(chat.rooms.rooms_of("a=").await.unwrap(), ["general"]);
    assert_eq!(chat.rooms.meta("general").await.unwrap().members, 1);
}

#[tokio::test]
async fn bad_room_names_and_a_21st_room_are_refused_and_change_nothing() {
    let Test { chat, .. } = chat(Settings::default());
    connect(&chat, "a=", "ada");
    for body in [
        r#"{"action":"join"}"#,
        r#"{"action":"join","room":""}"#,
        r#"{"action":"join","room":"two words"}"#,
        r#"{"action":"join","room":"r","since":-3}"#,
    ] {
        chat.join("a=", body, Deadline::NONE).await.unwrap();
        let code = last(&chat, "a=")["code"].clone();
        assert!(
            code == "invalid_field" || code == "missing_field",
            "{body}: {code}"
        );
    }
    for i in 0..20 {
        join(&chat, "a=", &format!("room-{i}")).await;
    }
    join(&chat, "a=", "one-too-many").await;
    let refused = last(&chat, "a=");
    assert_eq!(refused["code"], "too_many_rooms");
    assert!(refused["message"].as_str().unwrap().contains("20"));
    assert_eq!(chat.rooms.rooms_of("a=").await.unwrap().len(), 20);
    assert_eq!(chat.rooms.meta("one-too-many").await.unwrap().members, 0);
    // joining one it is in already is still harmless
    join(&chat, "a=", "room-3").await;
    assert_eq!(last(&chat, "a=")["type"], "joined");
}

#[tokio::test]
async fn two_people_in_two_rooms_hear_only_their_rooms_with_one_seq_for_everyone() {
    let Test { chat, metrics, .. } = chat(Settings::default());
    for (id, name) in [("a=", "ada"), ("b=", "bob"), ("c=", "cy"), ("d=", "dee")] {
        connect(&chat, id, name);
    }
    join(&chat, "a=", "red").await;
    join(&chat, "b=", "red").await;
    join(&chat, "c=", "blue").await;
    let mut seen = [0usize; 4];
    let ids = ["a=", "b=", "c=", "d="];
    for (i, id) in ids.iter().enumerate() {
        new_frames(&chat, id, &mut seen[i]);
    }
    say(&chat, "a=", "red", "hello red").await;
    say(&chat, "b=", "red", "hi ada").await;
    say(&chat, "c=", "blue", "anyone?").await;
    let heard = |i: usize, seen: &mut [usize; 4]| {
        new_frames(&chat, ids[i], &mut seen[i])
            .into_iter()
            .filter(|f| f["type"] == "broadcast")
            .collect::<Vec<_>>()
    };
    let a = heard(0, &mut seen);
    let b = heard(1, &mut seen);
    assert_eq!(a, b, "every member gets the same frames");
    assert_eq!(a.len(), 2);
    assert_eq!(
        a[0],
        json!({"type":"broadcast","room":"red","seq":1,"from":"a=","user":null,"name":"ada",
               "message":"hello red","sentAt":"2026-12-06T08:00:00.000Z"})
    );
    assert_eq!(
        (a[1]["seq"].clone(), a[1]["name"].clone()),
        (json!(2), json!("bob"))
    );
    let c = heard(2, &mut seen);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0]["room"].clone(), c[0]["seq"].clone()),
        (json!("blue"), json!(1))
    );
    assert!(heard(3, &mut seen).is_empty(), "in no room, hears no room");
    // a broadcast without a room still reaches everyone, with no seq
    chat.broadcast(
        "d=",
        r#"{"action":"broadcast","message":"all"}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    for i in 0..4 {
        let all = heard(i, &mut seen);
        assert_eq!(all.len(), 1);
        assert!(all[0].get("seq").is_none() && all[0].get("room").is_none());
    }
    let room_messages = metrics
        .summaries()
        .iter()
        .filter(|s| matches!(s, Summary::Inline(inline) if inline.room.is_some()))
        .count();
    assert_eq!(room_messages, 3);
}

#[tokio::test]
async fn a_non_member_cannot_speak_in_read_or_leave_a_room_and_nothing_is_kept() {
    let Test { chat, .. } = chat(Settings::default());
    connect(&chat, "a=", "ada");
    connect(&chat, "b=", "bob");
    join(&chat, "a=", "red").await;
    for body in [
        r#"{"action":"broadcast","room":"red","message":"let me in"}"#,
        r#"{"action":"history","room":"red"}"#,
        r#"{"action":"leave","room":"red"}"#,
    ] {
        let route = serde_json::from_str::<Value>(body).unwrap()["action"].clone();
        match route.as_str().unwrap() {
            "broadcast" => chat.broadcast("b=", body, Deadline::NONE).await,
            "history" => chat.history("b=", body, Deadline::NONE).await,
            _ => chat.leave("b=", body, Deadline::NONE).await,
        }
        .unwrap();
        let refused = last(&chat, "b=");
        assert_eq!(refused["code"], "not_a_member", "{body}");
        assert!(refused["message"].as_str().unwrap().contains("join"));
    }
    assert_eq!(
        chat.rooms.meta("red").await.unwrap().seq,
        0,
        "nothing numbered"
    );
    assert_eq!(
        frames(&chat, "a=").len(),
        1,
        "the member heard nothing but its joined"
    );
}

#[tokio::test]
async fn presence_tells_the_others_of_joins_and_leaves_and_leave_says_left() {
    let Test { chat, metrics, .. } = chat(Settings::default());
    connect(&chat, "a=", "ada");
    connect(&chat, "b=", "bob");
    join(&chat, "a=", "red").await;
    join(&chat, "b=", "red").await;
    let to_a = frames(&chat, "a=");
    assert_eq!(
        to_a.last().unwrap(),
        &json!({"type":"presence","room":"red","event":"joined","connectionId":"b=","user":null,"name":"bob"})
    );
    assert!(
        of_type(&frames(&chat, "b="), "presence").is_empty(),
        "no presence frame about oneself"
    );
    chat.leave("b=", r#"{"action":"leave","room":"red"}"#, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(last(&chat, "b="), json!({"type":"left","room":"red"}));
    assert_eq!(
        last(&chat, "a="),
        json!({"type":"presence","room":"red","event":"left","connectionId":"b=","user":null,"name":"bob"})
    );
    // the one who left hears the room no more
    let before = frames(&chat, "b=").len();
    say(&chat, "a=", "red", "gone?").await;
    assert_eq!(frames(&chat, "b=").len(), before);
    let presence: usize = metrics
        .summaries()
        .iter()
        .filter_map(|s| match s {
            Summary::Presence { delivered, .. } => Some(*delivered),
            _ => None,
        })
        .sum();
    assert_eq!(presence, 2, "one frame for b's join, one for its leave");
}

#[tokio::test]
async fn a_room_past_the_presence_limit_sends_no_presence_and_says_so() {
    let Test { chat, .. } = chat(Settings {
        presence_limit: 2,
        ..Settings::default()
    });
    for id in ["a=", "b=", "c="] {
        connect(&chat, id, "x");
    }
    join(&chat, "a=", "big").await;
    join(&chat, "b=", "big").await;
    assert_eq!(last(&chat, "b=")["presence"], true);
    assert_eq!(of_type(&frames(&chat, "a="), "presence").len(), 1);
    join(&chat, "c=", "big").await;
    assert_eq!(
        last(&chat, "c="),
        json!({"type":"joined","room":"big","seq":0,"presence":false})
    );
    assert_eq!(
        of_type(&frames(&chat, "a="), "presence").len(),
        1,
        "no frame past the limit"
    );
    assert!(of_type(&frames(&chat, "b="), "presence").is_empty());
    // a leave from a room of 3 (with the leaver) sends none either
    chat.leave("c=", r#"{"action":"leave","room":"big"}"#, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(of_type(&frames(&chat, "a="), "presence").len(), 1);
    // and from a room of 2 again it does
    chat.leave("b=", r#"{"action":"leave","room":"big"}"#, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(of_type(&frames(&chat, "a="), "presence").len(), 2);
}

#[tokio::test]
async fn history_pages_go_back_oldest_first_with_next_until_null() {
    let Test { chat, metrics, .. } = chat(Settings::default());
    connect(&chat, "a=", "ada");
    join(&chat, "a=", "r").await;
    for i in 1..=7 {
        say(&chat, "a=", "r", &format!("m{i}")).await;
    }
    let page = |body: &str| {
        let body = body.to_owned();
        let chat = &chat;
        async move {
            chat.history("a=", &body, Deadline::NONE).await.unwrap();
            let frame = last(chat, "a=");
            assert_eq!(
                (frame["type"].clone(), frame["room"].clone()),
                (json!("history"), json!("r"))
            );
            let seqs: Vec<u64> = frame["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_u64().unwrap())
                .collect();
            (seqs, frame["next"].clone(), frame)
        }
    };
    let (seqs, next, frame) = page(r#"{"action":"history","room":"r","limit":3}"#).await;
    assert_eq!((seqs, next), (vec![5, 6, 7], json!(5)));
    // each entry has the fields of the room's broadcast frame
    let seventh = frames(&chat, "a=")
        .into_iter()
        .find(|f| f["type"] == "broadcast" && f["seq"] == 7)
        .unwrap();
    assert_eq!(frame["messages"][2], seventh);
    let (seqs, next, _) = page(r#"{"action":"history","room":"r","limit":3,"before":5}"#).await;
    assert_eq!((seqs, next), (vec![2, 3, 4], json!(2)));
    let (seqs, next, _) = page(r#"{"action":"history","room":"r","limit":3,"before":2}"#).await;
    assert_eq!((seqs, next), (vec![1], Value::Null));
    let (seqs, next, _) = page(r#"{"action":"history","room":"r"}"#).await;
    assert_eq!(
        (seqs.len(), next),
        (7, Value::Null),
        "all, by default up to 50"
    );
    for bad in [
        r#"{"action":"history","room":"r","limit":0}"#,
        r#"{"action":"history","room":"r","limit":101}"#,
        r#"{"action":"history","room":"r","before":"5"}"#,
    ] {
        chat.history("a=", bad, Deadline::NONE).await.unwrap();
        assert_eq!(last(&chat, "a=")["code"], "invalid_field", "{bad}");
    }
    let reads = metrics
        .summaries()
        .iter()
        .filter(|s| {
            matches!(
                s,
                Summary::History {
                    catch_up: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(reads, 4);
}

#[tokio::test]
async fn history_expires_after_the_days_it_is_kept() {
    let Test { chat, clock, .. } = chat(Settings {
        history_days: 2,
        ..Settings::default()
    });
    connect(&chat, "a=", "ada");
    join(&chat, "a=", "r").await;
    say(&chat, "a=", "r", "old news").await;
    clock.advance(chrono::Duration::days(1));
    // the connection's own record would have expired: reconnect as a new one
    connect(&chat, "b=", "bob");
    chat.store.insert(ConnectionRecord::new(
        "b=".into(),
        Some("bob".into()),
        start() + chrono::Duration::days(1),
    ));
    join(&chat, "b=", "r").await;
    chat.history("b=", r#"{"action":"history","room":"r"}"#, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(last(&chat, "b=")["messages"].as_array().unwrap().len(), 1);
    clock.advance(chrono::Duration::days(1) + chrono::Duration::seconds(1));
    chat.store.insert(ConnectionRecord::new(
        "b=".into(),
        Some("bob".into()),
        start() + chrono::Duration::days(2),
    ));
    join(&chat, "b=", "r").await;
    chat.history("b=", r#"{"action":"history","room":"r"}"#, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        last(&chat, "b="),
        json!({"type":"history","room":"r","messages":[],"next":null})
    );
}

#[tokio::test]
async fn a_join_with_since_catches_up_on_what_was_missed_then_hears_live_messages() {
    let Test { chat, metrics, .. } = chat(Settings::default());
    connect(&chat, "a=", "ada");
    connect(&chat, "b=", "bob");
    join(&chat, "a=", "r").await;
    join(&chat, "b=", "r").await;
    say(&chat, "a=", "r", "m1").await;
    say(&chat, "a=", "r", "m2").await;
    // b drops (its $disconnect leaves the room) while a talks on
    chat.disconnect("b=", Deadline::NONE).await.unwrap();
    chat.api.remove("b=");
    for i in 3..=5 {
        say(&chat, "a=", "r", &format!("m{i}")).await;
    }
    // b comes back as a new connection, with the last seq it kept
    connect(&chat, "b2=", "bob");
    chat.join(
        "b2=",
        r#"{"action":"join","room":"r","since":2}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    let got = frames(&chat, "b2=");
    assert_eq!(
        got[0],
        json!({"type":"joined","room":"r","seq":5,"presence":true})
    );
    assert_eq!(got[1]["type"], "history");
    let missed: Vec<&str> = got[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(missed, ["m3", "m4", "m5"]);
    assert_eq!(got[1]["next"], Value::Null, "nothing else was missed");
    say(&chat, "a=", "r", "m6").await;
    assert_eq!(last(&chat, "b2=")["seq"], 6, "then live messages");
    // up to date: an empty catch-up, still a frame to say so
    connect(&chat, "c=", "cy");
    chat.join(
        "c=",
        r#"{"action":"join","room":"r","since":6}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(
        last(&chat, "c="),
        json!({"type":"history","room":"r","messages":[],"next":null})
    );
    let catch_ups = metrics
        .summaries()
        .iter()
        .filter(|s| matches!(s, Summary::History { catch_up: true, .. }))
        .count();
    assert_eq!(catch_ups, 2);
}

#[tokio::test]
async fn a_catch_up_of_more_than_a_hundred_sends_the_newest_and_points_at_the_rest() {
    let Test { chat, .. } = chat(Settings::default());
    connect(&chat, "a=", "ada");
    join(&chat, "a=", "r").await;
    for i in 1..=130 {
        say(&chat, "a=", "r", &format!("m{i}")).await;
    }
    connect(&chat, "b=", "bob");
    chat.join(
        "b=",
        r#"{"action":"join","room":"r","since":10}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    let history = last(&chat, "b=");
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 100);
    assert_eq!(
        (messages[0]["seq"].clone(), messages[99]["seq"].clone()),
        (json!(31), json!(130))
    );
    assert_eq!(history["next"], 31);
    // the rest, by history before next
    chat.history(
        "b=",
        r#"{"action":"history","room":"r","before":31,"limit":100}"#,
        Deadline::NONE,
    )
    .await
    .unwrap();
    let rest = last(&chat, "b=");
    assert_eq!(rest["messages"].as_array().unwrap().len(), 30);
    assert_eq!(rest["next"], Value::Null);
}

#[tokio::test]
async fn membership_ends_with_the_connection_on_disconnect_and_on_a_prune() {
    let Test { chat, .. } = chat(Settings::default());
    for (id, name) in [("a=", "ada"), ("b=", "bob"), ("c=", "cy")] {
        connect(&chat, id, name);
    }
    for room in ["r", "s"] {
        join(&chat, "a=", room).await;
        join(&chat, "b=", room).await;
        join(&chat, "c=", room).await;
    }
    chat.disconnect("b=", Deadline::NONE).await.unwrap();
    assert!(chat.rooms.rooms_of("b=").await.unwrap().is_empty());
    for room in ["r", "s"] {
        assert_eq!(chat.rooms.meta(room).await.unwrap().members, 2);
        let left = of_type(&frames(&chat, "a="), "presence")
            .into_iter()
            .filter(|f| f["event"] == "left" && f["room"] == room)
            .count();
        assert_eq!(left, 1, "{room}");
    }
    // c is gone without a $disconnect: the next delivery to it prunes it, and its rooms
    chat.api.remove("c=");
    say(&chat, "a=", "r", "still here?").await;
    assert!(!chat.store.contains("c="));
    assert!(chat.rooms.rooms_of("c=").await.unwrap().is_empty());
    assert_eq!(chat.rooms.meta("s").await.unwrap().members, 1);
    let left_c = of_type(&frames(&chat, "a="), "presence")
        .into_iter()
        .filter(|f| f["event"] == "left" && f["connectionId"] == "c=")
        .count();
    assert_eq!(left_c, 2, "told in both rooms");
}

#[tokio::test]
async fn cleanup_removes_an_expired_connections_memberships() {
    let Test { chat, clock, .. } = chat(Settings::default());
    connect(&chat, "a=", "ada");
    join(&chat, "a=", "r").await;
    clock.advance(chrono::Duration::hours(3));
    let report = chat.cleanup(Deadline::NONE).await.unwrap();
    assert_eq!(report.expired, 1);
    assert!(chat.rooms.rooms_of("a=").await.unwrap().is_empty());
    assert_eq!(chat.rooms.meta("r").await.unwrap().members, 0);
}

#[tokio::test]
async fn list_with_a_room_lists_its_live_members_only() {
    let Test { chat, .. } = chat(Settings::default());
    for (id, name) in [("a=", "ada"), ("b=", "bob"), ("c=", "cy"), ("d=", "dee")] {
        connect(&chat, id, name);
    }
    for id in ["a=", "b=", "c="] {
        join(&chat, id, "r").await;
    }
    chat.list("a=", r#"{"action":"list","room":"r"}"#, Deadline::NONE)
        .await
        .unwrap();
    let listed = last(&chat, "a=");
    assert_eq!(
        (listed["type"].clone(), listed["room"].clone()),
        (json!("connections"), json!("r"))
    );
    let mut names: Vec<&str> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ada", "bob", "cy"]);
    // without a room: everyone, as before
    chat.list("a=", r#"{"action":"list"}"#, Deadline::NONE)
        .await
        .unwrap();
    let everyone = last(&chat, "a=");
    assert!(everyone.get("room").is_none());
    assert_eq!(everyone["connections"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_signed_in_member_speaks_with_its_tokens_names() {
    let Test { chat, .. } = chat(Settings::default());
    let identity = Identity {
        user: "u-1".into(),
        name: "Ada Lovelace".into(),
        expires_at: start().timestamp() + 3600,
    };
    chat.connect(
        "a=",
        None,
        Some(&identity),
        Some(start() - chrono::Duration::seconds(60)),
    )
    .await
    .unwrap();
    chat.api.open("a=");
    join(&chat, "a=", "r").await;
    let body = r#"{"action":"broadcast","room":"r","message":"hi"}"#;
    let sender = Sender {
        connection_id: "a=",
        identity: Some(&identity),
    };
    chat.broadcast(sender, body, Deadline::NONE).await.unwrap();
    let said = last(&chat, "a=");
    assert_eq!(
        (said["user"].clone(), said["name"].clone()),
        (json!("u-1"), json!("Ada Lovelace"))
    );
}

/// A room larger than `shard_size` goes to the workers as one job per membership shard; every
/// member gets the message once, nobody else gets it.
#[tokio::test]
async fn a_large_rooms_message_is_sharded_by_membership_shard_and_reaches_each_member_once() {
    let queue = Arc::new(MemoryQueue::new(QueueSettings {
        workers: 1,
        visibility_timeout: Duration::ZERO,
        max_receives: 3,
    }));
    let Test {
        mut chat, metrics, ..
    } = chat(Settings {
        shard_size: 10,
        ..Settings::default()
    });
    chat.shards = Some(queue.clone());
    let members: Vec<String> = (0..60).map(|i| format!("m{i:04}=")).collect();
    for id in &members {
        connect(&chat, id, "m");
        join(&chat, id, "big").await;
    }
    connect(&chat, "out=", "outsider");
    say(&chat, "m0000=", "big", "to the room").await;
    let jobs: Vec<ShardJob> = queue
        .peek()
        .iter()
        .map(|body| serde_json::from_str(body).unwrap())
        .collect();
    assert_eq!(jobs.len(), 16);
    assert!(jobs.iter().all(|job| job.room.as_deref() == Some("big")));
    let mut shards: Vec<u32> = jobs.iter().map(|job| job.segment.index).collect();
    shards.sort();
    assert_eq!(shards, (0..16).collect::<Vec<_>>());
    assert!(
        metrics
            .summaries()
            .iter()
            .any(|s| matches!(s, Summary::Sharded(sharded) if sharded.room.as_deref() == Some("big") && sharded.estimate == 60))
    );
    while let Some(message) = queue.receive() {
        let answer = lambda::shards(
            &chat,
            sqs_event(std::slice::from_ref(&message)),
            Deadline::NONE,
        )
        .await;
        settle(&queue, &message, &Ok::<_, std::convert::Infallible>(answer));
    }
    for id in &members {
        let got = frames(&chat, id)
            .into_iter()
            .filter(|f| f["type"] == "broadcast")
            .collect::<Vec<_>>();
        assert_eq!(got.len(), 1, "{id}");
        assert_eq!(
            (got[0]["room"].clone(), got[0]["seq"].clone()),
            (json!("big"), json!(1))
        );
    }
    assert!(frames(&chat, "out=").is_empty());
}
