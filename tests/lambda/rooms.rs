//! The rooms store on DynamoDB (moto), with the keys and expressions the stack's tables will
//! serve: the same behaviour as the in-memory store's tests ask of it.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use chrono::Utc;
use webchat::adapters::dynamodb::DynamoStore;
use webchat::adapters::rooms::DynamoRoomStore;
use webchat::ports::{
    ConnectedAt, ConnectionRecord, ConnectionStore, HistoryPage, Joined, MEMBERSHIP_SHARDS, Member,
    RoomStore, membership_shard,
};
use webchat::protocol::RoomMessage;

use super::moto;

/// A rooms table (`pk`, `sk`) beside a connections table, and the stores over them.
async fn stores(page_size: Option<i32>) -> (DynamoRoomStore, DynamoStore) {
    let (client, connections) = moto::client_and_table().await;
    let rooms = format!("rooms-{:012x}", fastrand::u64(..) >> 16);
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let string = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(&rooms)
        .attribute_definitions(string("pk"))
        .attribute_definitions(string("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the rooms table in moto");
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
            members: 1
        }
    );
    assert_eq!(
        rooms.join("r", a.clone(), 2).await.unwrap(),
        Joined::Member {
            new: false,
            members: 1
        },
        "joining again changes nothing"
    );
    rooms.join("s", a.clone(), 2).await.unwrap();
    assert_eq!(
        rooms.join("t", a.clone(), 2).await.unwrap(),
        Joined::TooManyRooms
    );
    assert_eq!(rooms.rooms_of("a=").await.unwrap(), ["r", "s"]);
    assert!(rooms.is_member("r", "a=", now).await.unwrap());
    assert!(!rooms.is_member("t", "a=", now).await.unwrap());
    assert!(rooms.leave("r", "a=").await.unwrap());
    assert!(!rooms.leave("r", "a=").await.unwrap());
    assert_eq!(rooms.member_count("r").await.unwrap(), 0);
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
        Joined::TooManyRooms
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
    assert_eq!(rooms.member_count("big").await.unwrap(), 40);
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
    assert_eq!(rooms.latest_seq("r").await.unwrap(), 0);
    let later = Utc::now().timestamp() + 3600;
    for i in 1..=7 {
        let kept = rooms.append(said(&format!("m{i}")), later).await.unwrap();
        assert_eq!(kept.seq, i);
    }
    assert_eq!(rooms.latest_seq("r").await.unwrap(), 7);
    let now = Utc::now().timestamp();
    let seqs = |page: &HistoryPage| page.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let newest = rooms.history("r", None, 3, now).await.unwrap();
    assert_eq!((seqs(&newest), newest.more), (vec![5, 6, 7], true));
    assert_eq!(newest.messages[2].message, "m7");
    assert_eq!(newest.messages[2].user.as_deref(), Some("u-a"));
    let older = rooms.history("r", Some(5), 3, now).await.unwrap();
    assert_eq!(seqs(&older), [2, 3, 4]);
    let oldest = rooms.history("r", Some(2), 3, now).await.unwrap();
    assert_eq!((seqs(&oldest), oldest.more), (vec![1], false));
    // past their expiry, messages are not read (TTL deletion can lag by days)
    assert!(
        rooms
            .history("r", None, 100, later)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
}
