//! Fan-out: a broadcast to 10 000 stored connections through the real management-API adapter
//! (aws-sdk-apigatewaymanagement over HTTP) against a fake `@connections` endpoint that answers
//! every call after 20 ms, compared in the same run with a sequential loop over the same
//! connections (the well-known samples' approach).
//!
//!     cargo bench --all-features --bench fanout -- [--connections N] [--delay-ms D] [--concurrency C ...] [--sequential N] [--telemetry]
//!
//! `--telemetry` installs the functions' telemetry (JSON logs at `info` to stderr, span export
//! off), so that the spans and log work of every post are counted as in Lambda. Each round prints
//! the process's CPU time per post (user + system, `getrusage(RUSAGE_SELF)`): the fake endpoint
//! runs in a child process (this executable, re-run with `--serve-fake`), so that its work is not
//! counted.
//!
//! The store is the in-memory adapter (paginated like DynamoDB), so the figures measure the
//! fan-out, not a store emulator. `--sequential N` times the loop over the first N connections
//! and extrapolates (default: all of them, which takes N x delay).

#[allow(dead_code)]
#[path = "../tests/lambda/fake_aws.rs"]
mod fake_aws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use webchat::adapters::management::ManagementApi;
use webchat::adapters::memory::{MemoryEventBus, MemoryRoomStore, MemoryStore};
use webchat::config::FunctionConfig;
use webchat::domain::{Chat, Deadline, Settings};
use webchat::ports::{ConnectionApi, ConnectionRecord, SystemClock};

struct Args {
    connections: usize,
    delay: Duration,
    concurrency: Vec<usize>,
    sequential: Option<usize>,
    telemetry: bool,
}

fn args() -> Args {
    let mut parsed = Args {
        connections: 10_000,
        delay: Duration::from_millis(20),
        concurrency: Vec::new(),
        sequential: None,
        telemetry: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--connections" => parsed.connections = value(),
            "--delay-ms" => parsed.delay = Duration::from_millis(value() as u64),
            "--concurrency" => parsed.concurrency.push(value()),
            "--sequential" => parsed.sequential = Some(value()),
            "--telemetry" => parsed.telemetry = true,
            "--serve-fake" => serve_fake(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    if parsed.concurrency.is_empty() {
        parsed.concurrency = vec![256, 512, 1024];
    }
    parsed
}

async fn management_api(endpoint: &str) -> ManagementApi {
    let credentials = aws_credential_types::Credentials::new(
        "bench",
        fake_aws::SECRET_ACCESS_KEY,
        None,
        None,
        "bench",
    );
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .load()
        .await;
    let config = FunctionConfig::from_lookup(|name| match name {
        "CONNECTIONS_TABLE" => Some("bench".into()),
        "ROOMS_TABLE" => Some("bench-rooms".into()),
        "EVENT_BUS_NAME" => Some("bench".into()),
        "WEBSOCKET_API_ENDPOINT" => Some(endpoint.into()),
        _ => None,
    })
    .unwrap();
    webchat::lambda::runtime::build_with(sdk, &config).api
}

/// The child process: a fake `@connections` endpoint. Reads its delay in milliseconds from the
/// first line of stdin, prints its endpoint, then answers every further line with the number of
/// posts delivered so far.
fn serve_fake() -> ! {
    use std::io::BufRead;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = runtime.block_on(fake_aws::FakeAws::start());
    let mut lines = std::io::stdin().lock().lines();
    let delay = lines.next().unwrap().unwrap().parse().unwrap();
    fake.set_delay(Duration::from_millis(delay));
    println!("{}", fake.management_endpoint());
    for _ in lines {
        println!("{}", fake.delivered().len());
    }
    std::process::exit(0)
}

/// The fake `@connections` endpoint in its child process.
struct Fake {
    endpoint: String,
    stdin: std::process::ChildStdin,
    stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    child: std::process::Child,
}

impl Fake {
    fn start(delay: Duration) -> Fake {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve-fake")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the fake endpoint");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", delay.as_millis()).unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let endpoint = stdout.next().unwrap().unwrap();
        Fake {
            endpoint,
            stdin,
            stdout,
            child,
        }
    }

    /// Posts the fake has answered so far.
    fn delivered(&mut self) -> usize {
        use std::io::Write;
        writeln!(self.stdin, "count").unwrap();
        self.stdout.next().unwrap().unwrap().parse().unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of this process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn main() {
    let args = args();
    let _telemetry = args.telemetry.then(|| {
        webchat::telemetry::init(webchat::telemetry::Options {
            service_name: "fanout-bench".into(),
            log_filter: "info".into(),
            log_format: webchat::telemetry::LogFormat::Json,
            export: webchat::telemetry::Export::Disabled,
        })
    });
    // One thread, as a Lambda function at 128-1769 MB has at most one vCPU.
    let fake = Fake::start(args.delay);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args, fake));
}

async fn run(args: Args, mut fake: Fake) {
    let store = MemoryStore::new();
    let now = Utc::now();
    for i in 0..args.connections {
        store.insert(ConnectionRecord::new(format!("conn-{i:06}="), None, now));
    }
    let ids: Vec<String> = store
        .records()
        .into_iter()
        .map(|r| r.connection_id)
        .collect();
    let api = management_api(&fake.endpoint).await;
    let mut chat = Chat {
        store,
        rooms: MemoryRoomStore::default(),
        api,
        bus: MemoryEventBus::recording(),
        clock: Arc::new(SystemClock),
        settings: Settings {
            // the fan-out is measured, not a client's budget
            limits: webchat::domain::limits::Limits::off(),
            ..Settings::default()
        },
        shards: None,
        metrics: Arc::new(webchat::ports::NoMetrics),
        limits: Arc::new(webchat::adapters::memory::MemoryLimits::default()),
    };
    let body = r#"{"action":"broadcast","message":"fan-out benchmark"}"#;

    println!(
        "broadcast to {} connections, @connections answering after {:?}",
        args.connections, args.delay
    );
    // One uncounted round opens the HTTP connections, as the first broadcast of a warm function has.
    chat.settings.posts_in_flight = args.concurrency[0];
    chat.broadcast(&ids[0], body, Deadline::NONE)
        .await
        .expect("warm-up broadcast");
    let mut best = Duration::MAX;
    for concurrency in &args.concurrency {
        chat.settings.posts_in_flight = *concurrency;
        let before = fake.delivered();
        let started = Instant::now();
        let cpu = process_cpu();
        chat.broadcast(&ids[0], body, Deadline::NONE)
            .await
            .expect("broadcast");
        let cpu = process_cpu() - cpu;
        let took = started.elapsed();
        let delivered = fake.delivered() - before;
        assert_eq!(delivered, args.connections, "every connection is reached");
        println!(
            "  ours, {concurrency:>5} in flight: {:>8.3} s ({delivered} delivered, {:.1} µs CPU a post)",
            took.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / delivered as f64
        );
        best = best.min(took);
    }

    let sample = args
        .sequential
        .unwrap_or(args.connections)
        .min(args.connections);
    let data = Bytes::from_static(b"{\"type\":\"broadcast\"}");
    let started = Instant::now();
    for id in &ids[..sample] {
        chat.api.post(id, data.clone()).await.expect("post");
    }
    let sequential = started
        .elapsed()
        .mul_f64(args.connections as f64 / sample as f64);
    let note = if sample < args.connections {
        format!(" (extrapolated from {sample})")
    } else {
        String::new()
    };
    println!(
        "  sequential loop:        {:>8.3} s{note}",
        sequential.as_secs_f64()
    );
    println!(
        "  ratio (sequential / best of ours): {:.0}x",
        sequential.as_secs_f64() / best.as_secs_f64()
    );
}
