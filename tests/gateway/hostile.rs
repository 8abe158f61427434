//! Hostile clients against the local gateway: RFC 6455 violations, broken upgrades, browser pages
//! on the management API, ping floods, half-sent requests, too many connections, a shutdown with
//! stuck clients, and messages over the frame size. Raw TCP where a websocket library would not
//! misbehave on purpose.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use webchat::local::Config;

use crate::helpers::{TestGateway, spawn, spawn_with};
use crate::support::PATIENCE;

/// A websocket opened by hand: the handshake, then raw frames.
async fn raw_websocket(gateway: &TestGateway, query: &str) -> TcpStream {
    let stream = TcpStream::connect(gateway.addr).await.unwrap();
    handshake(stream, gateway, query).await
}

async fn handshake(mut stream: TcpStream, gateway: &TestGateway, query: &str) -> TcpStream {
    let request = format!(
        "GET /{query} HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        gateway.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the accept key RFC 6455 gives for this nonce: {head}"
    );
    stream
}

/// A client frame: FIN, the given first-byte bits and opcode, masked unless `masked` is false.
fn client_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![first, payload.len() as u8 | if masked { 0x80 } else { 0 }];
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend(mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        frame.extend(payload);
    }
    frame
}

/// One server frame: (FIN, opcode, payload); `None` when the connection ends.
async fn server_frame(stream: &mut TcpStream) -> Option<(bool, u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
        .await
        .expect("a frame in time")
        .ok()?;
    let length = match head[1] & 0x7f {
        126 => {
            let mut bytes = [0u8; 2];
            stream.read_exact(&mut bytes).await.ok()?;
            u64::from(u16::from_be_bytes(bytes))
        }
        127 => {
            let mut bytes = [0u8; 8];
            stream.read_exact(&mut bytes).await.ok()?;
            u64::from_be_bytes(bytes)
        }
        short => u64::from(short),
    };
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let mut payload = vec![0u8; length as usize];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x80 != 0, head[0] & 0x0f, payload))
}

/// Reads the welcome, the first frame; the connection's id.
async fn welcome_id(stream: &mut TcpStream) -> String {
    let (_, _, welcome) = server_frame(stream).await.unwrap();
    let welcome: serde_json::Value = serde_json::from_slice(&welcome).unwrap();
    assert_eq!(welcome["type"], "welcome");
    welcome["connectionId"].as_str().unwrap().to_owned()
}

/// Reads frames until a close frame; its status code (`None` if it had none or never came).
async fn close_code(stream: &mut TcpStream) -> Option<u16> {
    while let Some((_, opcode, payload)) = server_frame(stream).await {
        if opcode == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
    None
}

#[tokio::test]
async fn rfc_6455_violations_are_closed_with_their_status_codes() {
    let gateway = spawn().await;
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "a text frame that is not UTF-8",
            client_frame(0x81, b"\xff\xfe caf\xc3", true),
            1007,
        ),
        ("an unmasked frame", client_frame(0x81, b"hi", false), 1002),
        (
            "RSV1 set",
            client_frame(0x80 | 0x40 | 0x1, b"hi", true),
            1002,
        ),
        ("reserved opcode 0x3", client_frame(0x83, b"hi", true), 1002),
    ];
    for (what, frame, expected) in cases {
        let mut stream = raw_websocket(&gateway, "").await;
        stream.write_all(&frame).await.unwrap();
        assert_eq!(close_code(&mut stream).await, Some(expected), "{what}");
    }
    // and the gateway goes on serving
    gateway.join("").await;
}

#[tokio::test]
async fn a_broken_upgrade_gets_400_or_426_not_the_chat_page() {
    let gateway = spawn().await;
    let upgrade = ["upgrade: websocket", "connection: Upgrade"];
    let key = "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==";
    for (what, more, status) in [
        ("no key", vec!["sec-websocket-version: 13"], 400),
        (
            "a key that is not 16 bytes",
            vec!["sec-websocket-version: 13", "sec-websocket-key: c2hvcnQ="],
            400,
        ),
        ("version 8", vec!["sec-websocket-version: 8", key], 426),
    ] {
        let headers = [&upgrade[..], &more].concat();
        let answer = gateway.http_with("GET", "/", &headers, b"").await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert!(!answer.body.contains("<html"), "{what}: not the chat page");
        if status == 426 {
            assert_eq!(answer.header("sec-websocket-version"), Some("13"));
        }
    }
}

#[tokio::test]
async fn a_repeated_query_key_gives_its_last_value_as_api_gateway_does() {
    let gateway = spawn().await;
    let (mut client, id) = gateway.join("?name=a&name=bob").await;
    client.send_json(json!({"action":"list"})).await;
    let list = client.next_of_type("connections").await;
    let me = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["connectionId"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(me["name"], "bob");
}

#[tokio::test]
async fn the_management_api_refuses_requests_from_web_pages() {
    let gateway = spawn().await;
    let (mut client, id) = gateway.join("").await;
    let forged = br#"{"type":"broadcast","name":"admin","message":"forged"}"#;
    for header in ["origin: http://evil.example", "sec-fetch-site: cross-site"] {
        let headers = [header, "content-type: text/plain"];
        let path = format!("/@connections/{id}");
        let answer = gateway.http_with("POST", &path, &headers, forged).await;
        assert_eq!(answer.status, 403, "{header}: {}", answer.body);
        assert_eq!(
            answer.header("x-amzn-errortype"),
            Some("ForbiddenException")
        );
    }
    client.expect_silence(Duration::from_millis(300)).await;
    // the SDK's requests carry no Origin, and are served
    assert_eq!(
        gateway
            .http("POST", &format!("/@connections/{id}"), b"hello")
            .await
            .status,
        200
    );
    assert_eq!(client.next_text().await, "hello");
}

/// A socket that barely reads: a 4 KiB receive buffer, and nobody reading it.
async fn deaf_socket(gateway: &TestGateway) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(gateway.addr).await.unwrap()
}

#[tokio::test]
async fn a_client_that_floods_pings_and_never_reads_is_dropped() {
    let gateway = spawn_with(Config {
        max_outbound_bytes: 64 * 1024,
        ..Config::default()
    })
    .await;
    let stream = deaf_socket(&gateway).await;
    let mut stream = handshake(stream, &gateway, "").await;
    let id = welcome_id(&mut stream).await;
    // pings until the server hangs up (the write fails) or far past any cap
    let ping = client_frame(0x89, &[b'p'; 125], true);
    let mut sent = 0usize;
    let started = Instant::now();
    while sent < 64 * 1024 * 1024 && started.elapsed() < PATIENCE {
        match tokio::time::timeout(PATIENCE, stream.write_all(&ping)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => panic!("the server stopped reading pings but never dropped the client"),
        }
        sent += ping.len();
    }
    gateway.wait_until_gone(&id).await;
    assert!(
        sent < 32 * 1024 * 1024,
        "dropped after {sent} bytes of pings, not before the cap"
    );
}

/// `count` connections that send part of a request's headers and hold it.
async fn half_sent(gateway: &TestGateway, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    held
}

/// Whether the server closed the stream within `wait` (a read sees the end or a reset).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 512];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 answer, say: read on to the end
        }
    }
}

#[tokio::test]
async fn half_sent_requests_time_out_and_cannot_lock_clients_out() {
    let gateway = spawn_with(Config {
        header_timeout: Duration::from_millis(500),
        max_connections: Some(4),
        ..Config::default()
    })
    .await;
    let mut held = half_sent(&gateway, 6).await;
    // at the bound, each newcomer took the place of the oldest half-sent request
    for stream in &mut held[..2] {
        assert!(closed_within(stream, Duration::from_millis(300)).await);
    }
    // a real client still gets in, in place of another
    let (_client, _) = gateway.join("").await;
    // and the header timeout closes the rest
    for stream in &mut held[2..] {
        assert!(closed_within(stream, Duration::from_secs(3)).await);
    }
}

#[tokio::test]
async fn shutdown_ends_within_its_grace_whatever_the_clients_do() {
    let gateway = spawn_with(Config {
        shutdown_grace: Duration::from_millis(500),
        ..Config::default()
    })
    .await;
    // a client that reads nothing, with 700 KB the server is trying to write to it
    let stream = deaf_socket(&gateway).await;
    let mut stuck = handshake(stream, &gateway, "").await;
    let id = welcome_id(&mut stuck).await;
    for _ in 0..7 {
        let status = gateway
            .http("POST", &format!("/@connections/{id}"), &[b'x'; 100_000])
            .await
            .status;
        assert_eq!(status, 200);
    }
    let _held = half_sent(&gateway, 3).await;
    let started = Instant::now();
    gateway.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_message_over_the_frame_size_goes_out_in_frames_of_at_most_32_kb() {
    let gateway = spawn().await;
    let mut stream = raw_websocket(&gateway, "").await;
    let id = welcome_id(&mut stream).await;
    let body: Vec<u8> = (0..70_000).map(|i| b"webchat "[i % 8]).collect();
    let status = gateway
        .http("POST", &format!("/@connections/{id}"), &body)
        .await
        .status;
    assert_eq!(status, 200);
    let mut frames = Vec::new();
    loop {
        let (fin, opcode, payload) = server_frame(&mut stream).await.unwrap();
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
    let mut stream = raw_websocket(&gateway, "").await;
    let id = welcome_id(&mut stream).await;
    stream.shutdown().await.unwrap(); // FIN, no close frame
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(
        !rest.starts_with(&[0x88]),
        "no close frame (a 1002, say) is sent to a client that left: {rest:?}"
    );
    gateway.wait_until_gone(&id).await;
    watcher.send_json(json!({"action":"list"})).await;
    let list = watcher.next_of_type("connections").await;
    assert!(!list.to_string().contains(&id), "{list}");
}

#[tokio::test]
async fn a_request_body_sent_a_byte_at_a_time_times_out() {
    let gateway = spawn_with(Config {
        header_timeout: Duration::from_millis(500),
        ..Config::default()
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
