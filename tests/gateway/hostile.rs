//! Hostile clients against the local gateway. The scenarios `scripts/probe-hostile` runs against
//! a release process (`scenarios.rs`) run here against an in-process gateway, with limits small
//! enough to hit quickly; then what only a test checks: messages over the frame size, a client
//! that vanishes, a body sent a byte at a time, a listen address open to the network.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webchat::local::Config;

use crate::helpers::{TestGateway, spawn, spawn_with};
use crate::scenarios::{self, Arrival, Raw, Report, Target};
use crate::support::PATIENCE;

fn target(gateway: &TestGateway) -> Target {
    Target {
        addr: gateway.addr,
        pid: None,
    }
}

/// A scenario's report, which must say ok; a scenario gets a minute at most.
async fn verdict(scenario: impl Future<Output = Report>) {
    let report = tokio::time::timeout(Duration::from_secs(60), scenario)
        .await
        .expect("the scenario finished within a minute");
    assert!(report.ok, "{report}");
}

#[tokio::test]
async fn every_bad_frame_of_the_corpus_is_answered_by_exactly_one_error() {
    let gateway = spawn().await;
    verdict(scenarios::bad_inputs(target(&gateway))).await;
}

#[tokio::test]
async fn rfc_6455_violations_are_closed_with_their_status_codes() {
    let gateway = spawn().await;
    verdict(scenarios::rfc_6455(target(&gateway))).await;
}

#[tokio::test]
async fn a_broken_upgrade_gets_400_or_426_not_the_chat_page() {
    let gateway = spawn().await;
    verdict(scenarios::broken_upgrades(target(&gateway))).await;
}

#[tokio::test]
async fn a_repeated_query_key_gives_its_last_value_as_api_gateway_does() {
    let gateway = spawn().await;
    verdict(scenarios::repeated_query(target(&gateway))).await;
}

#[tokio::test]
async fn the_management_api_refuses_requests_from_web_pages() {
    let gateway = spawn().await;
    verdict(scenarios::forged_post(target(&gateway))).await;
}

#[tokio::test]
async fn a_broadcast_reaches_200_clients() {
    let gateway = spawn().await;
    verdict(scenarios::load(target(&gateway), 200)).await;
}

#[tokio::test]
async fn a_client_that_floods_pings_and_never_reads_is_dropped() {
    let gateway = spawn_with(Config {
        max_outbound_bytes: 64 * 1024,
        ..crate::helpers::config()
    })
    .await;
    verdict(scenarios::ping_flood(
        target(&gateway),
        Duration::from_secs(3),
    ))
    .await;
}

#[tokio::test]
async fn half_sent_requests_time_out_and_cannot_lock_clients_out() {
    let gateway = spawn_with(Config {
        header_timeout: Duration::from_millis(500),
        max_connections: Some(4),
        ..crate::helpers::config()
    })
    .await;
    let seen = scenarios::half_sent_requests(target(&gateway), 6, Duration::from_secs(3));
    let seen = tokio::time::timeout(Duration::from_secs(60), seen)
        .await
        .unwrap();
    // at the bound of 4, the two oldest gave their places to the newest at once
    let evicted =
        |close: &Option<Duration>| close.is_some_and(|after| after < Duration::from_millis(300));
    assert!(
        seen.closes.len() == 6 && seen.closes[..2].iter().all(evicted),
        "{:?}\n{}",
        seen.closes,
        seen.report
    );
    assert!(seen.report.ok, "{}", seen.report);
}

#[tokio::test]
async fn shutdown_ends_within_its_grace_whatever_the_clients_do() {
    let gateway = spawn_with(Config {
        shutdown_grace: Duration::from_millis(500),
        ..crate::helpers::config()
    })
    .await;
    let at = target(&gateway);
    verdict(scenarios::shutdown_with_a_stuck_client(
        at,
        Duration::from_secs(3),
        gateway.stop(),
    ))
    .await;
}

#[tokio::test]
async fn a_message_over_the_frame_size_goes_out_in_frames_of_at_most_32_kb() {
    let gateway = spawn().await;
    let mut raw = Raw::join(gateway.addr, "/").await.unwrap();
    let body: Vec<u8> = (0..70_000).map(|i| b"webchat "[i % 8]).collect();
    let status = gateway
        .http("POST", &format!("/@connections/{}", raw.id), &body)
        .await
        .status;
    assert_eq!(status, 200);
    let mut frames = Vec::new();
    loop {
        let (fin, opcode, payload) = raw.next_frame(PATIENCE).await.expect("a frame");
        frames.push((opcode, payload.len()));
        assert!(payload.len() <= 32 * 1024, "{frames:?}");
        if fin {
            break;
        }
    }
    let opcodes: Vec<u8> = frames.iter().map(|(opcode, _)| *opcode).collect();
    assert_eq!(
        opcodes,
        vec![0x1, 0x0, 0x0],
        "a text frame, then continuations"
    );
    assert_eq!(frames.iter().map(|(_, len)| len).sum::<usize>(), body.len());
}

#[tokio::test]
async fn a_client_that_vanishes_without_a_close_frame_is_not_a_protocol_error() {
    let gateway = spawn().await;
    let (mut watcher, _) = gateway.join("").await;
    let mut raw = Raw::join(gateway.addr, "/").await.unwrap();
    raw.stream.shutdown().await.unwrap(); // FIN, no close frame
    assert_eq!(
        raw.next(PATIENCE).await,
        Some(Arrival::End),
        "no close frame (a 1002, say) is sent to a client that left"
    );
    gateway.wait_until_gone(&raw.id).await;
    watcher.send_json(json!({"action":"list"})).await;
    let list = watcher.next_of_type("connections").await;
    assert!(!list.to_string().contains(&raw.id), "{list}");
}

#[tokio::test]
async fn a_request_body_sent_a_byte_at_a_time_times_out() {
    let gateway = spawn_with(Config {
        header_timeout: Duration::from_millis(500),
        ..crate::helpers::config()
    })
    .await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"POST /@connections/x HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nab")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_listen_address_open_to_the_network_is_warned_about() {
    use tokio::io::AsyncBufReadExt;
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_webchat-local"))
        .args(["--listen", "0.0.0.0:0", "--log-level", "error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a warning in time")
        .unwrap()
        .unwrap_or_default();
    assert!(
        first.starts_with("WARNING") && first.contains("management API"),
        "{first}"
    );
}
