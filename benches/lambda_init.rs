//! The function binaries as Lambda starts them (this build's, with the bench profile, or with
//! `--binaries DIR` another build's, such as the images' dist profile): time from process start to the first
//! `/next` request (the init duration Lambda bills on a cold start), stripped binary size, and
//! peak resident memory after init and after serving one invocation.
//!
//!     cargo bench --all-features --bench lambda_init -- [--runs N] [--binaries DIR]
//!
//! `--binaries DIR` measures the function binaries in DIR (named as the functions) instead of this
//! build's: `scripts/bench-binary-profiles --init` uses it to compare the images' profile choices.
//!
//! The environment is the function's as the stack sets it, plus what the image sets
//! (`SSL_CERT_FILE`, from the distroless base).
//!
//! Needs moto for the invocation (from `WEBCHAT_TEST_MOTO`, or `.venv/bin/moto_server`, as the
//! tests); `@connections` and EventBridge are the tests' recording server; the authorizer's
//! issuer is webchat's own (RS256), on loopback.

#[allow(dead_code)]
#[path = "../tests/lambda/fake_aws.rs"]
mod fake_aws;
#[allow(dead_code)]
#[path = "../tests/lambda/moto.rs"]
mod moto;
#[allow(dead_code)]
#[path = "../tests/lambda/runtime_api.rs"]
mod runtime_api;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webchat::lambda::Function;

fn event(function: &str, token: &str) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    let context = |route: &str, kind: &str| {
        json!({"routeKey": route, "eventType": kind, "connectionId": "bench=", "stage": "test",
               "requestId": "r", "connectedAt": now, "requestTimeEpoch": now, "domainName": "d", "apiId": "a",
               "identity": {"sourceIp": "203.0.113.7"}})
    };
    match function {
        "connect" => {
            json!({"requestContext": context("$connect", "CONNECT"), "isBase64Encoded": false})
        }
        "disconnect" => {
            json!({"requestContext": context("$disconnect", "DISCONNECT"), "isBase64Encoded": false})
        }
        "default" => {
            json!({"requestContext": context("$default", "MESSAGE"), "body": "hello", "isBase64Encoded": false})
        }
        "broadcast" => {
            json!({"requestContext": context("broadcast", "MESSAGE"), "body": r#"{"action":"broadcast","message":"hi"}"#, "isBase64Encoded": false})
        }
        "list" => {
            json!({"requestContext": context("list", "MESSAGE"), "body": r#"{"action":"list"}"#, "isBase64Encoded": false})
        }
        "chat" => {
            json!({"requestContext": context("chat", "MESSAGE"), "body": r#"{"action":"chat","connection":"bench=","message":"hi"}"#, "isBase64Encoded": false})
        }
        "join" | "leave" | "history" => {
            let body = json!({"action": function, "room": "bench"}).to_string();
            json!({"requestContext": context(function, "MESSAGE"), "body": body, "isBase64Encoded": false})
        }
        "post" => {
            json!({"version": "0", "id": "1", "detail-type": "welcome", "source": "webchat", "account": "1",
                         "time": "2026-11-28T07:00:00Z", "region": "us-east-1", "resources": [],
                         "detail": {"connectionId": "bench=", "message": "Welcome!"}})
        }
        "fanout" => {
            let job = json!({"broadcast": "b", "sender": "bench=",
                             "frame": r#"{"type":"broadcast","message":"hi"}"#,
                             "segment": {"index": 0, "total": 1}, "cursor": null, "part": 0});
            json!({"Records": [{"messageId": "m1", "receiptHandle": "h1", "body": job.to_string(),
                                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:shards",
                                "awsRegion": "us-east-1"}]})
        }
        "authorize" => json!({
            "type": "REQUEST",
            "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/stage/$connect",
            "headers": {"Sec-WebSocket-Protocol": format!("webchat.v1, {token}")},
            "requestContext": context("$connect", "CONNECT")
        }),
        _ => json!({}),
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

fn stripped_size(function: &str) -> u64 {
    let copy = std::env::temp_dir().join(format!("webchat-size-{function}"));
    std::fs::copy(runtime_api::binary(function), &copy).unwrap();
    let status = std::process::Command::new("strip")
        .arg(&copy)
        .status()
        .expect("strip (binutils)");
    assert!(status.success());
    let size = std::fs::metadata(&copy).unwrap().len();
    let _ = std::fs::remove_file(&copy);
    size
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let mut runs = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|r| r.parse().ok()).expect("--runs N"),
            "--binaries" => {
                let dir = args.next().expect("--binaries DIR");
                runtime_api::BINARIES
                    .set(std::fs::canonicalize(&dir).expect("--binaries DIR exists"))
                    .unwrap();
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    support::runtime().block_on(async {
        let (_client, table) = moto::client_and_table().await;
        let fake = fake_aws::FakeAws::start().await;
        let mut env = fake.function_env(&table, moto::endpoint());
        // What the image's base (distroless cc) sets: the TLS roots are that one bundle. Unset,
        // rustls-native-certs also reads every file of /etc/ssl/certs, which on a full Debian
        // (not in the image) holds some 300 and costs about 6 ms.
        env.push(("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt".into()));
        // the authorizer's issuer: RS256, as Cognito's, on loopback (the other functions ignore it)
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = webchat::auth::issuer::LocalIssuer::signing_with(
            format!("http://{}", listener.local_addr().unwrap()),
            jsonwebtoken::Algorithm::RS256,
        );
        let app: axum::Router = issuer.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        env.push(("JWT_ISSUER", issuer.url().to_owned()));
        env.push(("JWT_AUDIENCE", "bench".into()));
        let token = issuer.mint_for("bench", "bench", chrono::Utc::now().timestamp());
        println!("{runs} cold starts per function; init = process start to its first /next");
        println!(
            "{:<11} {:>12} {:>12} {:>16} {:>16} {:>20}",
            "function",
            "init p50",
            "init max",
            "stripped bytes",
            "peak RSS (init)",
            "peak RSS (1 invoke)"
        );
        for function in Function::ALL.map(Function::name) {
            let mut inits = Vec::new();
            let mut rss_init = 0;
            for _ in 0..runs {
                let started = Instant::now();
                let process = runtime_api::Function::start(function, &env).await;
                let first_next = process.api.next_called(1).await;
                inits.push(first_next - started);
                rss_init = rss_init.max(peak_rss_kib(process.pid()));
            }
            let process = runtime_api::Function::start(function, &env).await;
            let answer = process.invoke(&event(function, &token)).await;
            assert!(
                matches!(&answer, runtime_api::Answer::Response(body)
                    if body.get("batchItemFailures").is_none_or(|failed| failed == &json!([]))),
                "{function}: {answer:?}"
            );
            let rss_invoked = peak_rss_kib(process.pid());
            let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
            println!(
                "{:<11} {:>12} {:>12} {:>16} {:>12.1} MiB {:>16.1} MiB",
                function,
                ms(median(inits.clone())),
                ms(*inits.iter().max().unwrap()),
                stripped_size(function),
                rss_init as f64 / 1024.0,
                rss_invoked as f64 / 1024.0,
            );
        }
    });
}
