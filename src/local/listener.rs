//! The HTTP side of the local gateway: accepting connections within a bound, hyper's header
//! timeout, and, at the bound, making room for a newcomer by closing a connection that is not
//! doing its part: one that has sent no request yet, or else the oldest one busy with a request
//! for longer than the header timeout (a body sent a byte at a time, responses never read).
//! Websockets, once upgraded, leave this bookkeeping: they are bounded by what they are owed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One client connection's hold on the connection bound, shared by its HTTP connection and,
/// after an upgrade, its websocket: the slot frees when both are done.
#[derive(Clone)]
pub(crate) struct Slot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// How long a newcomer waits for the slot of the connection it evicted.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// What the accept loop needs to know.
pub(crate) struct Rules {
    /// Connections held at once.
    pub max_connections: usize,
    /// How long a request's headers may take; also how long a connection may be busy with a
    /// request before it may be evicted at the bound.
    pub header_timeout: Duration,
}

/// Accepts connections and serves `app` on them until `shutdown` completes; returns the
/// connections still open, which end when `closing` is cancelled (gracefully) or are aborted.
pub(crate) async fn accept(
    listener: TcpListener,
    app: Router,
    rules: Rules,
    closing: CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(rules.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(rules.header_timeout);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let waiting = Waiting::default();
    let mut refused = 0u64;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tracing::warn!(%error, "could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let slot = match slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) if waiting.evict(rules.header_timeout) => {
                        tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
                            .await
                            .ok()
                            .and_then(Result::ok)
                    }
                    Err(_) => None,
                };
                let Some(slot) = slot else {
                    refused += 1;
                    // every refusal at info; a warning as their count doubles
                    tracing::info!(%peer, limit = rules.max_connections, "connection refused: too many connections (--max-connections)");
                    if refused.is_power_of_two() {
                        tracing::warn!(limit = rules.max_connections, refused, "too many connections; closing new ones");
                    }
                    continue; // dropping the stream closes it
                };
                let _ = stream.set_nodelay(true);
                let slot = Slot(Arc::new(slot));
                let (key, hold) = waiting.add();
                let service = service(app.clone(), peer, slot.clone(), hold.clone());
                let connection = http
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let closed = closing.clone();
                let waiting = waiting.clone();
                connections.spawn(async move {
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        biased;
                        () = hold.evicted.cancelled() => {}
                        () = closed.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                        _ = connection.as_mut() => {}
                    }
                    waiting.remove(key);
                    drop(slot);
                });
            }
        }
    }
    connections
}

/// The router for one connection, with what axum's `ConnectInfo` and the socket's [`Slot`]
/// read from each request. A connection evicted just as its request arrived gets 503.
fn service(
    app: Router,
    peer: SocketAddr,
    slot: Slot,
    hold: Arc<Hold>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let admitted = hold.begin_request();
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(slot.clone());
        let mut app = app.clone();
        async move {
            if !admitted {
                tracing::info!(%peer, "request refused: its connection gave its place to a newer one at the connection bound");
                return Ok((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections: this one gave its place to a newer one; try again\n",
                )
                    .into_response());
            }
            tower_service::Service::call(&mut app, request).await
        }
    })
}

/// The HTTP connections, in the order they came.
#[derive(Clone, Default)]
struct Waiting(Arc<Mutex<Arrivals>>);

#[derive(Default)]
struct Arrivals {
    last: u64,
    open: BTreeMap<u64, Arc<Hold>>,
}

/// Where one HTTP connection is: it has sent no request yet, or is busy since `busy_since`,
/// or was evicted.
struct Hold {
    state: AtomicU8,
    busy_since: Mutex<Instant>,
    evicted: CancellationToken,
}

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const EVICTED: u8 = 2;

impl Hold {
    /// Marks a request begun; `false` if the connection was evicted first.
    fn begin_request(&self) -> bool {
        match self
            .state
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                *self.busy_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                true
            }
            Err(state) => state != EVICTED,
        }
    }

    /// Evicts the connection if it is in `from`; whether it was.
    fn evict_if(&self, from: u8) -> bool {
        let evicted = self
            .state
            .compare_exchange(from, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if evicted {
            self.evicted.cancel();
        }
        evicted
    }
}

impl Waiting {
    fn lock(&self) -> MutexGuard<'_, Arrivals> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self) -> (u64, Arc<Hold>) {
        let mut arrivals = self.lock();
        arrivals.last += 1;
        let key = arrivals.last;
        let hold = Arc::new(Hold {
            state: AtomicU8::new(IDLE),
            busy_since: Mutex::new(Instant::now()),
            evicted: CancellationToken::new(),
        });
        arrivals.open.insert(key, hold.clone());
        (key, hold)
    }

    fn remove(&self, key: u64) {
        self.lock().open.remove(&key);
    }

    /// Closes the oldest connection that has sent no request, or else the one busy with a
    /// request the longest, if longer than `patience`; whether one was closed.
    fn evict(&self, patience: Duration) -> bool {
        let mut arrivals = self.lock();
        let idle = arrivals
            .open
            .iter()
            .find(|(_, hold)| hold.evict_if(IDLE))
            .map(|(key, _)| *key);
        let key = idle.or_else(|| {
            let now = Instant::now();
            arrivals
                .open
                .iter()
                .filter(|(_, hold)| {
                    let since = *hold.busy_since.lock().unwrap_or_else(|p| p.into_inner());
                    now.duration_since(since) > patience
                })
                .min_by_key(|(_, hold)| *hold.busy_since.lock().unwrap_or_else(|p| p.into_inner()))
                .filter(|(_, hold)| hold.evict_if(BUSY))
                .map(|(key, _)| *key)
        });
        let evicted = key.and_then(|key| arrivals.open.remove(&key)).is_some();
        if evicted {
            tracing::info!(
                "a connection with no request yet (or a slow one) was closed to make room at the connection bound (--max-connections)"
            );
        }
        evicted
    }
}

/// The open-file limit less a reserve (for the listener, logs and span export), at most 10 000.
pub(crate) fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    soft.saturating_sub(32).clamp(1, 10_000)
}
