//! Sharded broadcasts through the domain and the Lambda glue with the in-memory adapters: the
//! inline/sharded switch, segments that cover every connection once, jobs that hand the rest of
//! their segment on (at their post limit or their deadline) without losing anyone, failed jobs
//! reported for the queue to retry, and pacing to a rate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use webchat::adapters::memory::{
    ManualClock, MemoryConnectionApi, MemoryEventBus, MemoryShardQueue, MemoryStore, segment_of,
};
use webchat::domain::{Chat, Deadline, Settings};
use webchat::lambda;
use webchat::ports::{ConnectionRecord, Segment, ShardJob};

type TestChat = Chat<MemoryStore, MemoryConnectionApi, MemoryEventBus>;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A chat with `connections` open connections, Scan pages of `page` records, and a queue.
fn chat(connections: usize, page: usize, settings: Settings) -> (TestChat, Arc<MemoryShardQueue>) {
    let queue = Arc::new(MemoryShardQueue::new());
    let chat = Chat {
        store: MemoryStore::new().with_page_size(page),
        api: MemoryConnectionApi::new(),
        bus: MemoryEventBus::recording(),
        clock: Arc::new(ManualClock::at(start())),
        settings,
        shards: Some(queue.clone()),
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

/// Runs every job on the queue (and the jobs they hand on) to the end.
async fn drain(chat: &TestChat, queue: &MemoryShardQueue) -> usize {
    let mut jobs = 0;
    while let Some(job) = queue.pop() {
        chat.shard(job, Deadline::NONE).await.expect("shard");
        jobs += 1;
    }
    jobs
}

const BODY: &str = r#"{"action":"broadcast","message":"hello everyone"}"#;

#[tokio::test]
async fn an_audience_that_fits_in_one_page_is_delivered_inline_without_the_queue() {
    let (chat, queue) = chat(40, 50, Settings::default());
    chat.broadcast("c00000=", BODY, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(queue.enqueued(), 0);
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
    let jobs: Vec<ShardJob> = std::iter::from_fn(|| queue.pop()).collect();
    let segments: Vec<Segment> = jobs.iter().map(|job| job.segment).collect();
    assert_eq!(
        segments,
        (0..10)
            .map(|index| Segment { index, total: 10 })
            .collect::<Vec<_>>()
    );
    assert!(jobs.iter().all(|job| job.cursor.is_none() && job.part == 0));
    for job in jobs {
        queue.push(job);
    }
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
        fanout_concurrency: 7,
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

#[tokio::test]
async fn a_job_cut_off_by_its_deadline_continues_after_the_last_finished_post() {
    let settings = Settings {
        fanout_concurrency: 8,
        deadline_reserve: Duration::from_millis(100),
        fanout_margin: Duration::from_millis(100),
        ..Settings::default()
    };
    let (chat, queue) = chat(200, 1_000, settings);
    chat.api.set_delay(Duration::from_millis(20));
    let job = ShardJob {
        broadcast: "b".into(),
        sender: "c00000=".into(),
        frame: r#"{"type":"broadcast","message":"x"}"#.into(),
        segment: Segment { index: 0, total: 1 },
        cursor: None,
        part: 0,
    };
    // 0.5 s: posts start for about 0.35 s, 8 at a time, 20 ms each: at most 400 a second, so
    // about 140 of the 200 are reached before the job stops.
    let report = chat
        .shard(job, Deadline::after(Duration::from_millis(500)))
        .await
        .unwrap();
    let after = report.continued.clone().expect("cut off before the end");
    assert!(report.fan_out.delivered > 0 && report.fan_out.delivered < 200);
    let next = queue.pop().expect("the rest was handed on");
    assert_eq!(next.cursor, after);
    assert_eq!(next.part, 1);
    queue.push(next);
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
    let job = queue.pop().unwrap();
    let message = |job: &ShardJob| {
        let mut message = SqsMessage::default();
        message.message_id = Some("m-1".into());
        message.body = Some(serde_json::to_string(job).unwrap());
        let mut event = SqsEvent::default();
        event.records = vec![message];
        event
    };
    chat.store.fail_scans_after(1);
    let response = lambda::shards(&chat, message(&job), Deadline::NONE).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(response.batch_item_failures[0].item_identifier, "m-1");
    // The queue delivers it again: now it goes through.
    chat.store.fail_scans_after(usize::MAX);
    let response = lambda::shards(&chat, message(&job), Deadline::NONE).await;
    assert!(response.batch_item_failures.is_empty());
    drain(&chat, &queue).await;
    let counts = received(&chat);
    assert_eq!(counts.len(), 100, "no one lost");
}

#[tokio::test]
async fn a_message_that_is_not_a_job_is_reported_not_dropped() {
    let (chat, _queue) = chat(3, 10, Settings::default());
    let mut message = SqsMessage::default();
    message.message_id = Some("junk".into());
    message.body = Some("{\"not\":\"a job\"}".into());
    let mut event = SqsEvent::default();
    event.records = vec![message];
    let response = lambda::shards(&chat, event, Deadline::NONE).await;
    assert_eq!(response.batch_item_failures[0].item_identifier, "junk");
}

#[tokio::test]
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
    // 50 posts at 100 a second: the last starts 490 ms after the first, however fast the
    // machine (no upper bound: a busy machine only makes it slower).
    assert!(took >= Duration::from_millis(490), "{took:?}");
    assert_eq!(received(&chat).len(), 50);
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
