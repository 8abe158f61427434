//! Signed-in connections through the shipped binaries: the authorizer's context as API Gateway
//! passes it to each route (`requestContext.authorizer`), the user in the table and its index in
//! moto, a chat to a user, and a token that expired (its connection deleted through
//! `@connections`).

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use serde_json::{Value, json};

use super::{Stack, connect_event, frames, websocket_event};

/// `requestContext.authorizer` of a connection the authorizer allowed: `principalId`, the
/// context it returned, and the latency API Gateway adds.
fn authorizer(user: &str, name: &str, exp: i64) -> Value {
    json!({
        "principalId": user,
        "user": user,
        "name": name,
        "exp": exp,
        "integrationLatency": 112
    })
}

pub(crate) fn signed_in(mut event: Value, user: &str, name: &str, exp: i64) -> Value {
    event["requestContext"]["authorizer"] = authorizer(user, name, exp);
    event
}

impl Stack {
    /// Stores a signed-in connection as `$connect` would.
    pub(crate) async fn put_user(&self, id: &str, user: &str, name: &str) {
        self.put(id, Some(name), 60).await;
        self.dynamodb
            .update_item()
            .table_name(&self.table)
            .key("connectionId", AttributeValue::S(id.into()))
            .update_expression("SET userId = :u")
            .expression_attribute_values(":u", AttributeValue::S(user.into()))
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn connect_stores_the_tokens_user_and_echoes_the_subprotocol() {
    let stack = Stack::new().await;
    let connect = stack.function("connect").await;
    let exp = Utc::now().timestamp() + 3600;
    let mut event = signed_in(
        connect_event("a=", Some("ignored")),
        "u-ada",
        "Ada Lovelace",
        exp,
    );
    event["headers"]["Sec-WebSocket-Protocol"] = json!("webchat.v1, eyJhbGciOi.x.y");
    let answer = connect.invoke(&event).await.response();
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(answer["headers"]["sec-websocket-protocol"], "webchat.v1");
    let items = stack.items().await;
    assert_eq!(items["a="]["userId"].as_s().unwrap(), "u-ada");
    assert_eq!(items["a="]["name"].as_s().unwrap(), "Ada Lovelace");
    let detail: Value = serde_json::from_str(
        stack.fake.put_events()[0]["Entries"][0]["Detail"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(detail["user"], "u-ada");
}

#[tokio::test]
async fn a_chat_to_a_user_reaches_each_of_their_connections_through_the_index() {
    let stack = Stack::new().await;
    stack.put_user("ada-1=", "u-ada", "Ada").await;
    stack.put_user("bob-1=", "u-bob", "Bob").await;
    stack.put_user("bob-2=", "u-bob", "Bob").await;
    let chat = stack.function("chat").await;
    let exp = Utc::now().timestamp() + 3600;
    let event = signed_in(
        websocket_event(
            "chat",
            "ada-1=",
            Some(r#"{"action":"chat","user":"u-bob","message":"psst"}"#),
        ),
        "u-ada",
        "Ada",
        exp,
    );
    chat.invoke(&event).await.response();
    for id in ["bob-1=", "bob-2=", "ada-1="] {
        let got = frames(stack.fake.delivered_to(id));
        assert_eq!(got.len(), 1, "{id}: {got:?}");
        assert_eq!(got[0]["toUser"], "u-bob");
        assert_eq!(got[0]["user"], "u-ada");
        assert_eq!(got[0]["name"], "Ada");
    }
    let event = signed_in(
        websocket_event(
            "chat",
            "ada-1=",
            Some(r#"{"action":"chat","user":"u-carol","message":"?"}"#),
        ),
        "u-ada",
        "Ada",
        exp,
    );
    chat.invoke(&event).await.response();
    let told = frames(stack.fake.delivered_to("ada-1="));
    assert_eq!(told[1]["code"], "user_not_found");
}

#[tokio::test]
async fn a_frame_after_the_tokens_expiry_is_told_then_the_connection_deleted() {
    let stack = Stack::new().await;
    stack.put_user("ada-1=", "u-ada", "Ada").await;
    stack.put("other=", None, 60).await;
    let broadcast = stack.function("broadcast").await;
    let expired = Utc::now().timestamp() - 1;
    let event = signed_in(
        websocket_event(
            "broadcast",
            "ada-1=",
            Some(r#"{"action":"broadcast","message":"late"}"#),
        ),
        "u-ada",
        "Ada",
        expired,
    );
    let answer = broadcast.invoke(&event).await.response();
    assert_eq!(answer["statusCode"], 200);
    let told = frames(stack.fake.delivered_to("ada-1="));
    assert_eq!(told.len(), 1);
    assert_eq!(told[0]["code"], "token_expired");
    assert!(stack.fake.delivered_to("other=").is_empty());
    let calls = stack.fake.calls();
    let last = calls.last().unwrap();
    assert_eq!(
        (last.method.as_str(), last.connection_id.as_str()),
        ("DELETE", "ada-1=")
    );
}
