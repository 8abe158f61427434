//! One end-to-end suite for any stage, for the contract in `docs/protocol.md`. Without `WEBCHAT_URL` it starts `webchat-local` (as CI
//! does); against a deployed stage:
//!
//!     WEBCHAT_URL=wss://{api-id}.execute-api.{region}.amazonaws.com/{stage} [WEBCHAT_IAM=1] \
//!         cargo test --release --all-features --test e2e
//!
//! (`WEBCHAT_IAM=1` signs each connect with SigV4 from the standard AWS credential chain.) The
//! tests use their own connections only, so they can run on a stage others are using.
//!
//! It needs webchat-local and the terminal client: `cargo test --all-features` (without the
//! features it compiles to nothing).
#![cfg(all(feature = "local", feature = "client"))]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use webchat::client;

mod support;
use support::{LocalProcess, PATIENCE};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Stage {
    url: String,
    iam: bool,
    _local: Option<LocalProcess>,
}

async fn stage() -> Stage {
    let iam = std::env::var("WEBCHAT_IAM").is_ok_and(|v| v == "1");
    if let Ok(url) = std::env::var("WEBCHAT_URL") {
        return Stage {
            url,
            iam,
            _local: None,
        };
    }
    let local = LocalProcess::start(&[], &[]).await;
    Stage {
        url: local.url.clone(),
        iam,
        _local: Some(local),
    }
}

struct Peer {
    socket: Socket,
    id: String,
}

impl Stage {
    /// Connects (with a display name) and waits for the welcome.
    async fn join(&self, name: &str) -> Peer {
        let mut url = client::with_name(&self.url, name);
        if self.iam {
            url = client::sign_with_default_credentials(&url, None, None)
                .await
                .expect("a signed URL");
        }
        let (socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        let mut peer = Peer {
            socket,
            id: String::new(),
        };
        let welcome = peer.next_of_type("welcome").await;
        peer.id = welcome["connectionId"].as_str().unwrap().to_owned();
        assert_eq!(
            welcome["message"],
            format!("Welcome! - connected on {}", peer.id)
        );
        peer
    }
}

impl Peer {
    async fn send(&mut self, frame: &str) {
        self.socket.send(Message::text(frame)).await.unwrap();
    }

    async fn next_of_type(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} frame in time"))
                .expect("open")
                .expect("a frame");
            if let Message::Text(text) = frame {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == kind {
                    return value;
                }
            }
        }
    }

    /// The ids in the next complete list (a long list spans frames; ours are in it).
    async fn list(&mut self) -> Vec<(String, Value)> {
        self.send(r#"{"action":"list"}"#).await;
        let frame = self.next_of_type("connections").await;
        frame["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["connectionId"].as_str().unwrap().to_owned(),
                    c["name"].clone(),
                )
            })
            .collect()
    }

    async fn error_code(&mut self) -> String {
        self.next_of_type("error").await["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:06x}", fastrand::u32(..) & 0xffffff)
}

#[tokio::test]
async fn a_connection_is_welcomed_and_listed_with_its_name() {
    let stage = stage().await;
    let name = unique("e2e");
    let mut peer = stage.join(&name).await;
    let listed = peer.list().await;
    assert!(
        listed
            .iter()
            .any(|(id, n)| *id == peer.id && *n == json!(name)),
        "{listed:?}"
    );
}

#[tokio::test]
async fn a_chat_reaches_its_target_only() {
    let stage = stage().await;
    let mut alice = stage.join(&unique("alice")).await;
    let mut bob = stage.join(&unique("bob")).await;
    let frame = json!({"action":"chat","connection":bob.id,"message":"Yo! <b>é</b>"}).to_string();
    alice.send(&frame).await;
    let chat = bob.next_of_type("chat").await;
    assert_eq!(chat["from"], alice.id.as_str());
    assert_eq!(chat["message"], "Yo! <b>é</b>");
    assert_eq!(chat["to"], bob.id.as_str());
    // alice gets a copy once it is delivered: her next frame
    let next = tokio::time::timeout(PATIENCE, alice.socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let copy: Value = serde_json::from_str(next.to_text().unwrap()).unwrap();
    assert_eq!(copy, chat, "the sender's copy is the frame its target got");
}

#[tokio::test]
async fn a_broadcast_reaches_everyone_including_the_sender() {
    let stage = stage().await;
    let mut alice = stage.join(&unique("alice")).await;
    let mut bob = stage.join(&unique("bob")).await;
    let message = unique("broadcast");
    alice
        .send(&json!({"action":"broadcast","message":message}).to_string())
        .await;
    for peer in [&mut alice, &mut bob] {
        loop {
            let frame = peer.next_of_type("broadcast").await;
            if frame["message"] == message.as_str() {
                break;
            }
        }
    }
}

#[tokio::test]
async fn bad_input_gets_its_error_and_the_connection_keeps_serving() {
    let stage = stage().await;
    let mut peer = stage.join(&unique("errors")).await;
    for (frame, code) in [
        ("not json", "invalid_json"),
        (r#"{"action":"dance"}"#, "unknown_action"),
        (r#"{"action":"broadcast"}"#, "missing_field"),
        (r#"{"action":"broadcast","message":""}"#, "invalid_field"),
        (
            r#"{"action":"chat","connection":"AAAAAAAAAAAAAAA=","message":"hi"}"#,
            "connection_not_found",
        ),
    ] {
        peer.send(frame).await;
        assert_eq!(peer.error_code().await, code, "{frame}");
    }
    let too_large = json!({"action":"broadcast","message":"x".repeat(16 * 1024 + 1)}).to_string();
    peer.send(&too_large).await;
    assert_eq!(peer.error_code().await, "message_too_large");
    assert!(peer.list().await.iter().any(|(id, _)| *id == peer.id));
}

#[tokio::test]
async fn a_connection_that_leaves_is_forgotten() {
    let stage = stage().await;
    let mut alice = stage.join(&unique("alice")).await;
    let mut bob = stage.join(&unique("bob")).await;
    let bob_id = bob.id.clone();
    bob.socket.close(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while alice.list().await.iter().any(|(id, _)| *id == bob_id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed connection stays listed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    alice
        .send(&json!({"action":"chat","connection":bob_id,"message":"still there?"}).to_string())
        .await;
    assert_eq!(alice.error_code().await, "connection_not_found");
}
