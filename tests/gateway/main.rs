//! The local gateway, driven with real websocket and HTTP clients: the wire protocol (the contract
//! in `docs/protocol.md`), the `@connections` API, API Gateway's limits, disconnects and bad input.
//!
//! It needs webchat-local and the terminal client: `cargo test --all-features` (without the
//! features it compiles to nothing).
#![cfg(all(feature = "local", feature = "client"))]

mod helpers;
mod hostile;
mod limits;
mod rooms;
mod scenarios;
mod signin;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::SinkExt;
use helpers::{spawn, spawn_with};
use serde_json::{Value, json};
use support::PATIENCE;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use webchat::local::{Config, Limits};

/// Asks for the list until it satisfies `check`.
async fn eventually_listed(client: &mut helpers::Client, check: impl Fn(&[String]) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        client.send_json(json!({"action":"list"})).await;
        let list = client.next_of_type("connections").await;
        let ids: Vec<String> = list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["connectionId"].as_str().unwrap().to_owned())
            .collect();
        if check(&ids) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the list never satisfied the check: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test]
async fn a_new_connection_is_welcomed_with_its_own_id() {
    let gateway = spawn().await;
    let mut client = gateway.connect("").await;
    let welcome = client.next_json().await;
    let id = welcome["connectionId"].as_str().unwrap();
    assert_eq!(id.len(), 16, "API Gateway style id: {id}");
    assert_eq!(
        welcome,
        json!({"type":"welcome","connectionId":id,"user":null,"name":null,"message":format!("Welcome! - connected on {id}")})
    );
}

#[tokio::test]
async fn an_invalid_name_fails_the_handshake_with_400() {
    let gateway = spawn().await;
    for query in [
        "?name=has%20space",
        "?name=%3Cscript%3E",
        &format!("?name={}", "a".repeat(33)),
    ] {
        match tokio_tungstenite::connect_async(gateway.url(query)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{query}");
                // the body says why: $connect's error frame
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap())
                    .expect("a JSON error frame");
                assert_eq!(body["code"], "invalid_field", "{query}");
                assert!(body["message"].as_str().unwrap().contains("`name`"));
            }
            other => panic!(
                "{query}: expected a refused handshake, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[tokio::test]
async fn the_server_logs_one_line_for_every_client_error_and_every_close_it_makes() {
    let dir = std::env::temp_dir().join(format!("webchat-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("webchat-local.log");
    let server = support::LocalProcess::start_logged(&["--log-level", "info"], &log).await;
    let addr = server.addr();
    let mut raw = scenarios::Raw::join(addr, "/").await.unwrap();
    let big = "x".repeat(16 * 1024 + 1);
    let frames = [
        "hello".to_owned(),
        json!({"action":"dance"}).to_string(),
        json!({"action":"broadcast"}).to_string(),
        json!({"action":"chat","connection":"bob","message":"hi"}).to_string(),
        json!({"action":"broadcast","message":big}).to_string(),
    ];
    for frame in &frames {
        raw.send(&scenarios::text(frame)).await.unwrap();
        raw.next_json("error", PATIENCE).await.unwrap();
    }
    // frames that work: nothing at info
    let fine = json!({"action":"broadcast","message":"fine"}).to_string();
    raw.send(&scenarios::text(&fine)).await.unwrap();
    raw.next_json("broadcast", PATIENCE).await.unwrap();
    raw.send(&scenarios::text(r#"{"action":"list"}"#))
        .await
        .unwrap();
    raw.next_json("connections", PATIENCE).await.unwrap();
    // a frame over 32 KB: closed with 1009
    raw.send(&scenarios::text(&"y".repeat(40_000)))
        .await
        .unwrap();
    assert_eq!(
        raw.next(PATIENCE).await,
        Some(scenarios::Arrival::Close(Some(1009)))
    );
    // a handshake refused for its name, and one at a path with no chat
    assert!(
        scenarios::Raw::open(addr, "/?name=a%20b", None)
            .await
            .is_err()
    );
    assert!(scenarios::Raw::open(addr, "/nowhere", None).await.is_err());
    let lines = support::poll_until("the log lines", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("no websocket at this path").then_some(text)
    })
    .await;
    let lines: Vec<&str> = lines.lines().collect();
    let count = |needle: &str| lines.iter().filter(|line| line.contains(needle)).count();
    for code in [
        "invalid_json",
        "unknown_action",
        "missing_field",
        "connection_not_found",
        "message_too_large",
    ] {
        assert_eq!(
            count(&format!("code={code}")),
            1,
            "{code}:\n{}",
            lines.join("\n")
        );
    }
    let client_errors: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("client error"))
        .collect();
    assert!(
        client_errors.iter().all(|line| line.contains(" INFO ")
            && line.contains(&raw.id)
            && line.contains("route=")),
        "each at info, with the connection id and the route: {client_errors:#?}"
    );
    assert_eq!(count("closed by the server"), 1, "{lines:#?}");
    let frames_that_worked = lines
        .iter()
        .filter(|l| {
            l.contains(" INFO ") && (l.contains("kind=\"inline\"") || l.contains("route=\"list\""))
        })
        .count();
    assert_eq!(frames_that_worked, 0, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("closed by the server") && l.contains("code=1009"))
    );
    assert!(
        lines.iter().any(|l| l.contains("handshake refused")
            && l.contains("status=400")
            && l.contains("`name`")),
        "{lines:#?}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_empty_name_is_no_name() {
    let gateway = spawn().await;
    let (mut client, id) = gateway.join("?name=").await;
    client.send_json(json!({"action":"list"})).await;
    let list = client.next_of_type("connections").await;
    let me = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["connectionId"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(me["name"], Value::Null);
}

#[tokio::test]
async fn the_stage_path_of_a_deployed_url_serves_the_chat_too() {
    let gateway = spawn().await;
    let (mut client, _) = gateway.join("local?name=alice").await;
    client.send_json(json!({"action":"list"})).await;
    client.next_of_type("connections").await;
    // another stage, or another path, is a 404 that says where the chat is
    let answer = gateway.http("GET", "/staging", b"").await;
    assert_eq!(answer.status, 404);
    assert!(
        answer.body.contains("the chat is at ws://"),
        "{}",
        answer.body
    );
    match tokio_tungstenite::connect_async(gateway.url("staging")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected a 404, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn broadcast_reaches_everyone_including_the_sender_verbatim() {
    let gateway = spawn().await;
    let (mut alice, alice_id) = gateway.join("?name=alice").await;
    let (mut bob, _) = gateway.join("").await;
    let text = "Anybody home? <b>bold</b> & \"quotes\" \\ ünïcödé 🎉\nnew line";
    alice
        .send_json(json!({"action":"broadcast","message":text}))
        .await;
    for client in [&mut alice, &mut bob] {
        let frame = client.next_of_type("broadcast").await;
        assert_eq!(frame["from"], alice_id.as_str());
        assert_eq!(frame["name"], "alice");
        assert_eq!(frame["user"], Value::Null, "no sign-in here");
        assert_eq!(frame["message"], text);
        assert!(is_rfc3339(&frame["sentAt"]), "{frame}");
        assert_eq!(frame.as_object().unwrap().len(), 6, "{frame}");
    }
}

#[tokio::test]
async fn a_broadcast_larger_than_a_scan_page_goes_through_the_shard_queue_and_reaches_everyone_once()
 {
    // Pages of 3: twelve clients make the broadcast go to segments and the fanout workers.
    let gateway = spawn_with(Config {
        scan_page_size: 3,
        ..crate::helpers::config()
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..12 {
        clients.push(gateway.join(&format!("?name=c{i}")).await.0);
    }
    clients[0]
        .send_json(json!({"action":"broadcast","message":"to the shards"}))
        .await;
    for client in &mut clients {
        assert_eq!(
            client.next_of_type("broadcast").await["message"],
            "to the shards"
        );
    }
    // Exactly once each: nothing more arrives.
    for client in &mut clients {
        client.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn list_shows_every_connection_with_names() {
    let gateway = spawn().await;
    let (mut alice, alice_id) = gateway.join("?name=alice").await;
    let (_bob, bob_id) = gateway.join("").await;
    alice.send_json(json!({"action":"list"})).await;
    let frame = alice.next_of_type("connections").await;
    let mut entries = frame["connections"].as_array().unwrap().clone();
    entries.sort_by_key(|e| e["connectionId"].as_str().unwrap().to_owned());
    let mut expected = vec![(alice_id, json!("alice")), (bob_id, Value::Null)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(entries.len(), 2);
    for (entry, (id, name)) in entries.iter().zip(expected) {
        assert_eq!(entry["connectionId"], id.as_str());
        assert_eq!(entry["name"], name);
        assert!(is_rfc3339(&entry["connectedAt"]));
    }
}

#[tokio::test]
async fn chat_reaches_only_its_target() {
    let gateway = spawn().await;
    let (mut alice, alice_id) = gateway.join("?name=alice").await;
    let (mut bob, bob_id) = gateway.join("?name=bob").await;
    let (mut carol, _) = gateway.join("").await;
    alice
        .send_json(json!({"action":"chat","connection":bob_id,"message":"Yo!"}))
        .await;
    let frame = bob.next_of_type("chat").await;
    assert_eq!(frame["from"], alice_id.as_str());
    assert_eq!(frame["name"], "alice");
    assert_eq!(frame["message"], "Yo!");
    assert!(is_rfc3339(&frame["sentAt"]));
    assert_eq!(frame["to"], bob_id.as_str());
    let copy = alice.next_of_type("chat").await;
    assert_eq!(copy, frame, "the sender's copy says it was delivered");
    carol.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn chat_to_an_unknown_or_departed_connection_answers_connection_not_found() {
    let gateway = spawn().await;
    let (mut alice, _) = gateway.join("").await;
    alice
        .send_json(json!({"action":"chat","connection":"AAAAAAAAAAAAAAA=","message":"hi"}))
        .await;
    assert_eq!(alice.next_error_code().await, "connection_not_found");

    let (bob, bob_id) = gateway.join("").await;
    bob.close().await;
    gateway.wait_until_gone(&bob_id).await;
    alice
        .send_json(json!({"action":"chat","connection":bob_id,"message":"hi"}))
        .await;
    assert_eq!(alice.next_error_code().await, "connection_not_found");
}

#[tokio::test]
async fn frames_that_name_no_route_get_the_right_error_and_the_connection_keeps_serving() {
    let gateway = spawn().await;
    let (mut client, _) = gateway.join("").await;
    let cases = [
        ("not json", "invalid_json"),
        ("{\"action\":", "invalid_json"),
        ("[1,2,3]", "unknown_action"),
        ("42", "unknown_action"),
        ("{}", "unknown_action"),
        ("{\"action\":\"dance\"}", "unknown_action"),
        ("{\"action\":7}", "unknown_action"),
        ("{\"action\":\"$connect\"}", "unknown_action"),
    ];
    for (frame, code) in cases {
        client.send_text(frame).await;
        assert_eq!(client.next_error_code().await, code, "{frame}");
    }
    client
        .ws
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    assert_eq!(client.next_error_code().await, "invalid_json");
    client.send_json(json!({"action":"list"})).await;
    client.next_of_type("connections").await;
}

#[tokio::test]
async fn messages_are_validated() {
    let gateway = spawn().await;
    let (mut client, id) = gateway.join("").await;
    let cases = [
        (json!({"action":"broadcast"}), "missing_field"),
        (
            json!({"action":"broadcast","message":null}),
            "missing_field",
        ),
        (json!({"action":"broadcast","message":""}), "invalid_field"),
        (
            json!({"action":"broadcast","message":{"nested":true}}),
            "invalid_field",
        ),
        (
            json!({"action":"broadcast","message":"x".repeat(16 * 1024 + 1)}),
            "message_too_large",
        ),
        (json!({"action":"chat","message":"hi"}), "missing_field"),
        (
            json!({"action":"chat","connection":id,"message":7}),
            "invalid_field",
        ),
        (
            json!({"action":"chat","connection":"no way","message":"hi"}),
            "invalid_field",
        ),
        (json!({"action":"chat","connection":id}), "missing_field"),
    ];
    for (frame, code) in cases {
        client.send_json(frame.clone()).await;
        assert_eq!(client.next_error_code().await, code, "{frame}");
    }
    let largest = "é".repeat(8 * 1024);
    client
        .send_json(json!({"action":"broadcast","message":largest}))
        .await;
    assert_eq!(
        client.next_of_type("broadcast").await["message"],
        largest.as_str()
    );
}

#[tokio::test]
async fn connections_api_posts_the_raw_body_as_a_text_frame() {
    let gateway = spawn().await;
    let (mut client, id) = gateway.join("").await;
    let posted = gateway
        .http(
            "POST",
            &format!("/@connections/{id}"),
            b"plain text, not JSON",
        )
        .await;
    assert_eq!(posted.status, 200);
    assert_eq!(client.next_text().await, "plain text, not JSON");
    let staged = gateway
        .http(
            "POST",
            &format!("/local/@connections/{id}"),
            b"{\"via\":\"stage\"}",
        )
        .await;
    assert_eq!(staged.status, 200);
    assert_eq!(client.next_text().await, "{\"via\":\"stage\"}");
    let escaped = id.replace('=', "%3D");
    assert_eq!(
        gateway
            .http("POST", &format!("/@connections/{escaped}"), b"escaped")
            .await
            .status,
        200
    );
    assert_eq!(client.next_text().await, "escaped");
}

#[tokio::test]
async fn connections_api_answers_gone_for_unknown_ids_the_aws_way() {
    let gateway = spawn().await;
    for method in ["POST", "GET", "DELETE"] {
        let response = gateway
            .http(method, "/@connections/AAAAAAAAAAAAAAA=", b"x")
            .await;
        assert_eq!(response.status, 410, "{method}");
        assert_eq!(response.header("x-amzn-errortype"), Some("GoneException"));
        assert!(response.json()["message"].is_string());
    }
    let wrong_stage = gateway
        .http("POST", "/prod/@connections/AAAAAAAAAAAAAAA=", b"x")
        .await;
    assert_eq!(wrong_stage.status, 403);
}

#[tokio::test]
async fn connections_api_refuses_bodies_over_128_kb() {
    let gateway = spawn().await;
    let (mut client, id) = gateway.join("").await;
    let limit = 128 * 1024;
    let over = gateway
        .http(
            "POST",
            &format!("/@connections/{id}"),
            &vec![b'x'; limit + 1],
        )
        .await;
    assert_eq!(over.status, 413);
    assert_eq!(
        over.header("x-amzn-errortype"),
        Some("PayloadTooLargeException")
    );
    let at = gateway
        .http("POST", &format!("/@connections/{id}"), &vec![b'y'; limit])
        .await;
    assert_eq!(at.status, 200);
    assert_eq!(client.next_text().await.len(), limit);
}

#[tokio::test]
async fn connections_api_describes_a_connection_as_the_sdk_expects() {
    let gateway = spawn().await;
    let (_client, id) = gateway.join("").await;
    let response = gateway
        .http("GET", &format!("/@connections/{id}"), b"")
        .await;
    assert_eq!(response.status, 200);
    let info = response.json();
    assert!(is_rfc3339(&info["connectedAt"]), "{info}");
    assert!(is_rfc3339(&info["lastActiveAt"]), "{info}");
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");
    assert!(info["identity"]["userAgent"].is_string() || info["identity"]["userAgent"].is_null());
}

#[tokio::test]
async fn connections_api_delete_closes_the_client_and_runs_disconnect() {
    let gateway = spawn().await;
    let (mut client, id) = gateway.join("").await;
    let (mut other, _) = gateway.join("").await;
    let deleted = gateway
        .http("DELETE", &format!("/@connections/{id}"), b"")
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(client.closed().await, 1000);
    gateway.wait_until_gone(&id).await;
    // and $disconnect removed it from the store
    eventually_listed(&mut other, |ids| !ids.contains(&id)).await;
}

#[tokio::test]
async fn a_frame_over_32_kb_closes_the_connection_with_1009() {
    let gateway = spawn().await;
    let (mut client, id) = gateway.join("").await;
    client.send_text(&"x".repeat(32 * 1024 + 1)).await;
    assert_eq!(client.closed().await, 1009);
    gateway.wait_until_gone(&id).await;
}

#[tokio::test]
async fn a_message_over_128_kb_in_small_frames_closes_the_connection_with_1009() {
    let gateway = spawn().await;
    let (mut client, _) = gateway.join("").await;
    let chunk = vec![b'x'; 30 * 1024];
    client
        .ws
        .send(Message::Frame(Frame::message(
            chunk.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .unwrap();
    for _ in 0..4 {
        let _ = client
            .ws
            .send(Message::Frame(Frame::message(
                chunk.clone(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await;
    }
    let _ = client
        .ws
        .send(Message::Frame(Frame::message(
            chunk,
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    assert_eq!(client.closed().await, 1009);
}

#[tokio::test]
async fn a_message_in_several_frames_within_the_limits_is_served() {
    let gateway = spawn().await;
    let (mut client, _) = gateway.join("").await;
    let text = json!({"action":"broadcast","message":"y".repeat(15_000)}).to_string();
    let (first, rest) = text.as_bytes().split_at(8_000);
    client
        .ws
        .send(Message::Frame(Frame::message(
            first.to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .unwrap();
    client
        .ws
        .send(Message::Frame(Frame::message(
            rest.to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await
        .unwrap();
    assert_eq!(
        client.next_of_type("broadcast").await["message"]
            .as_str()
            .unwrap()
            .len(),
        15_000
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_1001() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let gateway = spawn_with(Config {
        limits,
        ..crate::helpers::config()
    })
    .await;
    let (mut client, _) = gateway.join("").await;
    assert_eq!(client.closed().await, 1001);
}

#[tokio::test]
async fn a_busy_connection_is_still_closed_at_the_maximum_duration() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(400),
        max_duration: Duration::from_millis(1200),
        ..Limits::default()
    };
    let gateway = spawn_with(Config {
        limits,
        ..crate::helpers::config()
    })
    .await;
    let (mut client, _) = gateway.join("").await;
    let started = tokio::time::Instant::now();
    let code = loop {
        client.send_json(json!({"action":"list"})).await; // activity keeps the idle timer away
        match tokio::time::timeout(Duration::from_millis(150), client.closed()).await {
            Ok(code) => break code,
            Err(_) => continue,
        }
    };
    assert_eq!(code, 1001);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "closed by the idle timer instead"
    );
}

#[tokio::test]
async fn a_client_that_leaves_is_forgotten() {
    let gateway = spawn().await;
    let (mut alice, _) = gateway.join("").await;
    let (bob, bob_id) = gateway.join("").await;
    bob.close().await;
    eventually_listed(&mut alice, |ids| ids.len() == 1).await;
    assert_eq!(
        gateway
            .http("POST", &format!("/@connections/{bob_id}"), b"x")
            .await
            .status,
        410
    );
}

#[tokio::test]
async fn a_plain_get_serves_the_chat_page() {
    let gateway = spawn().await;
    let response = gateway.http("GET", "/?name=alice", b"").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(
        response.body.contains("<title>webchat</title>"),
        "{}",
        response.body
    );
    assert!(response.header("content-security-policy").is_some());
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001() {
    let gateway = spawn().await;
    let (mut a, _) = gateway.join("").await;
    let (mut b, _) = gateway.join("").await;
    let stopping = tokio::spawn(gateway.stop());
    assert_eq!(a.closed().await, 1001);
    assert_eq!(b.closed().await, 1001);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_broadcast_during_a_handshake_loses_neither_the_welcome_nor_the_newcomer() {
    // The contract: exactly one welcome, in any order with broadcasts sent meanwhile.
    let gateway = spawn().await;
    let (mut chatter, _) = gateway.join("").await;
    for round in 0..20 {
        let busy = json!({"action":"broadcast","message":"busy"});
        chatter.send_json(busy.clone()).await;
        let mut newcomer = gateway.connect("").await;
        chatter.send_json(busy).await;
        let after = format!("after {round}");
        chatter
            .send_json(json!({"action":"broadcast","message":after}))
            .await;
        let (mut welcomes, mut reached) = (0, false);
        while !(welcomes == 1 && reached) {
            let frame = newcomer.next_json().await;
            match frame["type"].as_str() {
                Some("welcome") => welcomes += 1,
                Some("broadcast") => reached |= frame["message"] == after.as_str(),
                _ => panic!("unexpected {frame}"),
            }
            assert!(welcomes <= 1, "one welcome only");
        }
    }
}

#[tokio::test]
async fn the_terminal_client_chats_through_its_stdin_and_stdout() {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let gateway = spawn().await;
    let (mut listener, _) = gateway.join("").await;
    let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_webchat"))
        .args([
            "connect",
            &gateway.url(""),
            "--name",
            "terminal",
            "--linger",
            "1s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start webchat connect");
    let mut stdin = client.stdin.take().unwrap();
    stdin
        .write_all(b"/list\n/broadcast hello from the terminal\n/chat AAAAAAAAAAAAAAA= anyone?\n/dance\n{\"action\":\"list\"}\n")
        .await
        .unwrap();
    drop(stdin); // end of input: the client lingers for answers, then leaves
    let output = tokio::time::timeout(Duration::from_secs(10), client.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let frames: Vec<Value> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("< "))
        .map(|frame| serde_json::from_str(frame).unwrap())
        .collect();
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "welcome", "{stdout}");
    assert!(
        frames.iter().any(|f| f["type"] == "connections"
            && f["connections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "terminal")),
        "{stdout}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "broadcast" && f["name"] == "terminal"),
        "{stdout}"
    );
    assert!(
        frames.iter().any(|f| f["code"] == "connection_not_found"),
        "{stdout}"
    );
    assert!(
        stdout.contains("commands: /list"),
        "a mistyped shortcut is explained: {stdout}"
    );
    assert_eq!(types.iter().filter(|t| **t == "connections").count(), 2);
    // and the other client heard the broadcast
    assert_eq!(
        listener.next_of_type("broadcast").await["message"],
        "hello from the terminal"
    );
}

#[tokio::test]
async fn the_terminal_client_prints_a_url_with_the_name_for_wscat() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_webchat"))
        .args([
            "connect",
            "ws://127.0.0.1:9/",
            "--name",
            "alice",
            "--print-url",
        ])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        "ws://127.0.0.1:9/?name=alice"
    );
}

/// Runs `webchat-local` with `args` (and RUST_BACKTRACE=1) to its exit; its status and stderr.
async fn webchat_local_fails(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_webchat-local"))
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("it exits")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("stack backtrace") && !stderr.contains("panicked"),
        "a user's mistake is no crash: {stderr}"
    );
    (output.status.code(), stderr)
}

/// Starts `webchat-local` with `args`; the `ws://` URL it prints.
async fn webchat_local_url(args: &[&str]) -> String {
    support::LocalProcess::start(args, &[]).await.url
}

#[tokio::test]
async fn an_address_in_use_is_named_with_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (status, stderr) = webchat_local_fails(&["--listen", &address]).await;
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}"))
            && stderr.contains("in use")
            && stderr.contains("--listen 0"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[tokio::test]
async fn listen_takes_a_port_alone_or_a_host_name() {
    assert!(
        webchat_local_url(&["--listen", "0"])
            .await
            .starts_with("ws://127.0.0.1:")
    );
    assert!(
        webchat_local_url(&["--listen", "localhost:0"])
            .await
            .starts_with("ws://127.0.0.1:")
    );
    let (status, stderr) = webchat_local_fails(&["--listen", "no such host:99999"]).await;
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("localhost:3001"),
        "the forms it takes: {stderr}"
    );
}

#[tokio::test]
async fn a_log_level_in_the_environment_is_checked_too_and_zero_limits_are_refused() {
    for name in ["RUST_LOG", "LOG_LEVEL"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_webchat-local"))
            .args(["--listen", "0"])
            .env_remove("RUST_LOG")
            .env_remove("LOG_LEVEL")
            .env(name, "verbose")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}=verbose")) && stderr.contains("not a log level"),
            "{stderr}"
        );
    }
    for args in [
        ["--idle-timeout", "0s"],
        ["--max-connection-duration", "0"],
        ["--max-message-bytes", "0"],
    ] {
        let (status, stderr) = webchat_local_fails(&args).await;
        assert_eq!(status, Some(2), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_log_level_that_is_no_level_is_refused_with_the_levels() {
    let (status, stderr) = webchat_local_fails(&["--log-level", "verbose"]).await;
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("\"verbose\" is not a log level") && stderr.contains("debug"),
        "{stderr}"
    );
    // a filter of target=level directives is fine
    assert!(
        webchat_local_url(&["--listen", "0", "--log-level", "webchat=debug,warn"])
            .await
            .starts_with("ws://")
    );
}

/// `webchat connect` with `args`, `input` on its stdin, to its exit: status, stdout, stderr.
pub(crate) async fn webchat_connect(args: &[&str], input: &str) -> (Option<i32>, String, String) {
    webchat_connect_with(args, &[], input).await
}

/// [`webchat_connect`] with more environment variables.
pub(crate) async fn webchat_connect_with(
    args: &[&str],
    env: &[(&str, &str)],
    input: &str,
) -> (Option<i32>, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_webchat"))
        .arg("connect")
        .args(args)
        .env_remove("WEBCHAT_TOKEN")
        .envs(env.iter().copied())
        .args(["--linger", "300ms"])
        .env("RUST_BACKTRACE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(PATIENCE, client.wait_with_output())
        .await
        .expect("webchat connect exits")
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    let stderr = text(output.stderr);
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    (output.status.code(), text(output.stdout), stderr)
}

#[tokio::test]
async fn the_terminal_client_says_why_it_could_not_connect() {
    let gateway = spawn().await;
    let host = gateway.addr.to_string();
    // nothing listening
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = free.local_addr().unwrap().to_string();
    drop(free);
    let (status, _, stderr) = webchat_connect(&[&format!("ws://{nobody}")], "").await;
    assert_eq!(status, Some(1));
    assert!(
        stderr.contains("nothing is listening") && stderr.contains("cargo run"),
        "{stderr}"
    );
    // TLS to a plain server
    let (status, _, stderr) = webchat_connect(&[&format!("wss://{host}")], "").await;
    assert_eq!(status, Some(1));
    assert!(stderr.contains(&format!("use ws://{host}")), "{stderr}");
    // a name the server refuses: its reason, not a bare status
    let (status, _, stderr) = webchat_connect(&[&format!("ws://{host}/?name=a%20b")], "").await;
    assert_eq!(status, Some(1));
    assert!(
        stderr.contains("400") && stderr.contains("`name` must be"),
        "{stderr}"
    );
    // and one it can check itself, before connecting
    let (status, _, stderr) = webchat_connect(&[&host, "--name", "a b"], "").await;
    assert_eq!(status, Some(1));
    assert!(
        stderr.contains("--name \"a b\"") && stderr.contains("1 to 32"),
        "{stderr}"
    );
    // http:// and a bare host:port connect
    for url in [format!("http://{host}"), host.clone()] {
        let (status, stdout, stderr) = webchat_connect(&[&url], "/quit\n").await;
        assert_eq!(status, Some(0), "{url}: {stderr}");
        assert!(stdout.starts_with("connected"), "{url}: {stdout}");
    }
}

#[tokio::test]
async fn the_terminal_client_broadcasts_plain_text_and_names_an_unknown_command() {
    let gateway = spawn().await;
    let (status, stdout, _) =
        webchat_connect(&[&gateway.url("")], "hello, plain text\n/dance\n").await;
    assert_eq!(status, Some(0));
    assert!(stdout.contains("unknown command /dance"), "{stdout}");
    let broadcast = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("< "))
        .map(|frame| serde_json::from_str::<Value>(frame).unwrap())
        .find(|frame| frame["type"] == "broadcast")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(broadcast["message"], "hello, plain text");
}

/// `webchat connect` in a pseudo-terminal (`script`), as a person runs it: its input stays open.
fn in_a_terminal(url: &str) -> tokio::process::Child {
    let command = format!("{} connect '{url}'", env!("CARGO_BIN_EXE_webchat"));
    tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("script (util-linux) runs the client in a pseudo-terminal")
}

/// Reads the client's output until its welcome; its connection id.
async fn welcomed(client: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncBufReadExt;
    let stdout = client.stdout.as_mut().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find("{\"type\":\"welcome\"") {
                let welcome: Value = serde_json::from_str(line[at..].trim()).unwrap();
                return welcome["connectionId"].as_str().unwrap().to_owned();
            }
        }
        panic!("no welcome");
    })
    .await
    .expect("welcomed in time")
}

#[tokio::test]
async fn the_terminal_client_exits_when_the_server_closes_without_waiting_for_a_line() {
    let gateway = spawn().await;
    // a normal close (DeleteConnection: 1000): status 0
    let mut client = in_a_terminal(&gateway.url(""));
    let _stdin = client.stdin.take(); // open, never written: a person who types nothing
    let id = welcomed(&mut client).await;
    let deleted = gateway
        .http("DELETE", &format!("/@connections/{id}"), b"")
        .await;
    assert_eq!(deleted.status, 204);
    let status = tokio::time::timeout(Duration::from_secs(5), client.wait())
        .await
        .expect("the client exits when the server closes, not at the next Enter")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // the server going away (1001): an abnormal end, status 1
    let mut client = in_a_terminal(&gateway.url(""));
    let _stdin = client.stdin.take();
    welcomed(&mut client).await;
    gateway.stop().await;
    let status = tokio::time::timeout(Duration::from_secs(5), client.wait())
        .await
        .expect("the client exits when the server goes away")
        .unwrap();
    assert_eq!(status.code(), Some(1));
}
