//! The `authorize` function's cost: its cold start, and what a connect costs it once warm.
//!
//!     cargo bench --all-features --bench authorizer -- [--runs N] [--validations N]
//!
//! - In process: CPU time per token validation (header, key lookup, signature, claims) with the
//!   issuer's keys in memory, for RS256 (Cognito's) and ES256; the thread's own CPU clock, so
//!   what the machine does meanwhile does not count.
//! - The shipped binary under a fake Runtime API, against an RS256 issuer on loopback: init
//!   (process start to its first `/next`), the first connect (which fetches discovery and the
//!   JWKS), and a warm connect (the Runtime API's round trip included).

#[allow(dead_code)]
#[path = "../tests/lambda/runtime_api.rs"]
mod runtime_api;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use webchat::auth::issuer::LocalIssuer;
use webchat::auth::jwks::{HttpKeys, IssuerUrl};
use webchat::auth::{Expected, Verifier};

const AUDIENCE: &str = "bench-client";

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given, nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut spec) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(spec.tv_sec as u64, spec.tv_nsec as u32)
}

/// An issuer of `algorithm` keys served on a free loopback port.
async fn serve(algorithm: Algorithm) -> Arc<LocalIssuer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = LocalIssuer::signing_with(
        format!("http://{}", listener.local_addr().unwrap()),
        algorithm,
    );
    let app: axum::Router = issuer.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

fn token(issuer: &LocalIssuer) -> String {
    issuer.mint_for("bench", AUDIENCE, chrono::Utc::now().timestamp())
}

/// An authorizer event for a connect offering `token`, as API Gateway sends it.
fn event(token: &str) -> Value {
    json!({
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/stage/$connect",
        "headers": {"Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
                    "Sec-WebSocket-Protocol": format!("webchat.v1, {token}"),
                    "Sec-WebSocket-Version": "13"},
        "queryStringParameters": null,
        "requestContext": {"routeKey": "$connect", "eventType": "CONNECT",
                           "connectionId": "bench=", "stage": "stage", "apiId": "abcdef1234"}
    })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn validations(n: usize) {
    println!("CPU per validation, keys warm ({n} validations each, this thread's CPU clock)");
    for algorithm in [Algorithm::RS256, Algorithm::ES256] {
        let issuer = serve(algorithm).await;
        let url = IssuerUrl::parse(issuer.url()).unwrap();
        let verifier = Verifier::new(
            HttpKeys::new(url),
            Expected {
                issuer: issuer.url().to_owned(),
                audience: AUDIENCE.into(),
            },
        );
        let token = token(&issuer);
        let now = chrono::Utc::now().timestamp();
        verifier.verify(&token, now).await.expect("a valid token");
        let (cpu, wall) = (thread_cpu(), Instant::now());
        for _ in 0..n {
            verifier.verify(&token, now).await.expect("a valid token");
        }
        let (cpu, wall) = (thread_cpu() - cpu, wall.elapsed());
        println!(
            "  {algorithm:?}: {} CPU, {} wall per validation",
            micros(cpu / n as u32),
            micros(wall / n as u32)
        );
    }
}

async fn binary(runs: usize) {
    let issuer = serve(Algorithm::RS256).await;
    let env = [
        ("JWT_ISSUER", issuer.url().to_owned()),
        ("JWT_AUDIENCE", AUDIENCE.to_owned()),
    ];
    let token = token(&issuer);
    let (mut inits, mut firsts, mut warms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let function = runtime_api::Function::start("authorize", &env).await;
        inits.push(function.api.next_called(1).await - started);
        let first = Instant::now();
        let answer = function.invoke(&event(&token)).await;
        firsts.push(first.elapsed());
        assert!(
            matches!(&answer, runtime_api::Answer::Response(body) if body["principalId"] == json!(webchat::auth::issuer::dev_user("bench"))),
            "{answer:?}"
        );
        for _ in 0..20 {
            let warm = Instant::now();
            function.invoke(&event(&token)).await.response();
            warms.push(warm.elapsed());
        }
    }
    println!(
        "The shipped authorize binary under the Runtime API, RS256 issuer on loopback ({runs} cold starts, {} warm connects)",
        warms.len()
    );
    println!(
        "  init p50 {} (max {}); first connect p50 {} (fetches discovery and the JWKS); warm connect p50 {} (Runtime API round trip included)",
        millis(median(inits.clone())),
        millis(*inits.iter().max().unwrap()),
        millis(median(firsts)),
        millis(median(warms)),
    );
    let (discovery, jwks) = issuer.requests();
    println!("  issuer requests: {discovery} discovery, {jwks} JWKS (one each per cold start)");
}

fn main() {
    let (mut runs, mut n) = (10, 2000);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|r| r.parse().ok()).expect("--runs N"),
            "--validations" => {
                n = args
                    .next()
                    .and_then(|r| r.parse().ok())
                    .expect("--validations N")
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    // one thread: the validations' CPU clock is the thread's
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            validations(n).await;
            binary(runs).await;
        });
}
