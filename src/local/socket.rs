//! One websocket connection, as API Gateway runs it: `$connect` before the handshake completes,
//! every frame routed by `$request.body.action`, API Gateway's limits (frame and message size, idle
//! and maximum duration), and `$disconnect` however the connection ends.
//!
//! Two tasks per connection (axum's chat example): this one reads frames and runs routes; a writer
//! drains the outbound queue, so a route that posts to its own sender never waits on itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::Shared;
use super::events::{ConnectionMeta, Kind, gateway_id, websocket_event};
use super::registry::{Outbound, Socket};
use crate::lambda;
use crate::protocol::{RouteKey, select_route};
use tracing::Instrument;

/// tungstenite's read buffer is allocated up front for every socket and defaults to 128 KiB; chat
/// frames are small, and 10 000 idle clients should not cost 1.3 GB.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// How long a closing socket may take to flush its last frames.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// `GET /` with an upgrade: run `$connect`, and complete the handshake only if it answers 200.
pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) => return not_a_websocket(),
    };
    let connection = ConnectionMeta {
        connection_id: gateway_id(),
        connected_at: Utc::now(),
        source_ip: Some(peer.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    };
    let event = websocket_event(
        &shared.stage,
        &connection,
        Kind::Connect {
            headers: &headers,
            query: &query,
        },
    );
    // The socket is registered before $connect runs, so frames posted to it from then on (the
    // welcome, above all) queue up and are the first the client reads. API Gateway answers 410
    // in that window instead, but its EventBridge hop outlasts the handshake, so in AWS too the
    // welcome comes first; in-process delivery is fast enough to race the handshake.
    let id = connection.connection_id.clone();
    let (outbound, queue) = mpsc::channel(shared.config.outbound_queue.max(1));
    let socket = Arc::new(Socket::new(
        outbound,
        connection.connected_at,
        connection.source_ip.clone(),
        connection.user_agent.clone(),
    ));
    shared.chat.api.insert(&id, socket.clone());
    let span = super::invocation("connect", request_id(&event), None);
    let status = match lambda::websocket(&shared.chat, RouteKey::Connect, &event, shared.deadline())
        .instrument(span)
        .await
    {
        Ok(response) => response.status_code,
        Err(error) => {
            tracing::error!(connection_id = %connection.connection_id, %error, "$connect failed");
            500
        }
    };
    if status != 200 {
        shared.chat.api.remove(&id);
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok());
        return status
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }

    let limits = &shared.config.limits;
    let on_failure = {
        let shared = shared.clone();
        let connection = connection.clone();
        move |error: axum::Error| {
            tracing::warn!(connection_id = %connection.connection_id, %error, "the websocket handshake failed after $connect");
            shared.chat.api.remove(&connection.connection_id);
            tokio::spawn(async move {
                disconnect(&shared, &connection, 1006, "handshake failed".into()).await
            });
        }
    };
    let token = shared.tracker.token();
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_frame_size(limits.max_frame_bytes)
        .max_message_size(limits.max_message_bytes)
        .on_failed_upgrade(on_failure)
        .on_upgrade(move |websocket| async move {
            serve(&shared, websocket, connection, socket, queue).await;
            drop(token);
        })
}

/// The chat page (`web/index.html`): one self-contained file, no build step. It connects back to
/// the address it was served from, or to any `ws://` / `wss://` URL given in the page.
const PAGE: &str = include_str!("../../web/index.html");

/// A plain `GET /` (no upgrade) gets the chat page, as serverless-offline-style tools do.
fn not_a_websocket() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // the page's own script and styles only; it may connect to any websocket server
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src ws: wss:; base-uri 'none'; form-action 'none'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// Why a connection ended, as `$disconnect` reports it.
struct Ended {
    code: u16,
    reason: String,
}

impl Ended {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Ended {
            code,
            reason: reason.into(),
        }
    }
}

async fn serve(
    shared: &Arc<Shared>,
    websocket: WebSocket,
    connection: ConnectionMeta,
    socket: Arc<Socket>,
    queue: mpsc::Receiver<Outbound>,
) {
    let id = connection.connection_id.clone();
    let (sink, mut frames) = websocket.split();
    let mut writer = tokio::spawn(write(sink, queue));
    tracing::debug!(connection_id = %id, "established");

    let limits = &shared.config.limits;
    let started = Instant::now();
    let closes_at = started + limits.max_duration;
    let mut idle_at = started + limits.idle_timeout;
    let mut writer_done = false;
    let ended = loop {
        tokio::select! {
            frame = frames.next() => {
                let frame = match frame {
                    None => break Ended::new(1006, "the connection was lost"),
                    Some(Err(error)) if is_too_big(&error) => {
                        socket.send(Outbound::Close { code: 1009, reason: "Message too big" });
                        break Ended::new(1009, "Message too big");
                    }
                    Some(Err(error)) => break Ended::new(1006, format!("read error: {error}")),
                    Some(Ok(frame)) => frame,
                };
                idle_at = Instant::now() + limits.idle_timeout;
                socket.touch();
                match frame {
                    Message::Text(text) => {
                        let route = select_route(&text);
                        route_frame(shared, &connection, route, text.to_string(), false).await;
                    }
                    Message::Binary(bytes) => {
                        let body = base64::engine::general_purpose::STANDARD.encode(&bytes);
                        route_frame(shared, &connection, RouteKey::Default, body, true).await;
                    }
                    Message::Ping(_) | Message::Pong(_) => {}
                    Message::Close(frame) => {
                        break match frame {
                            Some(CloseFrame { code, reason }) => Ended::new(code, reason.as_str()),
                            None => Ended::new(1005, "closed by the client"),
                        };
                    }
                }
            }
            () = sleep_until(idle_at) => {
                socket.send(Outbound::Close { code: 1001, reason: "Going away" });
                break Ended::new(1001, "idle timeout");
            }
            () = sleep_until(closes_at) => {
                socket.send(Outbound::Close { code: 1001, reason: "Going away" });
                break Ended::new(1001, "maximum connection duration");
            }
            () = socket.kill.cancelled() => break Ended::new(1008, "the client did not read its frames"),
            // The server closed the socket (DeleteConnection, shutdown): it is closed now, whether
            // or not the client ever answers the close frame.
            written = &mut writer => {
                writer_done = true;
                break match written {
                    Ok(Some((code, reason))) => Ended::new(code, reason),
                    _ => Ended::new(1006, "the connection was lost"),
                };
            }
        }
    };

    // From here posts to this id answer 410, as API Gateway's do once a connection has closed.
    shared.chat.api.remove(&id);
    let killed = socket.kill.is_cancelled();
    drop(socket);
    if !writer_done
        && (killed
            || tokio::time::timeout(FLUSH_GRACE, &mut writer)
                .await
                .is_err())
    {
        writer.abort();
    }
    disconnect(shared, &connection, ended.code, ended.reason).await;
}

/// Drains the outbound queue into the socket until a close frame (whose code it returns) or a
/// dead socket.
async fn write(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outbound>,
) -> Option<(u16, &'static str)> {
    let mut closed = None;
    while let Some(frame) = queue.recv().await {
        let message = match frame {
            Outbound::Text(text) => Message::Text(text),
            Outbound::Binary(bytes) => Message::Binary(bytes),
            Outbound::Close { code, reason } => {
                let close = Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }));
                let _ = sink.send(close).await;
                closed = Some((code, reason));
                break;
            }
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
    closed
}

async fn route_frame(
    shared: &Shared,
    connection: &ConnectionMeta,
    route: RouteKey,
    body: String,
    base64: bool,
) {
    let event = websocket_event(
        &shared.stage,
        connection,
        Kind::Message {
            route,
            body,
            base64,
        },
    );
    let function = match route {
        RouteKey::Default => "default",
        other => other.as_str(),
    };
    let span = super::invocation(function, request_id(&event), None);
    if let Err(error) = lambda::websocket(&shared.chat, route, &event, shared.deadline())
        .instrument(span)
        .await
    {
        tracing::error!(connection_id = %connection.connection_id, route = route.as_str(), %error, "route failed");
    }
}

pub(crate) async fn disconnect(
    shared: &Shared,
    connection: &ConnectionMeta,
    code: u16,
    reason: String,
) {
    let event = websocket_event(
        &shared.stage,
        connection,
        Kind::Disconnect {
            status_code: code,
            reason,
        },
    );
    let span = super::invocation("disconnect", request_id(&event), None);
    if let Err(error) = lambda::websocket(
        &shared.chat,
        RouteKey::Disconnect,
        &event,
        shared.deadline(),
    )
    .instrument(span)
    .await
    {
        tracing::error!(connection_id = %connection.connection_id, %error, "$disconnect failed");
    }
}

fn request_id(event: &aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest) -> &str {
    event
        .request_context
        .request_id
        .as_deref()
        .unwrap_or_default()
}

/// A frame or message over API Gateway's size limits.
fn is_too_big(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(tungstenite::Error::Capacity(_)) = current.downcast_ref::<tungstenite::Error>()
        {
            return true;
        }
        source = current.source();
    }
    false
}
