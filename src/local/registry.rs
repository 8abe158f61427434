//! The live sockets of the local gateway: the peers of its `@connections` in memory.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::adapters::memory::{MemoryConnectionApi, Peer};
use crate::ports::{ConnectionInfo, Outcome};

/// What the gateway sends down a socket, in order.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(Utf8Bytes),
    Binary(Bytes),
    Close {
        code: u16,
        reason: &'static str,
    },
    /// Flush what the websocket library has buffered (the pongs it answers pings with), then
    /// count these bytes as paid.
    Flush(usize),
}

impl Outbound {
    /// The bytes this puts on the wire, near enough: payload and frame header.
    pub(crate) fn wire_bytes(&self) -> usize {
        const HEADER: usize = 14;
        match self {
            Outbound::Text(text) => text.len() + HEADER,
            Outbound::Binary(bytes) => bytes.len() + HEADER,
            Outbound::Close { reason, .. } => reason.len() + 2 + HEADER,
            Outbound::Flush(owed) => *owed,
        }
    }
}

/// Bytes owed to one client: queued frames and unflushed pongs. The writer pays them off.
#[derive(Debug, Default)]
pub(crate) struct Owed(AtomicUsize);

impl Owed {
    pub(crate) fn paid(&self, bytes: usize) {
        self.0.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One established connection.
#[derive(Debug)]
pub struct Socket {
    outbound: mpsc::Sender<Outbound>,
    /// Bytes queued for the client and not yet written, pongs included.
    owed: Arc<Owed>,
    max_owed: usize,
    /// Cancelled when the client cannot keep up, or at shutdown: the socket is dropped without
    /// ceremony, for the reason in `killed`.
    pub(crate) kill: CancellationToken,
    killed: OnceLock<(u16, &'static str)>,
    connected_at: DateTime<Utc>,
    last_active_millis: AtomicI64,
    source_ip: Option<String>,
    user_agent: Option<String>,
}

impl Socket {
    pub(crate) fn new(
        outbound: mpsc::Sender<Outbound>,
        owed: Arc<Owed>,
        max_owed: usize,
        connected_at: DateTime<Utc>,
        source_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Self {
        Socket {
            outbound,
            owed,
            max_owed,
            kill: CancellationToken::new(),
            killed: OnceLock::new(),
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

    /// Queues a frame. A client that lets its queue fill up (in frames or in bytes) is too slow
    /// to serve: it is dropped, as API Gateway drops clients that do not read, rather than
    /// buffering without bound.
    pub(crate) fn send(&self, frame: Outbound) -> Outcome<()> {
        let bytes = frame.wire_bytes();
        let owed = self.owed.0.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if owed > self.max_owed {
            self.owed.paid(bytes);
            self.not_reading();
            return Outcome::Gone;
        }
        match self.outbound.try_send(frame) {
            Ok(()) => {
                self.touch();
                Outcome::Done(())
            }
            Err(TrySendError::Full(_)) => {
                self.owed.paid(bytes);
                self.not_reading();
                Outcome::Gone
            }
            Err(TrySendError::Closed(_)) => {
                self.owed.paid(bytes);
                Outcome::Gone
            }
        }
    }

    /// The websocket library answers every ping with a pong by itself: those bytes are owed to
    /// the client too, and a flush in the queue pays them once they are written.
    pub(crate) fn owe_pong(&self, payload_bytes: usize) -> Outcome<()> {
        self.send(Outbound::Flush(payload_bytes + 2))
    }

    fn not_reading(&self) {
        if !self.kill.is_cancelled() {
            tracing::warn!("a client is not reading its frames; dropping it");
        }
        self.kill(1008, "the client did not read its frames");
    }

    /// Drops the socket at once; `$disconnect` reports `code` and `reason`.
    pub(crate) fn kill(&self, code: u16, reason: &'static str) {
        let _ = self.killed.set((code, reason));
        self.kill.cancel();
    }

    /// Why the socket was killed, if it was.
    pub(crate) fn killed(&self) -> Option<(u16, &'static str)> {
        self.killed.get().copied()
    }
}

/// The sockets of the local gateway: `@connections` in memory, with the sockets as its peers.
/// The routes post through it, and so do the HTTP `@connections` endpoints.
pub type Registry = MemoryConnectionApi<Socket>;

/// Closes every socket (server shutdown).
pub(crate) fn close_all(registry: &Registry, code: u16, reason: &'static str) {
    for (_, socket) in registry.peers() {
        socket.send(Outbound::Close { code, reason });
    }
}

/// Drops every socket at once (shutdown, once the grace is over).
pub(crate) fn kill_all(registry: &Registry) {
    for (_, socket) in registry.peers() {
        socket.kill(1001, "server shutdown");
    }
}

impl Peer for Socket {
    fn deliver(&self, data: Bytes) -> Outcome<()> {
        // API Gateway sends text frames; bytes that are not UTF-8 can only go as a binary frame.
        let frame = if std::str::from_utf8(&data).is_ok() {
            Outbound::Text(Utf8Bytes::try_from(data).expect("checked to be UTF-8"))
        } else {
            Outbound::Binary(data)
        };
        self.send(frame)
    }

    fn info(&self) -> Option<ConnectionInfo> {
        let last_active = self.last_active_millis.load(Ordering::Relaxed);
        Some(ConnectionInfo {
            connected_at: self.connected_at,
            last_active_at: DateTime::from_timestamp_millis(last_active)
                .unwrap_or(self.connected_at),
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
        })
    }

    fn close(&self, code: u16, reason: &'static str) -> Outcome<()> {
        self.send(Outbound::Close { code, reason })
    }
}
