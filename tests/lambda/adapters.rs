//! The AWS adapters on their own: DynamoDB against moto, the management API against
//! webchat-local's `@connections` and against the recording server.

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use webchat::adapters::dynamodb::DynamoStore;
use webchat::adapters::management::ManagementApi;
use webchat::local::{Config, Gateway};
use webchat::ports::{
    ApiError, ConnectionApi, ConnectionRecord, ConnectionStore, Outcome, Segment,
};

use super::fake_aws::FakeAws;
use super::moto;

async fn store(page_size: Option<i32>) -> DynamoStore {
    let (client, table) = moto::client_and_table().await;
    DynamoStore::new(client, table, page_size)
}

fn record(id: &str, age_seconds: i64) -> ConnectionRecord {
    ConnectionRecord::new(
        id.into(),
        Some(format!("n-{id}")),
        Utc::now() - chrono::Duration::seconds(age_seconds),
    )
}

#[tokio::test]
async fn the_dynamodb_store_round_trips_a_record() {
    let (store, alice) = (store(None).await, record("alice=", 0));
    store.put(alice.clone()).await.unwrap();
    let live_at = Utc::now().timestamp();
    assert_eq!(store.get("alice=", live_at).await.unwrap(), Some(alice));
    let mut nameless = record("nobody=", 0);
    nameless.name = None;
    store.put(nameless).await.unwrap();
    assert_eq!(
        store.get("nobody=", live_at).await.unwrap().unwrap().name,
        None
    );
    store.delete("alice=").await.unwrap();
    assert_eq!(store.get("alice=", live_at).await.unwrap(), None);
    store.delete("never-was=").await.unwrap();
}

#[tokio::test]
async fn the_dynamodb_store_deletes_only_the_record_that_connected_when_it_was_read() {
    let store = store(None).await;
    let first = record("again=", 60);
    store.put(first.clone()).await.unwrap();
    let now = Utc::now().timestamp();
    let read = store
        .scan_recipients(now, Segment::WHOLE, None)
        .await
        .unwrap()
        .items;
    let read = read.iter().find(|r| r.connection_id == "again=").unwrap();
    // A reconnect under the same id writes a newer record before the prune.
    let second = record("again=", 0);
    store.put(second).await.unwrap();
    let deleted = store
        .delete_if_connected_at("again=", &read.connected_at)
        .await
        .unwrap();
    assert!(!deleted, "a record written since is kept");
    assert!(store.get("again=", now).await.unwrap().is_some());
    let current = store.get("again=", now).await.unwrap().unwrap();
    let deleted = store
        .delete_if_connected_at("again=", &current.connected_at)
        .await
        .unwrap();
    assert!(deleted, "the record that was read is deleted");
    assert_eq!(store.get("again=", now).await.unwrap(), None);
    let deleted = store
        .delete_if_connected_at("never-was=", &current.connected_at)
        .await
        .unwrap();
    assert!(!deleted, "no record, nothing deleted, no error");
}

#[tokio::test]
async fn the_dynamodb_store_paginates_scans_and_skips_expired_records() {
    let store = store(Some(4)).await;
    for i in 0..21 {
        store
            .put(record(&format!("live-{i:02}="), 60))
            .await
            .unwrap();
    }
    for i in 0..5 {
        store
            .put(record(&format!("old-{i}="), 3 * 3600))
            .await
            .unwrap();
    }
    let now = Utc::now().timestamp();
    let (mut ids, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = store
            .scan_recipients(now, Segment::WHOLE, cursor)
            .await
            .unwrap();
        pages += 1;
        ids.extend(page.items.into_iter().map(|r| r.connection_id));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    ids.sort();
    assert_eq!(ids.len(), 21, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("live-")));
    assert!(
        pages >= 7,
        "26 items at 4 a page take at least 7 pages, took {pages}"
    );
    assert_eq!(
        store.get("old-0=", now).await.unwrap(),
        None,
        "expired records are ignored on read"
    );

    let (mut all, mut cursor) = (Vec::new(), None);
    loop {
        let page = store.scan_records(None, cursor).await.unwrap();
        all.extend(page.items);
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(all.len(), 26, "cleanup sees expired records too");
    let (mut live, mut cursor) = (Vec::new(), None);
    loop {
        let page = store.scan_records(Some(now), cursor).await.unwrap();
        live.extend(page.items);
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(live.len(), 21, "list sees live records only");
    assert!(
        all.iter()
            .all(|r| r.name.as_deref() == Some(&format!("n-{}", r.connection_id)[..]))
    );
}

#[tokio::test]
async fn the_management_adapter_talks_to_webchat_locals_connections_api() {
    let gateway = Gateway::bind("127.0.0.1:0".parse().unwrap(), Config::default())
        .await
        .unwrap();
    let addr = gateway.local_addr();
    tokio::spawn(gateway.serve(std::future::pending()));
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}"))
        .await
        .unwrap();
    let welcome = socket.next().await.unwrap().unwrap().into_text().unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&welcome).unwrap()["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();

    let api = management_api(&format!("http://{addr}/local")).await;
    assert_eq!(
        api.post(&id, Bytes::from_static(b"via the SDK")).await,
        Ok(Outcome::Done(()))
    );
    assert_eq!(
        socket.next().await.unwrap().unwrap().into_text().unwrap(),
        "via the SDK"
    );
    let Ok(Outcome::Done(info)) = api.describe(&id).await else {
        panic!("a live connection is described")
    };
    assert_eq!(info.source_ip.as_deref(), Some("127.0.0.1"));
    assert!(info.last_active_at >= info.connected_at);
    assert_eq!(
        api.post(&id, Bytes::from(vec![b'x'; 128 * 1024 + 1])).await,
        Err(ApiError::PayloadTooLarge)
    );
    assert_eq!(
        api.post("AAAAAAAAAAAAAAA=", Bytes::from_static(b"x")).await,
        Ok(Outcome::Gone)
    );
    assert_eq!(api.describe("AAAAAAAAAAAAAAA=").await, Ok(Outcome::Gone));
    // the routes never delete a connection (ConnectionApi has no delete): the client leaves
    drop(socket);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while api.post(&id, Bytes::from_static(b"x")).await != Ok(Outcome::Gone) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed connection is gone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_management_adapter_sorts_throttling_and_outages_as_retryable() {
    let fake = FakeAws::start().await;
    let api = management_api(&fake.management_endpoint()).await;
    fake.script("a=", &[429, 500, 403]);
    assert!(matches!(
        api.post("a=", Bytes::from_static(b"x")).await,
        Err(ApiError::Throttled(_))
    ));
    assert!(matches!(
        api.post("a=", Bytes::from_static(b"x")).await,
        Err(ApiError::Unavailable(_))
    ));
    assert!(matches!(
        api.post("a=", Bytes::from_static(b"x")).await,
        Err(ApiError::Other(_))
    ));
    assert_eq!(
        api.post("a=", Bytes::from_static(b"x")).await,
        Ok(Outcome::Done(()))
    );
    assert_eq!(fake.calls().len(), 4, "the SDK does not retry on its own");
}

async fn management_api(endpoint: &str) -> ManagementApi {
    let config = webchat::config::FunctionConfig::from_lookup(|name| match name {
        "CONNECTIONS_TABLE" => Some("t".into()),
        "ROOMS_TABLE" => Some("r".into()),
        "EVENT_BUS_NAME" => Some("b".into()),
        "WEBSOCKET_API_ENDPOINT" => Some(endpoint.into()),
        _ => None,
    })
    .unwrap();
    let credentials =
        aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .load()
        .await;
    webchat::lambda::runtime::build_with(sdk, &config).api
}

#[tokio::test]
async fn the_dynamodb_store_finds_a_users_live_connections_by_its_index() {
    let store = store(None).await;
    let of = |id: &str, user: &str, age: i64| record(id, age).of_user(Some(user.into()));
    store.put(of("ada-1=", "u-ada", 10)).await.unwrap();
    store.put(of("ada-2=", "u-ada", 20)).await.unwrap();
    store.put(of("bob-1=", "u-bob", 10)).await.unwrap();
    store.put(record("anon=", 10)).await.unwrap();
    // connected three hours ago: past its expiry, still in the table until TTL removes it
    store.put(of("ada-old=", "u-ada", 3 * 3600)).await.unwrap();
    let now = Utc::now().timestamp();
    let mut found: Vec<String> = store
        .connections_of("u-ada", now)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.connection_id)
        .collect();
    found.sort();
    assert_eq!(found, ["ada-1=", "ada-2="]);
    assert!(
        store
            .connections_of("u-nobody", now)
            .await
            .unwrap()
            .is_empty()
    );
    // the user is stored with the record, and read back
    let ada = store.get("ada-1=", now).await.unwrap().unwrap();
    assert_eq!(ada.user.as_deref(), Some("u-ada"));
    assert_eq!(store.get("anon=", now).await.unwrap().unwrap().user, None);
}
