//! One end-to-end suite for any stage, for the contract in `docs/protocol.md`. Without `WEBCHAT_URL` it starts `webchat-local` (as CI
//! does); against a deployed stage:
//!
//!     WEBCHAT_URL=wss://{api-id}.execute-api.{region}.amazonaws.com/{stage} [WEBCHAT_IAM=1] \
//!         cargo test --release --all-features --test e2e
//!
//! (`WEBCHAT_IAM=1` signs each connect with SigV4 from the standard AWS credential chain.) The
//! tests use their own connections only, so they can run on a stage others are using.
//!
//! Against a stage with sign-in (JWT auth), give two people's tokens:
//!
//!     WEBCHAT_URL=wss://… WEBCHAT_TOKEN=<a token> WEBCHAT_TOKEN_2=<another user's token> \
//!         cargo test --release --all-features --test e2e
//!
//! and locally, `WEBCHAT_SIGN_IN=dev` starts `webchat-local --dev-issuer` and signs each
//! connection in by its name (`scripts/test` runs the suite both ways).
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

/// How the stage's connections sign in.
enum SignIn {
    /// No sign-in: a display name in `?name=`.
    None,
    /// `webchat-local --dev-issuer`: a token for each name from its `/dev/token`.
    Dev { http: String },
    /// A deployed stage's tokens, taken in turn (`WEBCHAT_TOKEN`, `WEBCHAT_TOKEN_2`).
    Tokens(Vec<String>),
}

struct Stage {
    url: String,
    iam: bool,
    sign_in: SignIn,
    /// Joins so far: which of the given tokens the next one takes.
    joined: std::sync::atomic::AtomicUsize,
    _local: Option<LocalProcess>,
}

async fn stage() -> Stage {
    let iam = std::env::var("WEBCHAT_IAM").is_ok_and(|v| v == "1");
    let tokens: Vec<String> = ["WEBCHAT_TOKEN", "WEBCHAT_TOKEN_2"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok().filter(|t| !t.is_empty()))
        .collect();
    let (url, sign_in, local) = match std::env::var("WEBCHAT_URL") {
        Ok(url) if tokens.is_empty() => (url, SignIn::None, None),
        Ok(url) => (url, SignIn::Tokens(tokens), None),
        Err(_) if std::env::var("WEBCHAT_SIGN_IN").is_ok_and(|v| v == "dev") => {
            let local = LocalProcess::start(&["--dev-issuer"], &[]).await;
            let http = local.url.replacen("ws://", "http://", 1);
            (local.url.clone(), SignIn::Dev { http }, Some(local))
        }
        Err(_) => {
            let local = LocalProcess::start(&[], &[]).await;
            (local.url.clone(), SignIn::None, Some(local))
        }
    };
    Stage {
        url,
        iam,
        sign_in,
        joined: std::sync::atomic::AtomicUsize::new(0),
        _local: local,
    }
}

struct Peer {
    socket: Socket,
    id: String,
    /// From the welcome: the user (`null` without sign-in) and the name.
    user: Value,
    name: Value,
}

impl Stage {
    fn signed_in(&self) -> bool {
        !matches!(self.sign_in, SignIn::None)
    }

    /// The token for a connection named `name`, on a stage with sign-in.
    async fn token(&self, name: &str) -> Option<String> {
        let turn = self
            .joined
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match &self.sign_in {
            SignIn::None => None,
            SignIn::Dev { http } => {
                let url = client::with_parameter(&format!("{http}/dev/token"), "name", name);
                let body = webchat::auth::jwks::get(&url).await.expect("a dev token");
                Some(String::from_utf8(body.to_vec()).unwrap().trim().to_owned())
            }
            SignIn::Tokens(tokens) => Some(tokens[turn % tokens.len()].clone()),
        }
    }

    /// Connects (with a display name, or signed in) and waits for the welcome.
    async fn join(&self, name: &str) -> Peer {
        let token = self.token(name).await;
        let mut url = match &token {
            Some(_) => self.url.clone(),
            None => client::with_name(&self.url, name),
        };
        if self.iam {
            url = client::sign_with_default_credentials(&url, None, None)
                .await
                .expect("a signed URL");
        }
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = &token {
            // as a browser sends it
            let offered = format!("webchat.v1, {token}").parse().unwrap();
            request
                .headers_mut()
                .insert("sec-websocket-protocol", offered);
        }
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect");
        if token.is_some() {
            assert_eq!(
                response.headers()["sec-websocket-protocol"],
                "webchat.v1",
                "the subprotocol is echoed"
            );
        }
        let mut peer = Peer {
            socket,
            id: String::new(),
            user: Value::Null,
            name: Value::Null,
        };
        let welcome = peer.next_of_type("welcome").await;
        peer.id = welcome["connectionId"].as_str().unwrap().to_owned();
        peer.user = welcome["user"].clone();
        peer.name = welcome["name"].clone();
        assert_eq!(
            welcome["message"],
            format!("Welcome! - connected on {}", peer.id)
        );
        assert_eq!(peer.user.is_string(), self.signed_in(), "{welcome}");
        if matches!(self.sign_in, SignIn::None | SignIn::Dev { .. }) {
            assert_eq!(peer.name, json!(name));
        }
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
            .any(|(id, n)| *id == peer.id && *n == peer.name),
        "{listed:?}"
    );
    if !stage.signed_in() {
        assert_eq!(peer.name, json!(name));
    }
}

#[tokio::test]
async fn frames_say_who_sent_them_signed_in_or_not() {
    let stage = stage().await;
    let mut alice = stage.join(&unique("alice")).await;
    let message = unique("who");
    alice
        .send(&json!({"action":"broadcast","message":message}).to_string())
        .await;
    loop {
        let frame = alice.next_of_type("broadcast").await;
        if frame["message"] == message.as_str() {
            assert_eq!(frame["user"], alice.user);
            assert_eq!(frame["name"], alice.name);
            break;
        }
    }
}

#[tokio::test]
async fn with_sign_in_a_chat_to_a_person_reaches_them_and_no_token_is_refused() {
    let stage = stage().await;
    if !stage.signed_in() {
        // without sign-in there are no people to message: chat by user finds nobody
        let mut anyone = stage.join(&unique("anyone")).await;
        anyone
            .send(&json!({"action":"chat","user":"nobody","message":"hi"}).to_string())
            .await;
        assert_eq!(anyone.error_code().await, "user_not_found");
        return;
    }
    let mut alice = stage.join(&unique("alice")).await;
    let mut bob = stage.join(&unique("bob")).await;
    let message = unique("psst");
    alice
        .send(&json!({"action":"chat","user":bob.user,"message":message}).to_string())
        .await;
    let chat = bob.next_of_type("chat").await;
    assert_eq!(chat["message"], message.as_str());
    assert_eq!(chat["user"], alice.user);
    assert_eq!(chat["toUser"], bob.user);
    match tokio_tungstenite::connect_async(&stage.url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("a connect without a token: {other:?}"),
    }
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

#[tokio::test]
async fn rooms_reach_their_members_only_number_their_messages_and_catch_up() {
    let stage = stage().await;
    let mut alice = stage.join(&unique("alice")).await;
    let mut bob = stage.join(&unique("bob")).await;
    // rooms of this run only: a shared stage keeps others' rooms apart
    let (red, blue) = (unique("red"), unique("blue"));
    alice
        .send(&json!({"action":"join","room":red}).to_string())
        .await;
    let joined = alice.next_of_type("joined").await;
    assert_eq!((&joined["room"], &joined["seq"]), (&json!(red), &json!(0)));
    bob.send(&json!({"action":"join","room":blue}).to_string())
        .await;
    bob.next_of_type("joined").await;
    alice
        .send(&json!({"action":"broadcast","room":red,"message":"one"}).to_string())
        .await;
    let said = alice.next_of_type("broadcast").await;
    assert_eq!(
        (&said["room"], &said["seq"], &said["from"], &said["user"]),
        (&json!(red), &json!(1), &json!(alice.id), &alice.user)
    );
    // bob is not in red: refused, and he heard nothing of it
    bob.send(&json!({"action":"broadcast","room":red,"message":"let me in"}).to_string())
        .await;
    assert_eq!(bob.error_code().await, "not_a_member");
    bob.send(&json!({"action":"broadcast","room":blue,"message":"blue"}).to_string())
        .await;
    let own = bob.next_of_type("broadcast").await;
    assert_eq!(
        own["room"],
        json!(blue),
        "the first broadcast bob hears is blue's"
    );
    // bob joins red with since 0: a history frame of what he missed, then live messages
    bob.send(&json!({"action":"join","room":red,"since":0}).to_string())
        .await;
    assert_eq!(bob.next_of_type("joined").await["seq"], 1);
    let missed = bob.next_of_type("history").await;
    assert_eq!(missed["messages"], json!([said]));
    assert_eq!(missed["next"], Value::Null);
    let arrived = alice.next_of_type("presence").await;
    assert_eq!(
        (&arrived["event"], &arrived["connectionId"]),
        (&json!("joined"), &json!(bob.id))
    );
    alice
        .send(&json!({"action":"broadcast","room":red,"message":"two"}).to_string())
        .await;
    assert_eq!(bob.next_of_type("broadcast").await["seq"], 2);
    bob.send(&json!({"action":"history","room":red,"limit":1}).to_string())
        .await;
    let page = bob.next_of_type("history").await;
    assert_eq!(
        (&page["messages"][0]["message"], &page["next"]),
        (&json!("two"), &json!(2))
    );
    bob.send(&json!({"action":"leave","room":red}).to_string())
        .await;
    assert_eq!(
        bob.next_of_type("left").await,
        json!({"type":"left","room":red})
    );
    assert_eq!(alice.next_of_type("presence").await["event"], "left");
}
