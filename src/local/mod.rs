//! The local gateway: an emulation of API Gateway's WebSocket API that runs the same routes the
//! Lambda functions run, on one port, with an in-memory store.
//!
//! - [`socket`]: websocket upgrades on `/` (`$connect` decides the handshake), route selection,
//!   API Gateway's limits, `$disconnect` on every close.
//! - [`listener`]: accepting connections within a bound, with a header timeout.
//! - [`management`]: the `@connections` API on the same port.
//! - [`registry`]: the live sockets, the peers of the local stack's `@connections` in memory.
//!
//! Connect publishes the welcome event on an in-memory bus; a dispatcher hands it to `post` in the
//! EventBridge event shape, as the stack's rule does. A timer runs `cleanup` as the schedule does.
//! A broadcast larger than one Scan page goes to the shard queue, SQS in memory
//! ([`MemoryQueue`], with its dead-letter queue and event source mapping), whose jobs `fanout`
//! delivers, as the stack's SQS queue and event source mapping do.

mod auth;
mod listener;
mod management;
mod registry;
mod rule;
mod socket;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

pub use crate::adapters::memory::QueueSettings;
pub use auth::{Auth, DEV_AUDIENCE};
pub use registry::Registry;

use crate::adapters::memory::{self, MemoryEventBus, MemoryQueue, MemoryRoomStore, MemoryStore};
use crate::domain::{Chat, Deadline, Settings};
use crate::lambda::events::{self, StageMeta};
use crate::lambda::{self, Function};
use crate::ports::SystemClock;
use crate::protocol::{MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES};
use crate::telemetry;

/// API Gateway's quotas, each overridable for tests and experiments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame a client may send; over it the connection closes with 1009.
    pub max_frame_bytes: usize,
    /// Largest message (frames reassembled) a client may send, and largest `@connections` body.
    pub max_message_bytes: usize,
    /// A connection with no frame from its client for this long is closed (1001).
    pub idle_timeout: Duration,
    /// A connection is closed (1001) after this long, however busy.
    pub max_duration: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: MAX_FRAME_BYTES,
            max_message_bytes: MAX_PAYLOAD_BYTES,
            idle_timeout: Duration::from_secs(10 * 60),
            max_duration: Duration::from_secs(2 * 60 * 60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The stage name: in events, and in `/{stage}/@connections/{id}`.
    pub stage: String,
    pub limits: Limits,
    /// How often `cleanup` runs; `None` never.
    pub cleanup_interval: Option<Duration>,
    /// Frames queued for one client before it counts as not reading and is dropped.
    pub outbound_queue: usize,
    /// Bytes owed to one client (frames queued, and pongs to its pings) before it counts as not
    /// reading and is dropped.
    pub max_outbound_bytes: usize,
    /// How long a client may take to send a request's headers before its connection is closed.
    pub header_timeout: Duration,
    /// Connections (websockets and HTTP) held at once; more are closed as they arrive.
    /// `None`: the process's open-file limit less a reserve, at most 10 000.
    pub max_connections: Option<usize>,
    /// On shutdown, how long clients get to take their close frames before they are dropped.
    pub shutdown_grace: Duration,
    /// Each event's time limit, as the function's timeout in AWS (the stack's default: 10 s);
    /// `None`, no limit.
    pub function_timeout: Option<Duration>,
    pub settings: Settings,
    /// Connections the store examines a Scan page: a broadcast to more goes to the shard queue.
    pub scan_page_size: usize,
    /// The shard queue's event source mapping and redrive policy.
    pub queue: QueueSettings,
    /// Sign-in: every connect authorized by a token, as the stack's `authorize` function does;
    /// `None`: anyone connects (with `?name=`).
    pub auth: Option<Auth>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stage: "local".into(),
            limits: Limits::default(),
            cleanup_interval: Some(Duration::from_secs(5 * 60)),
            outbound_queue: 1024,
            max_outbound_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            max_connections: None,
            shutdown_grace: Duration::from_secs(2),
            function_timeout: Some(Duration::from_secs(10)),
            settings: Settings::default(),
            scan_page_size: 1000,
            queue: QueueSettings::default(),
            auth: None,
        }
    }
}

/// The routes of the local stack: the memory store, the gateway's own sockets, the bus that
/// hands the welcome to `post` (and the shard queue that hands large broadcasts to `fanout`).
pub type LocalChat = Chat<MemoryStore, Arc<Registry>, MemoryEventBus, MemoryRoomStore>;

pub(crate) struct Shared {
    chat: LocalChat,
    /// The live sockets: the routes post through it, and so does the `@connections` API.
    registry: Arc<Registry>,
    config: Config,
    stage: StageMeta,
    /// Every socket task, so shutdown can wait for their `$disconnect`s.
    tracker: TaskTracker,
    /// Cancelled at shutdown: HTTP connections finish what they are doing, upgrades are refused.
    closing: tokio_util::sync::CancellationToken,
    /// The shard queue (SQS in memory), whose event source mapping hands jobs to `fanout`.
    queue: Arc<MemoryQueue>,
    /// The `$connect` authorizer, with sign-in.
    authorizer: Option<auth::Authorizer>,
}

impl Shared {
    /// The deadline of an event handled from now, as Lambda would set it.
    fn deadline(&self) -> Deadline {
        self.config
            .function_timeout
            .map_or(Deadline::NONE, Deadline::after)
    }
}

/// Any other path: 404, with where things are (a websocket client pointed at a wrong path says
/// so in the log too).
pub(crate) async fn not_found(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let host = &shared.stage.domain_name;
    let stage = &shared.stage.stage;
    let path = request.uri().path();
    let message = format!(
        "nothing at {path}: the chat is at ws://{host}/ (or ws://{host}/{stage}, as a deployed \
         stage's URL ends), its page at http://{host}/, the management API at \
         http://{host}/@connections/{{connectionId}}\n"
    );
    if request.headers().contains_key(axum::http::header::UPGRADE) {
        tracing::info!(
            path,
            status = 404,
            "handshake refused: no websocket at this path"
        );
    } else {
        tracing::debug!(path, status = 404, "not found");
    }
    (axum::http::StatusCode::NOT_FOUND, message).into_response()
}

/// A bound, not yet serving, local gateway.
pub struct Gateway {
    listener: TcpListener,
    shared: Arc<Shared>,
    deliveries: mpsc::UnboundedReceiver<memory::Routed>,
}

impl Gateway {
    /// Binds the listener (port 0 picks a free port).
    pub async fn bind(address: SocketAddr, config: Config) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        let (bus, deliveries) = MemoryEventBus::with_rule();
        let registry = Arc::new(Registry::serving(config.limits.max_message_bytes));
        let queue = Arc::new(MemoryQueue::new(config.queue.clone()));
        let chat = Chat {
            store: MemoryStore::new().with_page_size(config.scan_page_size),
            rooms: MemoryRoomStore::new(config.scan_page_size),
            api: registry.clone(),
            bus,
            clock: Arc::new(SystemClock),
            // As the stack sets them from its queue: FANOUT_WORKERS and SHARD_ATTEMPTS.
            settings: Settings {
                min_segments: u32::try_from(config.queue.workers).unwrap_or(u32::MAX),
                shard_attempts: config.queue.max_receives,
                ..config.settings.clone()
            },
            shards: Some(queue.clone()),
            metrics: Arc::new(crate::ports::NoMetrics),
            // one process is every function instance: the buckets live in memory
            limits: Arc::new(crate::adapters::memory::MemoryLimits::default()),
        };
        let stage = StageMeta {
            api_id: "local".into(),
            stage: config.stage.clone(),
            domain_name: local.to_string(),
        };
        let authorizer = config
            .auth
            .as_ref()
            .map(|auth| auth::Authorizer::new(auth, local))
            .transpose()?;
        let shared = Arc::new(Shared {
            chat,
            registry,
            config,
            stage,
            tracker: TaskTracker::new(),
            closing: tokio_util::sync::CancellationToken::new(),
            queue,
            authorizer,
        });
        Ok(Gateway {
            listener,
            shared,
            deliveries,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The URL to give a websocket client.
    pub fn url(&self) -> String {
        format!("ws://{}", self.local_addr())
    }

    /// With sign-in, the issuer and audience tokens must have: `(issuer, audience)`.
    pub fn sign_in(&self) -> Option<(&str, &str)> {
        let authorizer = self.shared.authorizer.as_ref()?;
        Some((authorizer.issuer(), authorizer.audience()))
    }

    /// With `--dev-issuer`, the gateway's own issuer (tests mint their tokens with it).
    pub fn dev_issuer(&self) -> Option<Arc<crate::auth::issuer::LocalIssuer>> {
        self.shared.authorizer.as_ref()?.dev.clone()
    }

    /// Serves until `shutdown` completes, then closes every socket (1001, running `$disconnect`
    /// for each) and returns within [`Config::shutdown_grace`] and a second, whatever the
    /// clients do.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Gateway {
            listener,
            shared,
            deliveries,
        } = self;
        let mut background = vec![
            tokio::spawn(rule::run(shared.clone(), deliveries)),
            tokio::spawn(serve_shards(shared.clone())),
        ];
        if let Some(interval) = shared.config.cleanup_interval {
            background.push(tokio::spawn(run_cleanup(shared.clone(), interval)));
        }

        let app = Router::new()
            .route("/", get(socket::upgrade))
            .route("/{stage}", get(socket::upgrade_at_stage))
            .route(
                "/@connections/{id}",
                get(management::get)
                    .post(management::post)
                    .delete(management::delete),
            )
            .route(
                "/{stage}/@connections/{id}",
                get(management::get)
                    .post(management::post)
                    .delete(management::delete),
            )
            .route("/dev/token", get(auth::dev_token));
        let app = match shared.authorizer.as_ref().and_then(|a| a.dev.as_ref()) {
            Some(dev) => app.merge(dev.router()),
            None => app,
        }
        .fallback(not_found)
        .with_state(shared.clone());
        let rules = listener::Rules {
            max_connections: shared
                .config
                .max_connections
                .unwrap_or_else(listener::default_max_connections),
            header_timeout: shared.config.header_timeout,
        };
        let closing = shared.closing.clone();
        let mut connections = listener::accept(listener, app, rules, closing, shutdown).await;

        // Close every socket (1001) and let requests in flight finish; after the grace, drop
        // the clients that have not taken their close frame, and whatever HTTP is left.
        let registry = &shared.registry;
        tracing::info!(connections = registry.len(), "shutting down");
        registry::close_all(registry, 1001, "Going away");
        shared.closing.cancel();
        shared.tracker.close();
        let grace = shared.config.shutdown_grace;
        let finished = async {
            shared.tracker.wait().await;
            while connections.join_next().await.is_some() {}
        };
        if tokio::time::timeout(grace, finished).await.is_err() {
            tracing::warn!(
                left = registry.len(),
                "some clients did not close within {grace:?}; dropping them"
            );
            registry::kill_all(registry);
            connections.abort_all();
            // $disconnect of the dropped sockets runs in memory: a moment is plenty.
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.tracker.wait()).await;
        }
        for task in background {
            task.abort();
        }
        Ok(())
    }
}

/// Runs one local event as Lambda runs an invocation: in its root span, through the same wrapper
/// (a failure marks the span as an error and is logged there).
pub(crate) async fn invoke<T>(
    function: Function,
    request_id: &str,
    trace_header: Option<&str>,
    work: impl Future<Output = Result<T, lambda::HandlerError>>,
) -> Result<T, lambda::HandlerError> {
    let span = telemetry::invocation_span(function.name(), request_id, false);
    telemetry::begin(&span, trace_header);
    telemetry::invoked(span, work).await
}

/// The shard queue's event source mapping: each job to `fanout`, as Lambda would invoke it.
async fn serve_shards(shared: Arc<Shared>) {
    let queue = shared.queue.clone();
    memory::serve(queue, move |event, message_id| {
        let shared = shared.clone();
        async move {
            let work = async {
                Ok::<_, lambda::HandlerError>(
                    lambda::shards(&shared.chat, event, shared.deadline()).await,
                )
            };
            invoke(Function::Fanout, &message_id, None, work).await
        }
    })
    .await;
}

/// The stack's schedule: `cleanup` every `interval`.
async fn run_cleanup(shared: Arc<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; the schedule's is not
    loop {
        ticks.tick().await;
        let work = lambda::cleanup(&shared.chat, shared.deadline());
        // A failure is logged in the invocation's span, and the next tick tries again.
        let _ = invoke(Function::Cleanup, &events::gateway_id(), None, work).await;
    }
}
