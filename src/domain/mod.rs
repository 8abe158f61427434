//! The domain: what each route does, as plain async functions over the [ports](crate::ports).
//!
//! One method of [`Chat`] per route (`connect`, `disconnect`, `default`, `broadcast`, `list`,
//! `chat`, `post`, `cleanup`), in [`routes`]. They never see an AWS type or an HTTP status: the
//! [Lambda glue](crate::lambda) translates events in and responses out, and the same code runs in
//! Lambda and in `webchat-local`.
//!
//! Client mistakes are answered to the client as `{"type":"error"}` frames and are not errors here;
//! a [`RouteError`] means the infrastructure failed (the client is told `internal`).

mod fanout;
mod routes;

use std::sync::Arc;
use std::time::Duration;

pub use fanout::{Backoff, FanOut};
pub use routes::{CleanupReport, ConnectError};

use crate::ports::{ApiError, BusError, Clock, StoreError};

/// The tunables of the routes. The defaults suit Lambda with a 128-1024 MB function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How many `@connections` calls a fan-out keeps in flight. A call is network-bound (tens of
    /// ms), so concurrency decides fan-out time until signing and HTTP work saturate the CPU:
    /// `cargo bench --bench fanout` reaches 10 000 connections at 20 ms a call fastest at 512
    /// on one core (0.69-0.81 s; 256: 0.93 s; 1024: 0.85-0.96 s).
    pub fanout_concurrency: usize,
    /// Retries of a throttled (429) `@connections` call.
    pub throttle_backoff: Backoff,
    /// API Gateway establishes a connection only after `$connect` returns, so the welcome can
    /// arrive first and get 410: `post` retries 410 within this budget before giving up.
    pub welcome_backoff: Backoff,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fanout_concurrency: 512,
            throttle_backoff: Backoff {
                attempts: 5,
                base: Duration::from_millis(50),
                max: Duration::from_secs(1),
            },
            welcome_backoff: Backoff {
                attempts: 8,
                base: Duration::from_millis(25),
                max: Duration::from_millis(1000),
            },
        }
    }
}

/// The routes, bound to their ports.
pub struct Chat<S, A, B> {
    pub store: S,
    pub api: A,
    pub bus: B,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
}

/// The infrastructure failed while serving a route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Bus(#[from] BusError),
}
