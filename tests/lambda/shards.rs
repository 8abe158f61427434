//! Sharded broadcasts through the shipped `broadcast` and `fanout` binaries under a Runtime API,
//! against moto (DynamoDB's parallel Scan) and the recording SQS and `@connections` server: the
//! inline/sharded switch, a shard job re-enqueued at its deadline, a job retried after a failure,
//! a job that fails its last attempt told to its sender, and the metrics line every fan-out
//! writes, whatever the log level.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Stack, frames, websocket_event};

const BODY: &str = r#"{"action":"broadcast","message":"to everyone"}"#;

/// The environment of `broadcast` and `fanout` with a shard queue and Scan pages of `page`.
fn sharding(stack: &Stack, page: usize) -> Vec<(&'static str, String)> {
    vec![
        ("SHARD_QUEUE_URL", stack.fake.queue_url()),
        ("SCAN_PAGE_SIZE", page.to_string()),
    ]
}

/// The SQS event the event source mapping hands `fanout` for one job.
fn sqs_event(message_id: &str, job: &str, receives: u32) -> Value {
    json!({"Records": [{
        "messageId": message_id,
        "receiptHandle": format!("handle-{message_id}-{receives}"),
        "body": job,
        "attributes": {
            "ApproximateReceiveCount": receives.to_string(),
            "SentTimestamp": "1764403200000",
            "SenderId": "AROAEXAMPLE:broadcast",
            "ApproximateFirstReceiveTimestamp": "1764403200001"
        },
        "messageAttributes": {},
        "md5OfBody": "0",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:shards",
        "awsRegion": "us-east-1"
    }]})
}

/// A shard job for the whole table from its start, as `broadcast` would queue it.
fn whole_table_job(sender: &str) -> String {
    json!({
        "broadcast": "b1", "sender": sender, "frame": r#"{"type":"broadcast","message":"x"}"#,
        "segment": {"index": 0, "total": 1}, "cursor": null, "part": 0
    })
    .to_string()
}

/// Three connections, and `fanout` (with `env` besides the queue's) whose next Scans are
/// throttled past the SDK's six attempts: a job fails.
async fn failing_scans(env: &[(&'static str, &str)]) -> (Stack, super::runtime_api::Function) {
    let stack = Stack::new().await;
    for i in 0..3 {
        stack.put(&format!("c{i}="), None, 60).await;
    }
    stack
        .fake
        .throttle_dynamodb(super::moto::endpoint(), "Scan", 6);
    let mut all = sharding(&stack, 10);
    all.push(("AWS_ENDPOINT_URL_DYNAMODB", stack.fake.endpoint()));
    all.extend(env.iter().map(|(name, value)| (*name, value.to_string())));
    let fanout = stack.function_with("fanout", &all).await;
    (stack, fanout)
}

/// How many broadcasts each connection got.
fn received(stack: &Stack) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (id, body) in stack.fake.delivered() {
        if body.contains("\"broadcast\"") {
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}

#[tokio::test]
async fn broadcast_delivers_an_audience_within_one_page_itself_and_shards_a_larger_one() {
    let stack = Stack::new().await;
    for i in 0..4 {
        stack.put(&format!("c{i}="), None, 60).await;
    }
    // Pages of 10: four connections are one page, delivered inline, nothing queued.
    let inline = stack
        .function_with("broadcast", &sharding(&stack, 10))
        .await;
    let answer = inline
        .invoke(&websocket_event("broadcast", "c0=", Some(BODY)))
        .await
        .response();
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(received(&stack).len(), 4);
    assert!(stack.fake.sqs_messages().is_empty());

    // Pages of 2: the table goes on after the first page, so the broadcast is sharded.
    let sharded = stack.function_with("broadcast", &sharding(&stack, 2)).await;
    let answer = sharded
        .invoke(&websocket_event("broadcast", "c0=", Some(BODY)))
        .await
        .response();
    assert_eq!(answer["statusCode"], 200, "{:?}", sharded.logs());
    assert_eq!(
        received(&stack).values().sum::<usize>(),
        4,
        "no post inline"
    );
    let jobs: Vec<Value> = stack
        .fake
        .sqs_messages()
        .iter()
        .map(|body| serde_json::from_str(body).unwrap())
        .collect();
    assert_eq!(jobs.len(), 2, "at least two segments: {jobs:?}");
    for (index, job) in jobs.iter().enumerate() {
        assert_eq!(job["segment"], json!({"index": index, "total": 2}));
        assert_eq!(job["cursor"], Value::Null);
        assert_eq!(job["part"], 0);
        assert_eq!(job["sender"], "c0=");
        let frame: Value = serde_json::from_str(job["frame"].as_str().unwrap()).unwrap();
        assert_eq!(frame["message"], "to everyone");
    }

    // The workers deliver the segments: everyone once more, and only once.
    let fanout = stack.function_with("fanout", &sharding(&stack, 2)).await;
    for (i, job) in stack.fake.sqs_messages().iter().enumerate() {
        let answer = fanout
            .invoke(&sqs_event(&format!("m{i}"), job, 1))
            .await
            .response();
        assert_eq!(
            answer,
            json!({"batchItemFailures": []}),
            "{:?}",
            fanout.logs()
        );
    }
    let counts = received(&stack);
    assert_eq!(counts.len(), 4);
    assert!(counts.values().all(|&n| n == 2), "{counts:?}");
}

#[tokio::test]
async fn a_shard_job_near_its_deadline_hands_the_rest_of_its_segment_on() {
    let stack = Stack::new().await;
    for i in 0..40 {
        stack.put(&format!("c{i:02}="), None, 60).await;
    }
    stack.fake.set_delay(Duration::from_millis(100));
    let mut env = sharding(&stack, 5);
    env.push(("FANOUT_CONCURRENCY", "1".into()));
    let fanout = stack.function_with("fanout", &env).await;
    // 4 s: a fifth kept for the export, posts stop a tenth before that; one at a time at 100 ms,
    // 40 connections would take 4 s.
    fanout.api.set_timeout(Duration::from_secs(4));
    let job = whole_table_job("c00=");
    let answer = fanout.invoke(&sqs_event("m1", &job, 1)).await.response();
    assert_eq!(
        answer,
        json!({"batchItemFailures": []}),
        "{:?}",
        fanout.logs()
    );
    let first = received(&stack);
    assert!((1..40).contains(&first.len()), "{} delivered", first.len());
    let continued = stack.fake.sqs_messages();
    assert_eq!(continued.len(), 1, "the rest is handed on");
    let next: Value = serde_json::from_str(&continued[0]).unwrap();
    assert_eq!(next["part"], 1);
    let cursor = next["cursor"].as_str().expect("a cursor");
    assert!(
        first.contains_key(cursor),
        "it resumes after a delivered connection"
    );

    // The continuation, given time, delivers the rest: no one lost, no one twice (one post in
    // flight at a time finishes before the job stops).
    stack.fake.set_delay(Duration::ZERO);
    let answer = fanout
        .invoke(&sqs_event("m2", &continued[0], 1))
        .await
        .response();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let counts = received(&stack);
    assert_eq!(counts.len(), 40, "no one lost");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

#[tokio::test]
async fn a_failed_shard_job_is_reported_for_retry_and_its_retry_delivers() {
    let (stack, fanout) = failing_scans(&[]).await;
    let job = whole_table_job("c0=");
    let answer = fanout.invoke(&sqs_event("m1", &job, 1)).await.response();
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m1"}]})
    );
    assert!(received(&stack).is_empty());
    // SQS delivers it again after the visibility timeout; the table answers now.
    let answer = fanout.invoke(&sqs_event("m1", &job, 2)).await.response();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(received(&stack).len(), 3);
    assert_eq!(frames(stack.fake.delivered_to("c1=")).len(), 1);
}

#[tokio::test]
async fn a_shard_job_that_fails_its_last_attempt_is_told_to_its_sender() {
    let (stack, fanout) = failing_scans(&[("SHARD_ATTEMPTS", "2")]).await;
    // The second receive of a queue that sets jobs aside after two: SQS moves it to the
    // dead-letter queue once the worker reports it failed.
    let answer = fanout
        .invoke(&sqs_event("m1", &whole_table_job("c0="), 2))
        .await
        .response();
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m1"}]})
    );
    let told = frames(stack.fake.delivered_to("c0="));
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["code"], "delivery_incomplete");
    let message = told[0]["message"].as_str().unwrap();
    assert!(message.contains("after 2 attempts"), "{message}");
    assert!(received(&stack).is_empty());
}

#[tokio::test]
async fn every_fan_out_writes_one_embedded_metric_format_line_to_stdout() {
    let stack = Stack::new().await;
    for i in 0..3 {
        stack.put(&format!("c{i}="), None, 60).await;
    }
    stack.fake.gone("c2=");
    let mut env = sharding(&stack, 10);
    env.push(("METRICS_NAMESPACE", "webchat/test".into()));
    let broadcast = stack.function_with("broadcast", &env).await;
    broadcast
        .invoke(&websocket_event("broadcast", "c0=", Some(BODY)))
        .await
        .response();
    let lines: Vec<Value> = broadcast
        .stdout()
        .iter()
        .map(|line| serde_json::from_str(line).expect("every stdout line is JSON"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    let directive = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "webchat/test");
    assert_eq!(directive["Dimensions"], json!([["Function"]]));
    assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(line["Function"], "broadcast");
    assert_eq!(line["Broadcasts"], 1);
    assert_eq!(line["Delivered"], 2);
    assert_eq!(line["Pruned"], 1);
    assert_eq!(line["Failed"], 0);
    assert!(line["FanOutDuration"].is_u64());
    for metric in directive["Metrics"].as_array().unwrap() {
        let name = metric["Name"].as_str().unwrap();
        assert!(line[name].is_u64(), "{name} has its value at the top level");
        let unit = metric["Unit"].as_str().unwrap();
        assert!(["Count", "Milliseconds"].contains(&unit), "{unit}");
    }
    // At the warn level the logs say nothing of a broadcast that went well, but the metrics
    // still do.
    let mut warn = sharding(&stack, 10);
    warn.push(("METRICS_NAMESPACE", "webchat/test".into()));
    warn.push(("LOG_LEVEL", "warn".into()));
    let at_warn = stack.function_with("broadcast", &warn).await;
    at_warn
        .invoke(&websocket_event("broadcast", "c0=", Some(BODY)))
        .await
        .response();
    let lines = at_warn.stdout();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("\"Broadcasts\":1"), "{}", lines[0]);
    // Without a namespace, nothing on stdout.
    let quiet = stack
        .function_with("broadcast", &sharding(&stack, 10))
        .await;
    quiet
        .invoke(&websocket_event("broadcast", "c0=", Some(BODY)))
        .await
        .response();
    assert!(quiet.stdout().is_empty());
}
