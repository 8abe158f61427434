//! What tracing costs a function: init time and warm invocation time of `broadcast` (to 10
//! stored connections) with spans exported to a listening OTLP/HTTP receiver, against the same
//! function with export off (`OTEL_SDK_DISABLED=true`; logs keep their JSON and trace ids).
//!
//!     cargo bench --all-features --bench tracing_overhead -- [--starts N] [--invocations N]
//!
//! Needs moto, as the tests. Invocation time is the Runtime API's view: from handing out the
//! event to receiving the response, which includes the end-of-invocation flush.

#[allow(dead_code)]
#[path = "../tests/lambda/fake_aws.rs"]
mod fake_aws;
#[allow(dead_code)]
#[path = "../tests/lambda/moto.rs"]
mod moto;
#[allow(dead_code)]
#[path = "../tests/lambda/otlp.rs"]
mod otlp;
#[allow(dead_code)]
#[path = "../tests/lambda/runtime_api.rs"]
mod runtime_api;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn main() {
    let (mut starts, mut invocations) = (10, 200);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--starts" => starts = value(),
            "--invocations" => invocations = value(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    support::runtime().block_on(async {
        let (dynamodb, table) = moto::client_and_table().await;
        let now = chrono::Utc::now();
        for i in 0..10 {
            dynamodb
                .put_item()
                .table_name(&table)
                .item("connectionId", AttributeValue::S(format!("c{i}=")))
                .item("connectedAt", AttributeValue::S(now.to_rfc3339()))
                .item("expiresAt", AttributeValue::N((now.timestamp() + 7500).to_string()))
                .send()
                .await
                .unwrap();
        }
        let fake = fake_aws::FakeAws::start().await;
        let receiver = otlp::OtlpReceiver::start().await;
        let base = fake.function_env(&table, moto::endpoint());
        let ts = chrono::Utc::now().timestamp_millis();
        let event = json!({"requestContext": {"routeKey": "broadcast", "eventType": "MESSAGE", "connectionId": "c0=",
            "stage": "test", "requestId": "r", "connectedAt": ts, "requestTimeEpoch": ts, "domainName": "d", "apiId": "a"},
            "body": r#"{"action":"broadcast","message":"overhead"}"#, "isBase64Encoded": false});

        println!("broadcast to 10 connections; {starts} cold starts and {invocations} warm invocations per mode");
        println!("{:<34} {:>10} {:>14} {:>14}", "mode", "init p50", "invoke p50", "invoke p99");
        for (mode, extra) in [
            ("spans exported (receiver listening)", ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())),
            ("export off (OTEL_SDK_DISABLED)", ("OTEL_SDK_DISABLED", "true".to_string())),
        ] {
            let mut env = base.clone();
            env.push(extra);
            let mut inits = Vec::new();
            for _ in 0..starts {
                let started = Instant::now();
                let function = runtime_api::Function::start("broadcast", &env).await;
                inits.push(function.api.next_called(1).await - started);
            }
            let function = runtime_api::Function::start("broadcast", &env).await;
            let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
            let mut durations = Vec::new();
            for round in 0..=invocations {
                let started = Instant::now();
                let id = function.api.enqueue(&event.to_string(), header);
                let answer = function.api.answer(&id).await;
                assert!(matches!(answer, runtime_api::Answer::Response(_)), "{answer:?}");
                if round > 0 {
                    durations.push(started.elapsed()); // round 0 warms the connections up
                }
            }
            inits.sort();
            durations.sort();
            println!(
                "{:<34} {:>10} {:>14} {:>14}",
                mode,
                ms(percentile(&inits, 0.5)),
                ms(percentile(&durations, 0.5)),
                ms(percentile(&durations, 0.99))
            );
        }
        println!("spans received: {}", receiver.spans().len());
    });
}
