//! The live sockets, by connection id: the local gateway's management API. It implements the
//! [`ConnectionApi`] port directly, and the HTTP `@connections` endpoints call it too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::ports::{ApiError, ConnectionApi, ConnectionInfo, Outcome};

/// What the gateway sends down a socket, in order.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(Utf8Bytes),
    Binary(Bytes),
    Close { code: u16, reason: &'static str },
}

/// One established connection.
#[derive(Debug)]
pub(crate) struct Socket {
    outbound: mpsc::Sender<Outbound>,
    /// Cancelled when the client cannot keep up: the socket is dropped without ceremony.
    pub(crate) kill: CancellationToken,
    connected_at: DateTime<Utc>,
    last_active_millis: AtomicI64,
    source_ip: Option<String>,
    user_agent: Option<String>,
}

impl Socket {
    pub(crate) fn new(
        outbound: mpsc::Sender<Outbound>,
        connected_at: DateTime<Utc>,
        source_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Self {
        Socket {
            outbound,
            kill: CancellationToken::new(),
            connected_at,
            last_active_millis: AtomicI64::new(connected_at.timestamp_millis()),
            source_ip,
            user_agent,
        }
    }

    pub(crate) fn touch(&self) {
        self.last_active_millis
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Queues a frame. A client that lets its queue fill up is too slow to serve: it is dropped,
    /// as API Gateway drops clients that do not read, rather than buffering without bound.
    pub(crate) fn send(&self, frame: Outbound) -> Outcome<()> {
        match self.outbound.try_send(frame) {
            Ok(()) => {
                self.touch();
                Outcome::Done(())
            }
            Err(TrySendError::Full(_)) => {
                tracing::warn!("a client is not reading its frames; dropping it");
                self.kill.cancel();
                Outcome::Gone
            }
            Err(TrySendError::Closed(_)) => Outcome::Gone,
        }
    }

    fn info(&self) -> ConnectionInfo {
        let last_active = self.last_active_millis.load(Ordering::Relaxed);
        ConnectionInfo {
            connected_at: self.connected_at,
            last_active_at: DateTime::from_timestamp_millis(last_active)
                .unwrap_or(self.connected_at),
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// The sockets of the local gateway.
#[derive(Debug)]
pub struct Registry {
    sockets: RwLock<HashMap<String, Arc<Socket>>>,
    max_payload_bytes: usize,
}

impl Registry {
    pub(crate) fn new(max_payload_bytes: usize) -> Self {
        Registry {
            sockets: RwLock::new(HashMap::new()),
            max_payload_bytes,
        }
    }

    pub(crate) fn insert(&self, connection_id: &str, socket: Arc<Socket>) {
        self.write().insert(connection_id.to_owned(), socket);
    }

    pub(crate) fn remove(&self, connection_id: &str) {
        self.write().remove(connection_id);
    }

    fn get(&self, connection_id: &str) -> Option<Arc<Socket>> {
        self.sockets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(connection_id)
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Socket>>> {
        self.sockets
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many sockets are established.
    pub fn len(&self) -> usize {
        self.sockets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every socket (server shutdown).
    pub(crate) fn close_all(&self, code: u16, reason: &'static str) {
        let sockets: Vec<Arc<Socket>> = self
            .sockets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect();
        for socket in sockets {
            socket.send(Outbound::Close { code, reason });
        }
    }
}

impl ConnectionApi for Registry {
    async fn post(&self, connection_id: &str, data: Bytes) -> Result<Outcome<()>, ApiError> {
        if data.len() > self.max_payload_bytes {
            return Err(ApiError::PayloadTooLarge);
        }
        let Some(socket) = self.get(connection_id) else {
            return Ok(Outcome::Gone);
        };
        // API Gateway sends text frames; bytes that are not UTF-8 can only go as a binary frame.
        let frame = if std::str::from_utf8(&data).is_ok() {
            Outbound::Text(Utf8Bytes::try_from(data).expect("checked to be UTF-8"))
        } else {
            Outbound::Binary(data)
        };
        Ok(socket.send(frame))
    }

    async fn describe(&self, connection_id: &str) -> Result<Outcome<ConnectionInfo>, ApiError> {
        Ok(match self.get(connection_id) {
            Some(socket) => Outcome::Done(socket.info()),
            None => Outcome::Gone,
        })
    }

    async fn delete(&self, connection_id: &str) -> Result<Outcome<()>, ApiError> {
        Ok(match self.get(connection_id) {
            Some(socket) => socket.send(Outbound::Close {
                code: 1000,
                reason: "connection deleted",
            }),
            None => Outcome::Gone,
        })
    }
}
