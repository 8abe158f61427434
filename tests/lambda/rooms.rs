//! The rooms store on DynamoDB (moto), with the keys and expressions the stack's tables serve:
//! the same behaviour as the in-memory store's tests ask of it. Then rooms through the shipped
//! `join`, `broadcast`, `history`, `list`, `leave` and `disconnect` binaries.

use chrono::Utc;
use webchat::adapters::dynamodb::DynamoStore;
use webchat::adapters::rooms::DynamoRoomStore;
use webchat::ports::{
    ConnectedAt, ConnectionRecord, ConnectionStore, Departed, HistoryPage, Joined,
    MEMBERSHIP_SHARDS, Member, RoomMeta, RoomStore, SeqRange, membership_shard,
};
use webchat::protocol::RoomMessage;

use super::{Stack, frames, moto, websocket_event};

/// The stores over a connections table and the rooms table beside it.
async fn stores(page_size: Option<i32>) -> (DynamoRoomStore, DynamoStore) {
    let (client, connections) = moto::client_and_table().await;
    let rooms = moto::rooms_table_of(&connections);
    (
        DynamoRoomStore::new(client.clone(), rooms, connections.clone(), page_size),
        DynamoStore::new(client, connections, None),
    )
}

/// A live connection's record, as `$connect` stores it, and it as a member.
async fn connected(connections: &DynamoStore, id: &str) -> Member {
    let record = ConnectionRecord::new(id.into(), Some(format!("n-{id}")), Utc::now());
    connections.put(record.clone()).await.unwrap();
    Member {
        connection_id: id.into(),
        connected_at: record.connected_at.clone(),
        user: Some(format!("u-{id}")),
        name: record.name.clone(),
        expires_at: record.expires_at,
    }
}

#[tokio::test]
async fn joins_leaves_and_the_rooms_limit_on_the_connection_record() {
    let (rooms, connections) = stores(None).await;
    let a = connected(&connections, "a=").await;
    let now = Utc::now().timestamp();
    assert_eq!(
        rooms.join("r", a.clone(), 2).await.unwrap(),
        Joined::Member {
            new: true,
            room: RoomMeta { seq: 0, members: 1 }
        }
    );
    assert_eq!(
        rooms.join("r", a.clone(), 2).await.unwrap(),
        Joined::Member {
            new: false,
            room: RoomMeta { seq: 0, members: 1 }
        },
        "joining again changes nothing"
    );
    rooms.join("s", a.clone(), 2).await.unwrap();
    assert_eq!(
        rooms.join("t", a.clone(), 2).await.unwrap(),
        Joined::TooManyRooms
    );
    assert_eq!(rooms.rooms_of("a=").await.unwrap(), ["r", "s"]);
    assert_eq!(rooms.member("r", "a=", now).await.unwrap(), Some(a.clone()));
    assert_eq!(rooms.member("t", "a=", now).await.unwrap(), None);
    assert_eq!(
        rooms.member("r", "a=", a.expires_at).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        rooms.leave("r", "a=").await.unwrap(),
        Some(Departed {
            member: a.clone(),
            room: RoomMeta::default()
        })
    );
    assert_eq!(rooms.leave("r", "a=").await.unwrap(), None);
    assert_eq!(rooms.meta("r").await.unwrap().members, 0);
    assert_eq!(rooms.rooms_of("a=").await.unwrap(), ["s"]);
    // a connection with no record (gone) joins nothing
    let ghost = Member {
        connection_id: "ghost=".into(),
        connected_at: ConnectedAt::stored(None),
        user: None,
        name: None,
        expires_at: now + 60,
    };
    assert_eq!(
        rooms.join("r", ghost, 20).await.unwrap(),
        Joined::NoConnection
    );
}

#[tokio::test]
async fn a_rooms_members_are_queried_shard_by_shard_each_once() {
    let (rooms, connections) = stores(Some(3)).await;
    for i in 0..40 {
        let member = connected(&connections, &format!("c{i:03}=")).await;
        rooms.join("big", member, 20).await.unwrap();
    }
    let now = Utc::now().timestamp();
    let mut seen = Vec::new();
    for shard in 0..MEMBERSHIP_SHARDS {
        let mut cursor = None;
        loop {
            let page = rooms.members("big", shard, cursor, now).await.unwrap();
            assert!(page.items.len() <= 3);
            for member in &page.items {
                assert_eq!(membership_shard(&member.connection_id), shard);
                assert_eq!(
                    member.user.as_deref(),
                    Some(&*format!("u-{}", member.connection_id))
                );
            }
            seen.extend(page.items.into_iter().map(|m| m.connection_id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    seen.sort();
    let count = seen.len();
    seen.dedup();
    assert_eq!((count, seen.len()), (40, 40));
    assert_eq!(rooms.meta("big").await.unwrap().members, 40);
}

#[tokio::test]
async fn messages_are_numbered_by_the_rooms_counter_and_paged_oldest_first() {
    let (rooms, _) = stores(None).await;
    let said = |text: &str| RoomMessage {
        room: "r".into(),
        seq: 0,
        from: "a=".into(),
        user: Some("u-a".into()),
        name: None,
        message: text.into(),
        sent_at: "2026-12-06T08:00:00.000Z".into(),
    };
    assert_eq!(rooms.meta("r").await.unwrap(), RoomMeta::default());
    let later = Utc::now().timestamp() + 3600;
    for i in 1..=7 {
        let kept = rooms.append(said(&format!("m{i}")), later).await.unwrap();
        assert_eq!((kept.message.seq, kept.room.seq), (i, i));
    }
    assert_eq!(rooms.meta("r").await.unwrap().seq, 7);
    let now = Utc::now().timestamp();
    let seqs = |page: &HistoryPage| page.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let newest = rooms
        .history("r", SeqRange::before(None), 3, now)
        .await
        .unwrap();
    assert_eq!((seqs(&newest), newest.more), (vec![5, 6, 7], true));
    assert_eq!(newest.messages[2].message, "m7");
    assert_eq!(newest.messages[2].user.as_deref(), Some("u-a"));
    let older = rooms
        .history("r", SeqRange::before(Some(5)), 3, now)
        .await
        .unwrap();
    assert_eq!(seqs(&older), [2, 3, 4]);
    let oldest = rooms
        .history("r", SeqRange::before(Some(2)), 3, now)
        .await
        .unwrap();
    assert_eq!((seqs(&oldest), oldest.more), (vec![1], false));
    // after a seq (a catch-up reads only what was missed), and between two
    let missed = rooms
        .history("r", SeqRange::after(3), 2, now)
        .await
        .unwrap();
    assert_eq!((seqs(&missed), missed.more), (vec![6, 7], true));
    let all_missed = rooms
        .history("r", SeqRange::after(3), 10, now)
        .await
        .unwrap();
    assert_eq!(
        (seqs(&all_missed), all_missed.more),
        (vec![4, 5, 6, 7], false)
    );
    let between = SeqRange {
        after: Some(2),
        before: Some(5),
    };
    assert_eq!(
        seqs(&rooms.history("r", between, 10, now).await.unwrap()),
        [3, 4]
    );
    // past their expiry, messages are not read (TTL deletion can lag by days)
    assert!(
        rooms
            .history("r", SeqRange::before(None), 100, later)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
}

/// Invokes `function` for `sender` with `body`, answering 200.
async fn frame(function: &super::runtime_api::Function, sender: &str, body: serde_json::Value) {
    let route = body["action"].as_str().unwrap_or("$default").to_owned();
    let answer = function
        .invoke(&websocket_event(&route, sender, Some(&body.to_string())))
        .await
        .response();
    assert_eq!(answer["statusCode"], 200, "{answer}");
}

#[tokio::test]
async fn rooms_through_the_shipped_binaries_reach_members_only_and_keep_history() {
    use serde_json::json;
    let stack = Stack::new().await;
    for (id, name) in [("a=", "ada"), ("b=", "bob"), ("c=", "cy")] {
        stack.put(id, Some(name), 60).await;
    }
    let join = stack.function("join").await;
    let broadcast = stack.function("broadcast").await;
    let history = stack.function("history").await;
    let list = stack.function("list").await;
    let leave = stack.function("leave").await;
    let disconnect = stack.function("disconnect").await;
    frame(&join, "a=", json!({"action":"join","room":"red"})).await;
    frame(&join, "b=", json!({"action":"join","room":"red"})).await;
    frame(&join, "c=", json!({"action":"join","room":"blue"})).await;
    assert_eq!(
        frames(stack.fake.delivered_to("b="))[0],
        json!({"type":"joined","room":"red","seq":0,"presence":true})
    );
    assert_eq!(
        frames(stack.fake.delivered_to("a=")).last().unwrap(),
        &json!({"type":"presence","room":"red","event":"joined","connectionId":"b=","user":null,"name":"bob"})
    );
    for text in ["one", "two", "three"] {
        frame(
            &broadcast,
            "a=",
            json!({"action":"broadcast","room":"red","message":text}),
        )
        .await;
    }
    let said = |id: &str| {
        frames(stack.fake.delivered_to(id))
            .into_iter()
            .filter(|f| f["type"] == "broadcast")
            .collect::<Vec<_>>()
    };
    assert_eq!(said("a="), said("b="));
    let seqs: Vec<_> = said("b=").iter().map(|f| f["seq"].clone()).collect();
    assert_eq!(seqs, [json!(1), json!(2), json!(3)]);
    assert!(said("c=").is_empty(), "blue hears nothing of red");
    // a non-member is refused, and nothing is numbered
    frame(
        &broadcast,
        "c=",
        json!({"action":"broadcast","room":"red","message":"let me in"}),
    )
    .await;
    assert_eq!(
        frames(stack.fake.delivered_to("c=")).last().unwrap()["code"],
        "not_a_member"
    );
    // history, a page at a time, each entry the broadcast frame it was
    frame(
        &history,
        "b=",
        json!({"action":"history","room":"red","limit":2}),
    )
    .await;
    let page = frames(stack.fake.delivered_to("b=")).pop().unwrap();
    assert_eq!(page["messages"], json!([said("b=")[1], said("b=")[2]]));
    assert_eq!(page["next"], 2);
    frame(&list, "a=", json!({"action":"list","room":"red"})).await;
    let listed = frames(stack.fake.delivered_to("a=")).pop().unwrap();
    assert_eq!(listed["room"], "red");
    assert_eq!(listed["connections"].as_array().unwrap().len(), 2);
    // a catch-up on a join with since
    stack.put("b2=", Some("bob"), 60).await;
    frame(
        &join,
        "b2=",
        json!({"action":"join","room":"red","since":1}),
    )
    .await;
    let caught = frames(stack.fake.delivered_to("b2="));
    assert_eq!(caught[0]["seq"], 3);
    assert_eq!(caught[1]["type"], "history");
    assert_eq!(caught[1]["messages"].as_array().unwrap().len(), 2);
    // leave, then $disconnect: each tells the others, and the record keeps no room
    frame(&leave, "b2=", json!({"action":"leave","room":"red"})).await;
    assert_eq!(
        frames(stack.fake.delivered_to("b2=")).pop().unwrap(),
        json!({"type":"left","room":"red"})
    );
    let answer = disconnect
        .invoke(&websocket_event("$disconnect", "b=", None))
        .await
        .response();
    assert_eq!(answer["statusCode"], 200);
    let last = frames(stack.fake.delivered_to("a=")).pop().unwrap();
    assert_eq!(
        (last["event"].clone(), last["connectionId"].clone()),
        (json!("left"), json!("b="))
    );
    let items = stack.items().await;
    assert!(!items.contains_key("b="));
    assert!(items["a="].contains_key("rooms"));
    let rooms = DynamoRoomStore::new(
        stack.dynamodb.clone(),
        moto::rooms_table_of(&stack.table),
        stack.table.clone(),
        None,
    );
    assert_eq!(
        rooms.meta("red").await.unwrap(),
        RoomMeta { seq: 3, members: 1 }
    );
}
