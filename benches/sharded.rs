//! The sharded fan-out at scale, simulated: a broadcast to 100 000 stored connections goes out as
//! shard jobs on a queue, and workers (tasks, as many as the stack's event source mapping lets
//! run at once) deliver them through the domain's real sharded path against the in-memory
//! `@connections`, answering after 20 ms and throttling (429) past a token bucket at the
//! account's rate. It prints the completion time against the throttle bound (connections ÷
//! rate), then runs again with one worker killed mid-shard (its job comes back after a visibility
//! timeout, as SQS redelivers it) and prints the deliveries lost and the duplicates.
//!
//!     cargo bench --bench sharded -- [--connections N] [--rate R] [--budget B] [--workers W]
//!                                    [--delay-ms D] [--shard-size S] [--room]
//!
//! With `--room` the N connections are the members of one room (with N/10 more connections
//! outside it) and the message is said in the room: one job per membership shard, each read with
//! the room store's paginated queries. It prints the deliveries that leaked outside the room too.
//!
//! Defaults: 100 000 connections, a bucket of 10 000 a second (burst 5 000, API Gateway's account
//! default), a budget equal to the rate, 8 workers each paced to budget ÷ workers, 20 ms a call,
//! segments of the functions' default size (1 000).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use webchat::adapters::memory::{
    MemoryConnectionApi, MemoryEventBus, MemoryQueue, MemoryRoomStore, MemoryStore, Peer,
    QueueSettings, settle, sqs_event,
};
use webchat::domain::{Chat, Deadline, Settings};
use webchat::lambda;
use webchat::ports::{ConnectionInfo, ConnectionRecord, Member, Outcome, RoomStore, SystemClock};
use webchat::protocol::MAX_PAYLOAD_BYTES;

/// A shard job's time limit, and the queue's visibility timeout.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

struct Args {
    connections: usize,
    rate: f64,
    budget: f64,
    workers: usize,
    delay: Duration,
    shard_size: u32,
    room: bool,
}

fn args() -> Args {
    let mut parsed = Args {
        connections: 100_000,
        rate: 10_000.0,
        budget: 0.0,
        workers: 8,
        delay: Duration::from_millis(20),
        shard_size: Settings::default().shard_size,
        room: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--connections" => parsed.connections = value() as usize,
            "--rate" => parsed.rate = value(),
            "--budget" => parsed.budget = value(),
            "--workers" => parsed.workers = value() as usize,
            "--delay-ms" => parsed.delay = Duration::from_millis(value() as u64),
            "--shard-size" => parsed.shard_size = value() as u32,
            "--room" => parsed.room = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    if parsed.budget <= 0.0 {
        parsed.budget = parsed.rate;
    }
    parsed
}

/// A connection that counts what it is delivered, behind `@connections` in memory with a fixed
/// latency and API Gateway's account throttle.
#[derive(Default)]
struct Counter(AtomicU32);

impl Peer for Counter {
    fn deliver(&self, _data: Bytes) -> Outcome<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Outcome::Done(())
    }

    fn info(&self) -> Option<ConnectionInfo> {
        let at = chrono::DateTime::UNIX_EPOCH;
        Some(ConnectionInfo {
            connected_at: at,
            last_active_at: at,
            source_ip: None,
            user_agent: None,
        })
    }

    fn close(&self, _code: u16, _reason: &'static str) -> Outcome<()> {
        Outcome::Done(())
    }
}

type SimApi = MemoryConnectionApi<Counter>;

type SimChat = Chat<MemoryStore, Arc<SimApi>, MemoryEventBus, MemoryRoomStore>;

struct Run {
    took: Duration,
    lost: usize,
    duplicates: usize,
    throttled: usize,
    jobs: usize,
    /// Deliveries to connections outside the room (a room broadcast only).
    leaked: usize,
}

/// One broadcast to everyone, delivered by `workers` through the shard queue (SQS in memory);
/// with `kill`, the worker of the first job is killed after `kill`: the job comes back when its
/// visibility timeout is over, as SQS gives it back.
async fn run(args: &Args, kill: Option<Duration>) -> Run {
    let api = SimApi::serving(MAX_PAYLOAD_BYTES).with_throttle(args.rate, 5_000.0);
    api.set_delay(args.delay);
    let api = Arc::new(api);
    let store = MemoryStore::new().with_page_size(1_000);
    let rooms = MemoryRoomStore::new(1_000);
    let connected = Utc::now() - chrono::Duration::seconds(60);
    for i in 0..args.connections {
        let id = format!("c{i:07}=");
        api.insert(&id, Arc::new(Counter::default()));
        let record = ConnectionRecord::new(id, None, connected);
        if args.room {
            let member = Member {
                connection_id: record.connection_id.clone(),
                connected_at: record.connected_at.clone(),
                user: None,
                name: None,
                expires_at: record.expires_at,
            };
            rooms.join(ROOM, member, 20).await.expect("join");
        }
        store.insert(record);
    }
    let outsiders: Vec<String> = (0..if args.room { args.connections / 10 } else { 0 })
        .map(|i| format!("o{i:07}="))
        .collect();
    for id in &outsiders {
        api.insert(id, Arc::new(Counter::default()));
        store.insert(ConnectionRecord::new(id.clone(), None, connected));
    }
    // A worker's timeout, and the queue's visibility timeout no shorter (SQS's rule for an event
    // source mapping: shorter, a job still running is handed to a second worker). A job of 1 000
    // connections takes 0.8 s at the budget.
    let queue = Arc::new(MemoryQueue::new(QueueSettings {
        workers: args.workers,
        visibility_timeout: WORKER_TIMEOUT,
        max_receives: 3,
    }));
    let chat: Arc<SimChat> = Arc::new(Chat {
        store,
        rooms,
        api: api.clone(),
        bus: MemoryEventBus::recording(),
        clock: Arc::new(SystemClock),
        settings: Settings {
            post_rate: Some((args.budget / args.workers as f64).floor().max(1.0) as u32),
            shard_size: args.shard_size,
            // the fan-out's own ceiling is measured, not a client's budget
            limits: webchat::domain::limits::Limits::off(),
            ..Settings::default()
        },
        shards: Some(queue.clone()),
        metrics: std::sync::Arc::new(webchat::ports::NoMetrics),
        limits: std::sync::Arc::new(webchat::adapters::memory::MemoryLimits::default()),
    });
    let started = Instant::now();
    let body = if args.room {
        format!(r#"{{"action":"broadcast","room":"{ROOM}","message":"to the room"}}"#)
    } else {
        r#"{"action":"broadcast","message":"to a hundred thousand"}"#.to_owned()
    };
    chat.broadcast("c0000000=", &body, Deadline::NONE)
        .await
        .expect("broadcast");
    let killed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.workers {
        let (chat, queue, killed) = (chat.clone(), queue.clone(), killed.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let message = queue.next().await;
                let event = sqs_event(std::slice::from_ref(&message));
                let work = tokio::spawn({
                    let chat = chat.clone();
                    async move {
                        let deadline = Deadline::after(WORKER_TIMEOUT);
                        lambda::shards(chat.as_ref(), event, deadline).await
                    }
                });
                let abort = work.abort_handle();
                let first_kill = kill.filter(|_| killed.fetch_add(1, Ordering::SeqCst) == 0);
                let Some(after) = first_kill else {
                    settle(&queue, &message, &work.await);
                    continue;
                };
                match tokio::time::timeout(after, work).await {
                    Ok(answer) => settle(&queue, &message, &answer),
                    // Killed: neither deleted nor failed; the queue gives it back when its
                    // visibility timeout is over.
                    Err(_) => abort.abort(),
                }
            }
        }));
    }
    queue.settled().await;
    let took = started.elapsed();
    for worker in workers {
        worker.abort();
    }
    let peers = api.peers();
    let count = |counter: &Counter| counter.0.load(Ordering::Relaxed);
    let counts: Vec<u32> = peers
        .iter()
        .filter(|(id, _)| id.starts_with('c'))
        .map(|(_, counter)| count(counter))
        .collect();
    let leaked = peers
        .iter()
        .filter(|(id, _)| id.starts_with('o'))
        .map(|(_, counter)| count(counter) as usize)
        .sum();
    Run {
        took,
        lost: counts.iter().filter(|&&n| n == 0).count(),
        duplicates: counts.iter().map(|&n| n.saturating_sub(1) as usize).sum(),
        throttled: api.throttled(),
        jobs: queue.sent(),
        leaked,
    }
}

/// The room of a `--room` run.
const ROOM: &str = "big";

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bound = args.connections as f64 / args.rate;
    let audience = if args.room {
        format!(
            "a room of {} members ({} connections outside it; one job per membership shard)",
            args.connections,
            args.connections / 10
        )
    } else {
        format!("{} connections", args.connections)
    };
    println!(
        "sharded broadcast to {audience}: @connections at {:?} a call, throttled at {} a second (burst 5000); budget {} a second over {} workers; segments of {}",
        args.delay, args.rate, args.budget, args.workers, args.shard_size
    );
    println!("  throttle bound (connections / rate):        {bound:>7.2} s");
    let report = |label: &str, run: Run| {
        println!(
            "  {label}: {:>7.2} s ({:+.1}% of the bound), {} jobs, lost {}, duplicates {}, leaked {}, 429s {}",
            run.took.as_secs_f64(),
            (run.took.as_secs_f64() / bound - 1.0) * 100.0,
            run.jobs,
            run.lost,
            run.duplicates,
            run.leaked,
            run.throttled
        );
    };
    report("all workers", runtime.block_on(run(&args, None)));
    report(
        "one worker killed 0.3 s into its shard (job back 2 s after its receive)",
        runtime.block_on(run(&args, Some(Duration::from_millis(300)))),
    );
}
