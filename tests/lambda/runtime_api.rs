//! A fake Lambda Runtime API, and the shipped function binaries run against it exactly as Lambda
//! runs them: `AWS_LAMBDA_RUNTIME_API` points at it, `/next` hands out one event at a time with
//! the request-id, deadline, function-ARN and trace-id headers, and `/response`, `/error` and
//! `/init/error` are recorded.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::Notify;

/// What a function answered for one invocation.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Response(Value),
    Error { error_type: String, body: Value },
}

impl Answer {
    pub fn response(self) -> Value {
        match self {
            Answer::Response(value) => value,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    pub fn error(self) -> (String, Value) {
        match self {
            Answer::Error { error_type, body } => (error_type, body),
            other => panic!("expected an invocation error, got {other:?}"),
        }
    }
}

struct Invocation {
    id: String,
    event: String,
    trace_id: String,
}

#[derive(Default)]
struct Inner {
    queue: Mutex<VecDeque<Invocation>>,
    queued: Notify,
    answers: Mutex<HashMap<String, Answer>>,
    answered: Notify,
    init_error: Mutex<Option<(String, Value)>>,
    next_calls: Mutex<Vec<Instant>>,
    next_called: Notify,
    /// The time each invocation is given (the function's timeout); 30 s unless set.
    timeout: Mutex<Option<Duration>>,
}

#[derive(Clone)]
pub struct RuntimeApi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

pub use crate::support::PATIENCE;
use crate::support::poll_until;

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        RuntimeApi { addr, inner }
    }

    /// Gives every invocation from now on `timeout` (its `Lambda-Runtime-Deadline-Ms`).
    pub fn set_timeout(&self, timeout: Duration) {
        *self.inner.timeout.lock().unwrap() = Some(timeout);
    }

    /// Queues an event with a fresh request id and the given X-Ray trace header.
    pub fn enqueue(&self, event: &str, trace_id: &str) -> String {
        let id = format!("req-{:016x}", fastrand::u64(..));
        self.inner.queue.lock().unwrap().push_back(Invocation {
            id: id.clone(),
            event: event.to_owned(),
            trace_id: trace_id.to_owned(),
        });
        self.inner.queued.notify_waiters();
        self.inner.queued.notify_one();
        id
    }

    /// Invokes the function with `event` and waits for its answer.
    pub async fn invoke(&self, event: &Value) -> Answer {
        self.invoke_raw(&event.to_string()).await
    }

    pub async fn invoke_raw(&self, event: &str) -> Answer {
        let id = self.enqueue(
            event,
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        );
        self.answer(&id).await
    }

    pub async fn answer(&self, id: &str) -> Answer {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answered = self.inner.answered.notified();
            if let Some(answer) = self.inner.answers.lock().unwrap().remove(id) {
                return answer;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("the function answered in time");
            let _ = tokio::time::timeout(left, answered).await;
        }
    }

    /// Waits for the function to report an init error.
    pub async fn init_error(&self) -> (String, Value) {
        poll_until("an init error reported", || {
            self.inner.init_error.lock().unwrap().clone()
        })
        .await
    }

    /// Waits until `/next` has been called `count` times; returns when the last call came.
    pub async fn next_called(&self, count: usize) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let called = self.inner.next_called.notified();
            if let Some(at) = self.inner.next_calls.lock().unwrap().get(count - 1) {
                return *at;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("/next was called in time");
            let _ = tokio::time::timeout(left, called).await;
        }
    }
}

async fn next(State(inner): State<Arc<Inner>>) -> Response {
    inner.next_calls.lock().unwrap().push(Instant::now());
    inner.next_called.notify_waiters();
    loop {
        let queued = inner.queued.notified();
        if let Some(invocation) = inner.queue.lock().unwrap().pop_front() {
            let timeout = inner
                .timeout
                .lock()
                .unwrap()
                .unwrap_or(Duration::from_secs(30));
            let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + timeout;
            return (
                [
                    ("lambda-runtime-aws-request-id", invocation.id),
                    (
                        "lambda-runtime-deadline-ms",
                        deadline.as_millis().to_string(),
                    ),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:webchat-test".to_string(),
                    ),
                    ("lambda-runtime-trace-id", invocation.trace_id),
                    ("content-type", "application/json".to_string()),
                ],
                invocation.event,
            )
                .into_response();
        }
        queued.await;
    }
}

fn json_or_text(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
}

async fn response(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    inner
        .answers
        .lock()
        .unwrap()
        .insert(id, Answer::Response(json_or_text(&body)));
    inner.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn error(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    // lambda_runtime sends "unhandled" in the header and the error's type in the body.
    let body = json_or_text(&body);
    let error_type = body["errorType"].as_str().unwrap_or_default().to_owned();
    inner
        .answers
        .lock()
        .unwrap()
        .insert(id, Answer::Error { error_type, body });
    inner.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn init_error(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    *inner.init_error.lock().unwrap() = Some((error_type, json_or_text(&body)));
    StatusCode::ACCEPTED
}

/// Where [`binary`] takes the function binaries from instead of this build's: set once, before
/// the first start (the `lambda_init` bench's `--binaries DIR`, to measure another profile's).
pub static BINARIES: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The path of a shipped function binary, built by cargo for this test run.
pub fn binary(function: &str) -> std::path::PathBuf {
    if let Some(dir) = BINARIES.get() {
        return dir.join(function);
    }
    let built = match function {
        "connect" => env!("CARGO_BIN_EXE_connect"),
        "disconnect" => env!("CARGO_BIN_EXE_disconnect"),
        "default" => env!("CARGO_BIN_EXE_default"),
        "broadcast" => env!("CARGO_BIN_EXE_broadcast"),
        "list" => env!("CARGO_BIN_EXE_list"),
        "chat" => env!("CARGO_BIN_EXE_chat"),
        "join" => env!("CARGO_BIN_EXE_join"),
        "leave" => env!("CARGO_BIN_EXE_leave"),
        "history" => env!("CARGO_BIN_EXE_history"),
        "post" => env!("CARGO_BIN_EXE_post"),
        "cleanup" => env!("CARGO_BIN_EXE_cleanup"),
        "fanout" => env!("CARGO_BIN_EXE_fanout"),
        "authorize" => env!("CARGO_BIN_EXE_authorize"),
        other => panic!("no function {other}"),
    };
    built.into()
}

/// A function process attached to a Runtime API. Killed when dropped.
pub struct Function {
    child: Child,
    pub api: RuntimeApi,
    logs: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Function {
    /// Starts `function` as Lambda would: its environment is exactly `env` plus the variables
    /// Lambda itself sets.
    pub async fn start(function: &str, env: &[(&str, String)]) -> Function {
        Function::start_bare(function, env, true).await
    }

    /// With `as_lambda` false, only `env` and `AWS_LAMBDA_RUNTIME_API` are set.
    pub async fn start_bare(function: &str, env: &[(&str, String)], as_lambda: bool) -> Function {
        let api = RuntimeApi::start().await;
        let mut command = Command::new(binary(function));
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string());
        if as_lambda {
            command
                .env("AWS_LAMBDA_FUNCTION_NAME", format!("webchat-{function}"))
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env(
                    "AWS_LAMBDA_LOG_GROUP_NAME",
                    format!("/aws/lambda/webchat-{function}"),
                )
                .env(
                    "AWS_LAMBDA_LOG_STREAM_NAME",
                    "2026/11/28/[$LATEST]0123456789abcdef",
                )
                .env("AWS_REGION", "us-east-1")
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_SESSION_TOKEN", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true");
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start the function binary");
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let logs = collect(Box::new(child.stderr.take().unwrap()));
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        Function {
            child,
            api,
            logs,
            stdout,
        }
    }

    pub async fn invoke(&self, event: &Value) -> Answer {
        self.api.invoke(event).await
    }

    /// Invokes with this X-Ray trace header as the invocation's `Lambda-Runtime-Trace-Id`.
    pub async fn invoke_traced(&self, event: &Value, trace_header: &str) -> Answer {
        let id = self.api.enqueue(&event.to_string(), trace_header);
        self.api.answer(&id).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the function wrote to stderr so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Everything the function wrote to stdout so far (its EMF metrics lines).
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits for the process to exit; its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        poll_until("the function exited", || self.child.try_wait().unwrap()).await
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
