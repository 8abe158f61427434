//! Broadcast latency with N idle clients held by a real `webchat-local` process.
//!
//!     cargo bench --bench broadcast -- [N ...] [--rounds R]
//!
//! Starts the release `webchat-local` on a free port, connects N websocket clients (each waits for
//! its welcome), then R times: one client broadcasts and the time from its send to each client's
//! receipt is recorded (after one uncounted warm-up round). Prints p50 / p99 / max delivery latency over all deliveries, the time to
//! reach the last client, and the server's resident memory. Clients and server share this
//! machine's cores, so the figures include the clients' own work.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server() -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_webchat-local"))
        // the fan-out is measured, not a client's budget
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--no-limits",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start webchat-local");
    let mut server = Server {
        child,
        url: String::new(),
    };
    let stdout = server.child.stdout.take().unwrap();
    let stdout = tokio::process::ChildStdout::from_std(stdout).unwrap();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(at) = line.find("ws://") {
            server.url = line[at..].split_whitespace().next().unwrap().to_owned();
            // keep draining stdout so the server never writes into a closed pipe
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return server;
        }
    }
    panic!("webchat-local printed no ws:// URL");
}

/// The server's resident set and its peak, in MiB, from /proc.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

type Stream = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;
type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// Connects one client and waits for its welcome.
async fn connect_one(url: &str, index: usize) -> (Sink, Stream) {
    let (mut ws, _) = loop {
        match connect_async(url).await {
            Ok(connected) => break connected,
            Err(error) => {
                eprintln!("connect {index}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    while let Some(Ok(message)) = ws.next().await {
        if matches!(&message, Message::Text(text) if text.contains("\"welcome\"")) {
            break;
        }
    }
    ws.split()
}

async fn run(clients: usize, rounds: usize) {
    let server = start_server().await;
    let (round_tx, round_rx) = watch::channel::<Option<Instant>>(None);
    let (delivered_tx, mut delivered) = mpsc::unbounded_channel::<Duration>();
    let connecting = Instant::now();
    // 256 handshakes in flight at a time.
    let connected: Vec<(Sink, Stream)> = futures_util::stream::iter(0..clients)
        .map(|index| connect_one(&server.url, index))
        .buffer_unordered(256)
        .collect()
        .await;
    let mut sender = None;
    for (sink, mut stream) in connected {
        sender.get_or_insert(sink);
        let round = round_rx.clone();
        let delivered = delivered_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(&message, Message::Text(text) if text.contains("\"broadcast\""))
                    && let Some(sent) = *round.borrow()
                {
                    let _ = delivered.send(sent.elapsed());
                }
            }
        });
    }
    let connected_in = connecting.elapsed();
    let (rss_idle, _) = memory_mib(server.child.id());
    let mut sender = sender.expect("at least one client");

    let mut latencies = Vec::with_capacity(clients * rounds);
    let mut last_delivery = Vec::with_capacity(rounds);
    let body = serde_json::json!({"action":"broadcast","message":"latency probe"}).to_string();
    // Round 0 warms up (first-touch allocations in every writer task) and is not counted.
    for round in 0..=rounds {
        let sent = Instant::now();
        round_tx.send_replace(Some(sent));
        sender.send(Message::text(body.clone())).await.unwrap();
        let mut slowest = Duration::ZERO;
        for _ in 0..clients {
            let latency = tokio::time::timeout(Duration::from_secs(60), delivered.recv())
                .await
                .expect("every client is reached within 60 s")
                .unwrap();
            slowest = slowest.max(latency);
            if round > 0 {
                latencies.push(latency);
            }
        }
        if round > 0 {
            last_delivery.push(slowest);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    last_delivery.sort();
    let (rss, peak) = memory_mib(server.child.id());
    println!(
        "clients={clients} rounds={rounds} connect_all={:.1} s | delivery p50={} p99={} max={} | last client reached: p50={} max={} | server RSS idle={rss_idle:.1} MiB now={rss:.1} MiB peak={peak:.1} MiB",
        connected_in.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
        ms(percentile(&last_delivery, 0.50)),
        ms(*last_delivery.last().unwrap()),
    );
}

fn main() {
    let mut sizes = Vec::new();
    let mut rounds = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|r| r.parse().ok())
                    .expect("--rounds N")
            }
            "--bench" => {} // cargo bench passes this
            other => sizes.push(
                other
                    .parse::<usize>()
                    .unwrap_or_else(|_| panic!("not a client count: {other}")),
            ),
        }
    }
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000];
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for clients in sizes {
        runtime.block_on(run(clients, rounds));
    }
}
