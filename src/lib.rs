//! webchat: a serverless websocket chat on AWS (API Gateway WebSocket API, one Lambda function per
//! route, DynamoDB, EventBridge), and `webchat-local`, which runs the very same routes behind a
//! local emulation of API Gateway.
//!
//! # Layout
//!
//! - [`protocol`]: the wire contract. What clients send and receive, the error codes, the limits
//!   (API Gateway's 32 KB frames and 128 KB messages), route selection by `action`.
//! - [`domain`]: what each route does (`connect`, `disconnect`, `default`, `broadcast`, `list`,
//!   `chat`, `post`, `cleanup`, and `shard`, one job of a sharded broadcast), as plain async
//!   functions over the ports. Fan-out with bounded
//!   concurrency, pagination, pruning of gone connections and retry budgets live here.
//! - [`ports`]: what the domain needs from the world: a connection store, the management API
//!   (`@connections`: post and describe, with "gone" as an outcome), an event bus, the shard
//!   queue of large broadcasts, metrics, a clock.
//! - [`adapters`]: the ports implemented: DynamoDB, EventBridge, SQS and the management API
//!   through aws-sdk-rust for the Lambda functions; in memory for `webchat-local` and the tests.
//! - [`auth`]: who is talking: the checks a token's claims must pass, and the identity they give.
//! - [`config`]: the functions' configuration from the environment, validated at init.
//! - [`lambda`]: the glue from API Gateway and EventBridge events to the domain and back; what
//!   every Lambda binary and the local gateway run.
//! - [`local`]: the local gateway: websocket upgrades, `@connections`, API Gateway's limits, the
//!   welcome event path and the cleanup timer, on one port.
//! - [`client`]: the terminal client (`webchat connect`): shortcuts, SigV4 presigning, sessions.
//! - [`telemetry`]: logging setup shared by the binaries; [`tool`]: how the command-line tools
//!   end (one line for a mistake, never a backtrace).
//! - [`metrics`]: every summary (a broadcast, a shard job, a cleanup) as CloudWatch metrics
//!   (Embedded Metric Format lines).
//!
//! `src/bin/` holds composition roots only: read configuration, build the adapters, run.
//!
//! Each side compiles only what it runs: the Cargo feature `aws` brings the AWS adapters, the
//! functions' configuration and the Lambda runtime; `local` the local gateway; `client` the
//! terminal client. Everything else (the protocol, the domain, the ports, the in-memory adapters,
//! the Lambda glue, telemetry and metrics) is in every build.

pub mod adapters;
pub mod auth;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "aws")]
pub mod config;
pub mod domain;
pub mod lambda;
#[cfg(feature = "local")]
pub mod local;
pub mod metrics;
pub mod ports;
pub mod protocol;
pub mod telemetry;
pub mod tool;

/// mimalloc instead of glibc's malloc: a fan-out allocates and frees a few kilobytes per post
/// (the SDK's request, its config layers, the HTTP buffers), and glibc's malloc/free were a
/// large share of the CPU a post cost (the profile is in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
