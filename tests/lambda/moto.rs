//! A moto server for DynamoDB, shared by the tests of this binary, and a fresh table per test.
//!
//! The test command (`scripts/test`) starts moto and exports `WEBCHAT_TEST_MOTO`; without it the
//! tests start `moto_server` themselves (from `.venv/bin` or the PATH) under a watchdog that stops
//! it when the test process ends.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use webchat::adapters::dynamodb::attributes;
use webchat::adapters::rooms;

static MOTO: OnceLock<String> = OnceLock::new();

/// The moto endpoint, e.g. `http://127.0.0.1:5123`.
pub fn endpoint() -> &'static str {
    MOTO.get_or_init(|| match std::env::var("WEBCHAT_TEST_MOTO") {
        Ok(endpoint) => endpoint,
        Err(_) => start(),
    })
}

fn start() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let venv = format!("{root}/.venv/bin/moto_server");
    let binary = if std::path::Path::new(&venv).exists() {
        venv
    } else {
        "moto_server".to_owned()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "{binary} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & moto=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $moto 2>/dev/null; do sleep 0.5; done; kill $moto 2>/dev/null",
        parent = std::process::id()
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("could not start moto_server ({e}); pip install -r requirements-test.txt")
        });
    // The watchdog outlives this call; a thread reaps it when it ends with the test process.
    std::thread::spawn(move || watchdog.wait());
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on port {port}: pip install -r requirements-test.txt"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://127.0.0.1:{port}")
}

/// A DynamoDB client for moto, configured like the functions' (test credentials, us-east-1).
pub async fn client() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .endpoint_url(endpoint())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A client and a new table of its own: what every test and bench that uses moto starts with.
pub async fn client_and_table() -> (aws_sdk_dynamodb::Client, String) {
    let client = client().await;
    let table = table(&client).await;
    (client, table)
}

/// Creates a table shaped as the stack's (key `connectionId`, on demand, the index by user
/// projecting what a chat to a user reads); returns its name.
pub async fn table(client: &aws_sdk_dynamodb::Client) -> String {
    let name = format!("connections-{:012x}", fastrand::u64(..) >> 16);
    client
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("connectionId")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attributes::USER)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("connectionId")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(attributes::USER_INDEX)
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(attributes::USER)
                        .key_type(KeyType::Hash)
                        .build()
                        .unwrap(),
                )
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes(attributes::CONNECTED_AT)
                        .non_key_attributes(attributes::EXPIRES_AT)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create a table in moto");
    rooms_table(client, &rooms_table_of(&name)).await;
    name
}

/// The rooms table [`table`] creates beside the connections table `connections`.
pub fn rooms_table_of(connections: &str) -> String {
    connections.replacen("connections-", "rooms-", 1)
}

/// Creates a rooms table shaped as the stack's: `pk` and `sk` strings, on demand.
async fn rooms_table(client: &aws_sdk_dynamodb::Client, name: &str) {
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
        .table_name(name)
        .attribute_definitions(string(rooms::attributes::PK))
        .attribute_definitions(string(rooms::attributes::SK))
        .key_schema(key(rooms::attributes::PK, KeyType::Hash))
        .key_schema(key(rooms::attributes::SK, KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the rooms table in moto");
}
