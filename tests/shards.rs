//! Sharded broadcasts through the domain and the Lambda glue with the in-memory adapters, the
//! shard queue being SQS in memory (visibility, receive counts, a dead-letter queue): the
//! inline/sharded switch, segments that cover every connection once (at least one per worker),
//! jobs that hand the rest of their segment on (at their post limit, their deadline, or a Scan
//! failing midway) without losing anyone, failed jobs reported for the queue to retry and told to
//! the sender on their last attempt, and pacing to a rate, retries included.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use webchat::adapters::memory::{
    ManualClock, MemoryConnectionApi, MemoryEventBus, MemoryQueue, MemoryRoomStore, MemoryStore,
    QueueSettings, Received, segment_of, settle, sqs_event,
};
use webchat::domain::{Backoff, Chat, Deadline, Rest, Settings};
use webchat::lambda;
use webchat::ports::{ApiError, ConnectionRecord, Segment, ShardJob};

type TestChat = Chat<MemoryStore, MemoryConnectionApi, MemoryEventBus, MemoryRoomStore>;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A chat with `connections` open connections, Scan pages of `page` records, and a queue whose
/// failed messages come back at once (no visibility timeout), three receives at most.
fn chat(connections: usize, page: usize, settings: Settings) -> (TestChat, Arc<MemoryQueue>) {
    let queue = Arc::new(MemoryQueue::new(QueueSettings {
        workers: 1,
        visibility_timeout: Duration::ZERO,
        max_receives: 3,
    }));
    let chat = Chat {
        store: MemoryStore::new().with_page_size(page),
        rooms: MemoryRoomStore::new(page),
        api: MemoryConnectionApi::new(),
        bus: MemoryEventBus::recording(),
        clock: Arc::new(ManualClock::at(start())),
        settings: Settings {
            // not about limits (tests/limits.rs is)
            limits: webchat::domain::limits::Limits::off(),
            ..settings
        },
        shards: Some(queue.clone()),
        metrics: std::sync::Arc::new(webchat::ports::NoMetrics),
        limits: std::sync::Arc::new(webchat::adapters::memory::MemoryLimits::default()),
    };
    for i in 0..connections {
        let id = format!("c{i:05}=");
        chat.store.insert(ConnectionRecord::new(
            id.clone(),
            None,
            start() - chrono::Duration::seconds(60),
        ));
        chat.api.open(&id);
    }
    (chat, queue)
}

/// How many times each connection got a broadcast.
fn received(chat: &TestChat) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (id, frame) in chat.api.posts() {
        if frame.contains("\"broadcast\"") {
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}

/// Hands one message to the worker as the event source mapping does, and settles it by the
/// answer; returns the message.
async fn work_one(chat: &TestChat, queue: &MemoryQueue) -> Option<Received> {
    let message = queue.receive()?;
    let event = sqs_event(std::slice::from_ref(&message));
    let answer = lambda::shards(chat, event, Deadline::NONE).await;
    settle(queue, &message, &Ok::<_, ()>(answer));
    Some(message)
}

/// Runs every job on the queue (and the jobs they hand on) to the end; returns how many.
async fn drain(chat: &TestChat, queue: &MemoryQueue) -> usize {
    let mut jobs = 0;
    while work_one(chat, queue).await.is_some() {
        jobs += 1;
    }
    jobs
}

/// The jobs waiting on the queue, without receiving them.
fn waiting(queue: &MemoryQueue) -> Vec<ShardJob> {
    let bodies = queue.peek();
    bodies
        .iter()
        .map(|body| serde_json::from_str(body).expect("a job"))
        .collect()
}

const BODY: &str = r#"{"action":"broadcast","message":"hello everyone"}"#;

/// A broadcast's first job for `segment`, sent by `c00000=`.
fn job(segment: Segment) -> ShardJob {
    ShardJob {
        broadcast: "b".into(),
        room: None,
        sender: "c00000=".into(),
        frame: r#"{"type":"broadcast","message":"x"}"#.into(),
        segment,
        cursor: None,
        part: 0,
    }
}

/// What the sender of a broadcast was told: its frames other than broadcasts.
fn told(chat: &TestChat, sender: &str) -> Vec<String> {
    chat.api
        .posts_to(sender)
        .into_iter()
        .filter(|frame| !frame.contains("\"broadcast\""))
        .collect()
}

#[tokio::test]
async fn an_audience_that_fits_in_one_page_is_delivered_inline_without_the_queue() {
    let (chat, queue) = chat(40, 50, Settings::default());
    chat.broadcast("c00000=", BODY, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(queue.sent(), 0);
    let counts = received(&chat);
    assert_eq!(counts.len(), 40);
    assert!(counts.values().all(|&n| n == 1));
}

#[tokio::test]
async fn a_larger_audience_is_sharded_into_segments_that_reach_everyone_once() {
    let settings = Settings {
        shard_size: 100,
        ..Settings::default()
    };
    let (chat, queue) = chat(1_000, 50, settings);
    chat.broadcast("c00000=", BODY, Deadline::NONE)
        .await
        .unwrap();
    // Nothing delivered by broadcast itself; one job per 100 connections.
    assert!(received(&chat).is_empty());
    assert_eq!(queue.len(), 10);
    let jobs = waiting(&queue);
    let segments: Vec<Segment> = jobs.iter().map(|job| job.segment).collect();
    assert_eq!(
        segments,
        (0..10)
            .map(|index| Segment { index, total: 10 })
            .collect::<Vec<_>>()
    );
    assert!(jobs.iter().all(|job| job.cursor.is_none() && job.part == 0));
    drain(&chat, &queue).await;
    let counts = received(&chat);
    assert_eq!(counts.len(), 1_000, "every connection reached");
    assert!(counts.values().all(|&n| n == 1), "and only once");
}

#[tokio::test]
async fn a_job_at_its_post_limit_hands_the_rest_of_its_segment_on() {
    let settings = Settings {
        shard_size: 1_000,
        shard_posts: 30,
        posts_in_flight: 7,
        ..Settings::default()
    };
    let (chat, queue) = chat(300, 20, settings);
    chat.broadcast("c00000=", BODY, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(queue.len(), 2, "at least two segments");
    let jobs = drain(&chat, &queue).await;
    // 300 connections, 30 a job: at least 10 jobs, continuations included.
    assert!(jobs >= 10, "{jobs} jobs");
    let counts = received(&chat);
    assert_eq!(counts.len(), 300);
    assert!(
        counts.values().all(|&n| n == 1),
        "a post limit delivers nothing twice"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_cut_off_by_its_deadline_continues_after_the_last_finished_post() {
    let settings = Settings {
        posts_in_flight: 8,
        deadline_reserve: Duration::from_millis(100),
        stop_margin: Duration::from_millis(100),
        ..Settings::default()
    };
    let (chat, queue) = chat(200, 1_000, settings);
    chat.api.set_delay(Duration::from_millis(20));
    let job = job(Segment { index: 0, total: 1 });
    // 0.5 s: posts start for about 0.35 s, 8 at a time, 20 ms each: at most 400 a second, so
    // about 140 of the 200 are reached before the job stops.
    let report = chat
        .shard(job, Deadline::after(Duration::from_millis(500)))
        .await
        .unwrap();
    let Rest::After { cursor: after } = report.rest.clone() else {
        panic!("cut off before the end: {report:?}");
    };
    assert!(report.deliveries.delivered > 0 && report.deliveries.delivered < 200);
    let next = waiting(&queue).pop().expect("the rest was handed on");
    assert_eq!(next.cursor, after);
    assert_eq!(next.part, 1);
    drain(&chat, &queue).await;
    let counts = received(&chat);
    assert_eq!(counts.len(), 200, "no one lost");
    let twice = counts.values().filter(|&&n| n > 1).count();
    assert!(
        twice <= 8,
        "at most the posts in flight are repeated: {twice}"
    );
}

#[tokio::test]
async fn a_failed_job_is_reported_for_the_queue_to_retry_and_the_retry_loses_no_one() {
    let settings = Settings {
        shard_size: 50,
        ..Settings::default()
    };
    let (chat, queue) = chat(100, 10, settings);
    chat.broadcast("c00000=", BODY, Deadline::NONE)
        .await
        .unwrap();
    let sent = queue.sent();
    // Its first Scan fails (after its retries): nothing done, so the job fails as a whole and
    // the queue gives it back.
    chat.store.fail_scans_after(0);
    let failed = work_one(&chat, &queue).await.unwrap();
    assert_eq!(failed.receives, 1);
    assert_eq!(queue.len(), 2, "both jobs still on the queue");
    // The queue delivers it again, last: now it goes through.
    chat.store.fail_scans_after(usize::MAX);
    let other = work_one(&chat, &queue).await.unwrap();
    let again = work_one(&chat, &queue).await.unwrap();
    assert_ne!(other.id, failed.id);
    assert_eq!((again.id.as_str(), again.receives), (failed.id.as_str(), 2));
    assert_eq!(queue.sent(), sent, "the failed job handed nothing on");
    drain(&chat, &queue).await;
    let counts = received(&chat);
    assert_eq!(counts.len(), 100, "no one lost");
    assert!(told(&chat, "c00000=").is_empty(), "no one missed it");
}

#[tokio::test]
async fn a_scan_that_fails_midway_hands_the_rest_on_and_the_job_succeeds() {
    let settings = Settings {
        posts_in_flight: 4,
        ..Settings::default()
    };
    let (chat, queue) = chat(100, 10, settings);
    let job = job(Segment { index: 0, total: 1 });
    // Two pages read, then every Scan fails: the twenty delivered are not delivered again by a
    // retry of the whole job; the rest goes on from where delivery stopped.
    chat.store.fail_scans_after(2);
    queue.send(serde_json::to_string(&job).unwrap());
    let served = work_one(&chat, &queue).await.unwrap();
    let next = waiting(&queue).pop().expect("the rest was handed on");
    assert_eq!(
        queue.len(),
        1,
        "the job succeeded and was deleted: {served:?}"
    );
    assert_eq!(next.part, 1);
    assert_eq!(next.cursor.as_deref(), Some("c00019="));
    chat.store.fail_scans_after(usize::MAX);
    drain(&chat, &queue).await;
    let counts = received(&chat);
    assert_eq!(counts.len(), 100, "no one lost");
    assert!(counts.values().all(|&n| n == 1), "no one twice");
    assert!(told(&chat, "c00000=").is_empty(), "no one missed it");
}

#[tokio::test]
async fn a_job_that_fails_its_last_attempt_is_told_to_its_sender() {
    let settings = Settings {
        shard_attempts: 3,
        ..Settings::default()
    };
    let (chat, queue) = chat(30, 10, settings);
    let job = job(Segment { index: 2, total: 4 });
    let body = serde_json::to_string(&job).unwrap();
    queue.send(body.clone());
    chat.store.fail_scans_after(0);
    for receives in 1..=2 {
        let message = work_one(&chat, &queue).await.unwrap();
        assert_eq!(message.receives, receives);
        assert!(told(&chat, "c00000=").is_empty(), "the queue retries it");
    }
    // The third receive fails too: the queue moves it to the dead-letter queue, and the sender
    // hears.
    work_one(&chat, &queue).await.unwrap();
    let told = told(&chat, "c00000=");
    assert_eq!(told.len(), 1, "{told:?}");
    let frame: serde_json::Value = serde_json::from_str(&told[0]).unwrap();
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["code"], "delivery_incomplete");
    let message = frame["message"].as_str().unwrap();
    assert!(message.contains("segment 3 of 4"), "{message}");
    assert!(message.contains("after 3 attempts"), "{message}");
    assert!(queue.is_empty());
    assert_eq!(queue.dead_letters(), vec![body]);
}

#[tokio::test]
async fn a_sharded_broadcast_keeps_every_worker_busy_however_small_the_estimate() {
    // DynamoDB's ItemCount is refreshed about every six hours: a table that grew since says far
    // less. (The memory store's count is exact, so a huge segment size stands in for it.)
    let settings = Settings {
        shard_size: 1_000_000,
        min_segments: 8,
        ..Settings::default()
    };
    let (chat, queue) = chat(100, 10, settings);
    chat.broadcast("c00000=", BODY, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(queue.len(), 8, "one segment per worker");
    drain(&chat, &queue).await;
    assert_eq!(received(&chat).len(), 100);
}

#[tokio::test]
async fn a_message_that_is_not_a_job_is_reported_not_dropped() {
    let (chat, queue) = chat(3, 10, Settings::default());
    queue.send("{\"not\":\"a job\"}".into());
    let junk = queue.receive().unwrap();
    let response = lambda::shards(
        &chat,
        sqs_event(std::slice::from_ref(&junk)),
        Deadline::NONE,
    )
    .await;
    assert_eq!(response.batch_item_failures[0].item_identifier, junk.id);
    settle(&queue, &junk, &Ok::<_, ()>(response));
    drain(&chat, &queue).await;
    assert_eq!(
        queue.dead_letters(),
        vec!["{\"not\":\"a job\"}"],
        "set aside, not lost"
    );
}

#[tokio::test(start_paused = true)]
async fn posts_are_paced_to_the_rate() {
    let settings = Settings {
        post_rate: Some(100),
        ..Settings::default()
    };
    let (chat, _queue) = chat(50, 1_000, settings);
    let started = tokio::time::Instant::now();
    chat.broadcast("c00000=", BODY, Deadline::NONE)
        .await
        .unwrap();
    let took = started.elapsed();
    // 50 posts at 100 a second: the last starts 490 ms after the first, and the delivery takes
    // its next turn, at 500 ms, to find the scan's end (paused time: exact).
    assert_eq!(took, Duration::from_millis(500));
    assert_eq!(received(&chat).len(), 50);
}

#[tokio::test(start_paused = true)]
async fn retries_of_throttled_posts_take_turns_within_the_rate() {
    let settings = Settings {
        post_rate: Some(100),
        throttle_backoff: Backoff {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(1),
        },
        ..Settings::default()
    };
    let (chat, _queue) = chat(20, 1_000, settings);
    for i in 0..20 {
        let throttled = Err(ApiError::Throttled("LimitExceededException".into()));
        chat.api.script(&format!("c{i:05}="), [throttled]);
    }
    let started = tokio::time::Instant::now();
    chat.broadcast("c00000=", BODY, Deadline::NONE)
        .await
        .unwrap();
    let took = started.elapsed();
    // 20 posts and 20 retries at 100 calls a second: the last call starts 390 ms after the
    // first (paused time: exact). Were the retries not paced, it would be over in about 200 ms.
    assert!((390..=400).contains(&took.as_millis()), "{took:?}");
    assert_eq!(received(&chat).len(), 20);
}

#[test]
fn segments_split_the_key_space_evenly() {
    let total = 16;
    let mut sizes = vec![0usize; total as usize];
    for i in 0..16_000 {
        let segment = segment_of(&format!("L0SM{i}cOFvHcCIhw="), total);
        sizes[segment as usize] += 1;
    }
    assert!(sizes.iter().all(|&n| (800..1200).contains(&n)), "{sizes:?}");
}

/// A queue with `visibility` seconds of visibility timeout and `receives` receives at most.
fn queue(visibility: u64, receives: u32) -> MemoryQueue {
    MemoryQueue::new(QueueSettings {
        workers: 2,
        visibility_timeout: Duration::from_secs(visibility),
        max_receives: receives,
    })
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_worker_died_comes_back_after_the_visibility_timeout_then_is_set_aside() {
    let queue = queue(30, 2);
    queue.send("job".into());
    let first = queue.receive().unwrap();
    assert_eq!(first.receives, 1);
    assert!(queue.receive().is_none(), "invisible while in flight");
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(queue.receive().is_none(), "still in flight");
    tokio::time::advance(Duration::from_secs(1)).await;
    let second = queue.receive().expect("back after the visibility timeout");
    assert_eq!(
        (second.id.as_str(), second.receives),
        (first.id.as_str(), 2)
    );
    // Its second worker dies too: after its last receive it goes to the dead-letter queue.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(queue.receive().is_none());
    assert_eq!(queue.dead_letters(), vec!["job"]);
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_event_source_mapping_retries_a_failed_invocation_and_deletes_a_served_one() {
    let queue = Arc::new(queue(5, 3));
    queue.send("fails once".into());
    queue.send("serves".into());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mapping = tokio::spawn(webchat::adapters::memory::serve(queue.clone(), {
        let seen = seen.clone();
        move |event: aws_lambda_events::sqs::SqsEvent, _id: String| {
            let seen = seen.clone();
            async move {
                let record = &event.records[0];
                let body = record.body.clone().unwrap();
                let receives = record.attributes["ApproximateReceiveCount"].clone();
                seen.lock().unwrap().push(format!("{body} #{receives}"));
                if body == "fails once" && receives == "1" {
                    Err("the invocation failed")
                } else {
                    Ok(aws_lambda_events::sqs::SqsBatchResponse::default())
                }
            }
        }
    }));
    queue.settled().await;
    mapping.abort();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["fails once #1", "fails once #2", "serves #1"]);
    assert!(queue.dead_letters().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_receipt_settles_only_its_own_receive() {
    let queue = queue(10, 5);
    queue.send("slow job".into());
    let first = queue.receive().unwrap();
    // Its worker outlives the visibility timeout; a second worker receives the job.
    tokio::time::advance(Duration::from_secs(10)).await;
    let second = queue.receive().expect("visible again");
    assert_eq!(second.receives, 2);
    // The first worker's late answers settle nothing: the second is still at it.
    queue.fail(&first);
    queue.delete(&first);
    assert_eq!(queue.len(), 1);
    assert!(
        queue.receive().is_none(),
        "still in flight with the second worker"
    );
    queue.delete(&second);
    assert!(queue.is_empty());

    // A worker that finishes after its timeout, before anyone received the job again, still
    // deletes it (its receipt is the latest).
    queue.send("late job".into());
    let late = queue.receive().unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    queue.delete(&late);
    assert!(queue.receive().is_none());
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_queue_settles_when_a_receiver_dies_after_it_started_waiting() {
    let queue = Arc::new(queue(30, 1));
    queue.send("job".into());
    let settled = tokio::spawn({
        let queue = queue.clone();
        async move { queue.settled().await }
    });
    tokio::task::yield_now().await;
    // received after settled() looked, and never settled: its receiver died
    drop(queue.receive().unwrap());
    tokio::time::timeout(Duration::from_secs(60), settled)
        .await
        .expect("settled once the visibility timeout set the job aside")
        .unwrap();
    assert_eq!(queue.dead_letters(), vec!["job"]);
}
