//! Per-client limits on the wire (issue 23), against the local gateway: a flood held to its
//! budget while another client chats, a connection closed (1008) after sustained refusals, a
//! broadcast charged its audience, the everyone-broadcast turned off, and a user's connections.
//! No test waits out a budget: each sets budgets its frames exhaust or fit.

use std::time::Instant;

use serde_json::{Value, json};
use webchat::domain::limits::{Limits, Rate};
use webchat::local::{Auth, Config};

use super::helpers::{Client, TestGateway, spawn_with};

async fn limited(limits: Limits) -> TestGateway {
    limited_with(limits, None).await
}

async fn limited_with(limits: Limits, auth: Option<Auth>) -> TestGateway {
    let config = crate::helpers::config();
    spawn_with(Config {
        settings: webchat::domain::Settings {
            limits,
            ..config.settings.clone()
        },
        auth,
        ..config
    })
    .await
}

/// Reads `count` frames; those answered `rate_limited`, and the rest.
async fn answers(client: &mut Client, count: usize) -> (Vec<Value>, Vec<Value>) {
    let mut refused = Vec::new();
    let mut served = Vec::new();
    for _ in 0..count {
        let frame = client.next_json().await;
        if frame["code"] == "rate_limited" {
            refused.push(frame);
        } else {
            served.push(frame);
        }
    }
    (refused, served)
}

#[tokio::test]
async fn a_flood_is_held_to_its_frame_budget_while_another_client_chats() {
    // the defaults' frame budget, and no closing: this test counts
    let gateway = limited(Limits {
        refusals_to_close: None,
        ..Limits::default()
    })
    .await;
    let (mut flooder, _) = gateway.join("?name=flood").await;
    let (mut other, _) = gateway.join("?name=calm").await;
    let started = Instant::now();
    for _ in 0..200 {
        flooder.send_json(json!({"action": "list"})).await;
    }
    // meanwhile the other client chats, within its own budget, and is served every time
    for i in 0..5 {
        let message = format!("still here {i}");
        other
            .send_json(json!({"action": "broadcast", "message": message}))
            .await;
        loop {
            let frame = other.next_json().await;
            assert_ne!(frame["type"], "error", "{frame}");
            if frame["type"] == "broadcast" && frame["message"] == message.as_str() {
                break;
            }
        }
    }
    // every flood frame is answered: a list, or rate_limited
    let mut refused = Vec::new();
    let mut served = 0;
    while refused.len() + served < 200 {
        let frame = flooder.next_json().await;
        match frame["type"].as_str() {
            Some("connections") => served += 1,
            Some("error") => refused.push(frame),
            // the other client's broadcasts reach the flooder too
            _ => {}
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // the burst of 20, and 10 a second for as long as the flood lasted: within one interval
    let bound = 20 + (elapsed * 10.0).ceil() as usize + 1;
    assert!(
        (20..=bound).contains(&served),
        "{served} served in {elapsed:.2} s"
    );
    for frame in &refused {
        assert_eq!(frame["code"], "rate_limited", "{frame}");
        let retry = frame["retryAfterMs"].as_u64().expect("retryAfterMs");
        assert!((1..=100).contains(&retry), "{frame}");
        assert!(
            frame["message"]
                .as_str()
                .unwrap()
                .contains("10 a second, 20 at once"),
            "{frame}"
        );
    }
    // the flooder keeps being served within its budget once it slows down
    let wait = refused.last().unwrap()["retryAfterMs"].as_u64().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    flooder.send_json(json!({"action": "list"})).await;
    assert_eq!(
        flooder.next_of_type("connections").await["type"],
        "connections"
    );
}

#[tokio::test]
async fn a_connection_whose_frames_keep_being_refused_is_closed_with_1008() {
    let gateway = limited(Limits {
        frames: Some(Rate::per_second(1, 1)),
        ..Limits::default()
    })
    .await;
    let (mut flooder, _) = gateway.join("?name=flood").await;
    let (mut other, other_id) = gateway.join("?name=calm").await;
    let started = Instant::now();
    for _ in 0..150 {
        flooder.send_json(json!({"action": "list"})).await;
    }
    let (code, reason, before) = flooder.closed_with_reason().await;
    assert_eq!(code, 1008, "{reason}");
    assert_eq!(reason, "too many refused frames");
    let refused: Vec<&Value> = before
        .iter()
        .filter(|frame| frame["code"] == "rate_limited")
        .collect();
    let closing = |frame: &&Value| {
        frame["message"]
            .as_str()
            .unwrap()
            .contains("so it is being closed")
    };
    // 99 refusals are told and allowed to go on (more if one every 6 s came back while the
    // flood lasted); the 100th closes (frames in flight with it may say so too)
    let told = refused.iter().filter(|frame| !closing(frame)).count();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        (99..=100 + (elapsed / 6.0) as usize).contains(&told),
        "{told} in {elapsed:.2} s"
    );
    assert!(refused.iter().any(closing), "{before:?}");
    // the other connection is untouched
    other.send_json(json!({"action": "list"})).await;
    let list = other.next_of_type("connections").await;
    let ids: Vec<&str> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["connectionId"].as_str())
        .collect();
    assert!(ids.contains(&other_id.as_str()), "{list}");
}

#[tokio::test]
async fn a_broadcast_costs_its_audience_and_one_past_the_whole_budget_is_forbidden() {
    let gateway = limited(Limits {
        deliveries: Some(Rate::per_minute(5)),
        ..Limits::off()
    })
    .await;
    let (mut ada, _) = gateway.join("?name=ada").await;
    let (mut bob, _) = gateway.join("?name=bob").await;
    let (_carol, _) = gateway.join("?name=carol").await;
    let started = Instant::now();
    // to everyone: 3 of the 5
    ada.send_json(json!({"action": "broadcast", "message": "one"}))
        .await;
    assert_eq!(bob.next_of_type("broadcast").await["message"], "one");
    ada.send_json(json!({"action": "broadcast", "message": "two"}))
        .await;
    let refused = ada.next_of_type("error").await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    // 2 are left, 3 needed: the third comes back 12 s after the first broadcast (5 a minute)
    let retry = refused["retryAfterMs"].as_u64().unwrap();
    let since = started.elapsed().as_millis() as u64;
    assert!(
        (12_000u64.saturating_sub(since + 1)..=12_000).contains(&retry),
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("would reach 3 connections"),
        "{refused}"
    );
    // a room of two fits the 2 left
    for client in [&mut ada, &mut bob] {
        client
            .send_json(json!({"action": "join", "room": "r"}))
            .await;
        client.next_of_type("joined").await;
    }
    ada.send_json(json!({"action": "broadcast", "room": "r", "message": "in r"}))
        .await;
    assert_eq!(bob.next_of_type("broadcast").await["message"], "in r");
    // bob's budget is his own; a broadcast to everyone is more than ever fits in 2 a minute
    let small = limited(Limits {
        deliveries: Some(Rate::per_minute(2)),
        ..Limits::off()
    })
    .await;
    let (mut dan, _) = small.join("?name=dan").await;
    let (_eve, _) = small.join("?name=eve").await;
    let (_fay, _) = small.join("?name=fay").await;
    dan.send_json(json!({"action": "broadcast", "message": "all"}))
        .await;
    let forbidden = dan.next_of_type("error").await;
    assert_eq!(forbidden["code"], "forbidden", "{forbidden}");
    assert!(forbidden.get("retryAfterMs").is_none(), "{forbidden}");
    let message = forbidden["message"].as_str().unwrap();
    assert!(
        message.contains("at most 2 a minute; this one would reach 3"),
        "{message}"
    );
}

#[tokio::test]
async fn with_the_everyone_broadcast_off_only_rooms_are_spoken_in() {
    let gateway = limited(Limits {
        everyone_broadcast: false,
        ..Limits::off()
    })
    .await;
    let (mut ada, _) = gateway.join("?name=ada").await;
    let (mut bob, _) = gateway.join("?name=bob").await;
    ada.send_json(json!({"action": "broadcast", "message": "all"}))
        .await;
    assert_eq!(ada.next_error_code().await, "forbidden");
    for client in [&mut ada, &mut bob] {
        client
            .send_json(json!({"action": "join", "room": "r"}))
            .await;
        client.next_of_type("joined").await;
    }
    ada.send_json(json!({"action": "broadcast", "room": "r", "message": "hi"}))
        .await;
    let heard = bob.next_of_type("broadcast").await;
    assert_eq!(heard["message"], "hi");
    assert_eq!(heard["room"], "r");
}

/// A token from the dev issuer.
async fn token(gateway: &TestGateway, name: &str) -> String {
    let answer = gateway
        .http("GET", &format!("/dev/token?name={name}"), b"")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body.trim().to_owned()
}

/// A signed-in gateway where each user may hold 2 connections, and ada's token.
async fn two_connections_each() -> (TestGateway, String) {
    let gateway = limited_with(
        Limits {
            connections_per_user: Some(2),
            ..Limits::off()
        },
        Some(Auth::Dev),
    )
    .await;
    let ada = token(&gateway, "ada").await;
    (gateway, ada)
}

#[tokio::test]
async fn a_users_connection_past_their_limit_is_refused_with_429_and_why() {
    let (gateway, ada) = two_connections_each().await;
    let (first, first_id) = gateway.join(&format!("?token={ada}")).await;
    let (_second, _) = gateway.join(&format!("?token={ada}")).await;
    let (status, body) = gateway.refused_with_body(&format!("?token={ada}")).await;
    assert_eq!(status, 429, "{body}");
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["code"], "too_many_connections");
    assert!(
        body["message"].as_str().unwrap().contains("at most 2"),
        "{body}"
    );
    // another user is not counted against ada
    let bob = token(&gateway, "bob").await;
    let (_bob, _) = gateway.join(&format!("?token={bob}")).await;
    // once one of ada's closes, she may connect again
    first.close().await;
    gateway.wait_until_gone(&first_id).await;
    let (_third, _) = gateway.join(&format!("?token={ada}")).await;
}

#[tokio::test]
async fn a_users_frames_are_one_budget_across_their_connections() {
    let gateway = limited_with(
        Limits {
            user_frames: Some(Rate::per_second(2, 4)),
            ..Limits::off()
        },
        Some(Auth::Dev),
    )
    .await;
    let ada = token(&gateway, "ada").await;
    let (mut phone, _) = gateway.join(&format!("?token={ada}")).await;
    let (mut laptop, _) = gateway.join(&format!("?token={ada}")).await;
    let started = Instant::now();
    for _ in 0..5 {
        phone.send_json(json!({"action": "list"})).await;
        laptop.send_json(json!({"action": "list"})).await;
    }
    let (phone_refused, phone_served) = answers(&mut phone, 5).await;
    let (laptop_refused, laptop_served) = answers(&mut laptop, 5).await;
    let served = phone_served.len() + laptop_served.len();
    let elapsed = started.elapsed().as_secs_f64();
    let bound = 4 + (elapsed * 2.0).ceil() as usize + 1;
    assert!((4..=bound).contains(&served), "{served} in {elapsed:.2} s");
    let message = phone_refused
        .iter()
        .chain(&laptop_refused)
        .next()
        .expect("some refused")["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("your connections together"), "{message}");
}

#[tokio::test]
async fn the_terminal_client_says_slow_down_and_holds_the_next_line_until_it_would_pass() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    // kept until the end: dropping it stops the server
    let local =
        crate::support::LocalProcess::start(&["--frame-rate", "1", "--frame-burst", "2"], &[])
            .await;
    let url = local.url.clone();
    let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_webchat"))
        .args(["connect", &url, "--linger", "300ms"])
        .env_remove("WEBCHAT_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(crate::support::PATIENCE, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .unwrap_or_else(|| panic!("more output"))
    };
    // three at once against a burst of 2: one is refused
    let written = Instant::now();
    stdin.write_all(b"/list\n/list\n/list\n").await.unwrap();
    let is_list = |line: &str| line.starts_with("< {\"type\":\"connections\"");
    let mut answered = 0;
    let wait = loop {
        let line = next_line().await;
        answered += usize::from(is_list(&line));
        if let Some(frame) = line.strip_prefix("< ")
            && let Ok(frame) = serde_json::from_str::<Value>(frame)
            && frame["code"] == "rate_limited"
        {
            break std::time::Duration::from_millis(frame["retryAfterMs"].as_u64().unwrap());
        }
    };
    assert!(
        next_line()
            .await
            .starts_with("! slow down: too many frames")
    );
    // typed now, sent once the budget has it: served, not refused again (the third list
    // answered: two of the first three were)
    stdin.write_all(b"/list\n").await.unwrap();
    drop(stdin);
    while answered < 3 {
        let line = next_line().await;
        assert!(!line.contains("rate_limited"), "{line}");
        answered += usize::from(is_list(&line));
    }
    // the hold began when the refusal arrived, after the three were written
    assert!(
        written.elapsed() >= wait,
        "answered {:?} after the three were written; the wait was {wait:?}",
        written.elapsed()
    );
}

#[tokio::test]
async fn connects_opened_at_once_are_held_near_the_users_limit() {
    let (gateway, ada) = two_connections_each().await;
    let url = gateway.url(&format!("?token={ada}"));
    let attempts = (0..10).map(|_| tokio_tungstenite::connect_async(url.clone()));
    let results = futures_util::future::join_all(attempts).await;
    let opened = results.iter().filter(|result| result.is_ok()).count();
    // each may read the count before the others' records are written; the connects bucket
    // (twice the limit at once) holds what the count alone would let through
    assert!((2..=4).contains(&opened), "{opened} of 10 opened");
    for result in &results {
        if let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = result {
            assert_eq!(response.status(), 429);
        }
    }
}
