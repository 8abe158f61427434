//! One websocket connection, as API Gateway runs it: `$connect` before the handshake completes,
//! every frame routed by `$request.body.action`, API Gateway's limits (frame and message size, idle
//! and maximum duration), and `$disconnect` however the connection ends.
//!
//! Two tasks per connection (axum's chat example): this one reads frames and runs routes; a writer
//! drains the outbound queue, so a route that posts to its own sender never waits on itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::Request;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::listener::Slot;
use super::registry::{Outbound, Owed, Socket};
use super::{Shared, invoke};
use crate::lambda::events::{ConnectionMeta, Kind, gateway_id, websocket_event};
use crate::lambda::{self, Function};
use crate::protocol::{RouteKey, select_route};

/// tungstenite's read buffer is allocated up front for every socket and defaults to 128 KiB; chat
/// frames are small, and 10 000 idle clients should not cost 1.3 GB.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// How long a closing socket may take to flush its last frames.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// How long a close the server began waits for the client's close, reading what it still sends.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// `GET /` with an upgrade: run `$connect`, and complete the handshake only if it answers 200.
pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<Vec<(String, String)>>,
    slot: Option<Extension<Slot>>,
    mut request: Request,
) -> Response {
    let headers = request.headers().clone();
    if !asks_for_websocket(&headers) {
        return not_a_websocket();
    }
    if shared.closing.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let accept = match handshake(&headers) {
        Ok(accept) => accept,
        Err(refusal) => return *refusal, // logged by `handshake`, with its reason
    };
    let Some(upgrading) = request.extensions_mut().remove::<OnUpgrade>() else {
        return (
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded\n",
        )
            .into_response();
    };
    let mut connection = ConnectionMeta {
        connection_id: gateway_id(),
        connected_at: Utc::now(),
        source_ip: Some(peer.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        authorizer: Default::default(),
    };
    if let Some(authorizer) = &shared.authorizer {
        let method_arn = format!(
            "arn:aws:execute-api:local:123456789012:{}/{}/$connect",
            shared.stage.api_id, shared.stage.stage
        );
        let id = connection.connection_id.clone();
        let work = async {
            Ok::<_, lambda::HandlerError>(
                authorizer
                    .authorize(&id, &headers, &query, method_arn)
                    .await,
            )
        };
        match invoke(Function::Authorize, &gateway_id(), None, work).await {
            Ok(Ok(identity)) => connection.authorizer = super::auth::request_context(&identity),
            Ok(Err(denied)) => {
                // as API Gateway: 401, nothing registered, nothing stored; why, in the log
                tracing::info!(connection_id = %id, status = 401, reason = %denied, "handshake refused: unauthorized");
                return super::auth::unauthorized();
            }
            Err(_) => return super::auth::unauthorized(),
        }
    }
    let event = websocket_event(
        &shared.stage,
        &connection,
        Kind::Connect {
            headers: &headers,
            query: &query,
        },
    );
    // The socket is registered before $connect runs, so frames posted to it from then on (the
    // welcome, above all) queue up and reach the client once the handshake completes. API
    // Gateway answers 410 in that window instead, and `post` retries.
    let id = connection.connection_id.clone();
    let (outbound, queue) = mpsc::channel(shared.config.outbound_queue.max(1));
    let owed = Arc::new(Owed::default());
    let socket = Arc::new(Socket::new(
        outbound,
        owed.clone(),
        shared.config.max_outbound_bytes,
        connection.connected_at,
        connection.source_ip.clone(),
        connection.user_agent.clone(),
    ));
    shared.registry.insert(&id, socket.clone());
    let work = lambda::websocket(&shared.chat, RouteKey::Connect, &event, shared.deadline());
    let answer = invoke(
        Function::serving(RouteKey::Connect),
        request_id(&event),
        None,
        work,
    )
    .await;
    let (status, body, protocol) = match answer {
        Ok(response) => {
            // the subprotocol $connect's answer names goes into the handshake, as in AWS
            let protocol = response
                .headers
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .cloned();
            (response.status_code, response.body, protocol)
        }
        Err(_) => (500, None, None), // logged in the invocation's span
    };
    if status != 200 {
        shared.registry.remove(&id);
        return refused_connect(&id, status, body);
    }

    let limits = &shared.config.limits;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_frame_size(Some(limits.max_frame_bytes))
        .max_message_size(Some(limits.max_message_bytes))
        // Frames go out as soon as they are written; what the library may buffer (pongs above
        // all) is capped, and the client is dropped once it owes more than that (see `Owed`).
        .write_buffer_size(0)
        .max_write_buffer_size(shared.config.max_outbound_bytes.max(1));
    let tracker = shared.tracker.clone();
    tracker.spawn(async move {
        match upgrading.await {
            Ok(upgraded) => {
                let websocket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(&shared, websocket, connection, socket, queue, owed).await;
            }
            Err(error) => {
                tracing::warn!(connection_id = %connection.connection_id, %error, "the websocket handshake failed after $connect");
                shared.registry.remove(&connection.connection_id);
                disconnect(&shared, &connection, 1006, "handshake failed".into()).await;
            }
        }
        drop(slot);
    });
    let mut switching = (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, "websocket".to_owned()),
            (header::CONNECTION, "Upgrade".to_owned()),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response();
    if let Some(protocol) = protocol {
        switching
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    switching
}

/// `GET /{stage}`: the shape of a deployed URL (`wss://…/stage`), served as `/` when the stage is
/// ours.
pub(crate) async fn upgrade_at_stage(
    axum::extract::Path(stage): axum::extract::Path<String>,
    state: State<Arc<Shared>>,
    peer: ConnectInfo<SocketAddr>,
    query: Query<Vec<(String, String)>>,
    slot: Option<Extension<Slot>>,
    request: Request,
) -> Response {
    if stage != state.stage.stage {
        return super::not_found(state, request).await;
    }
    upgrade(state, peer, query, slot, request).await
}

/// `$connect` answered `status`, not 200: the handshake is refused with that status, and with the
/// route's answer (its JSON error frame: a bad `name`, say) as the body, or a line that says what
/// happened; the reason goes to the log too.
fn refused_connect(
    connection_id: &str,
    status: i64,
    body: Option<aws_lambda_events::encodings::Body>,
) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match body {
        Some(aws_lambda_events::encodings::Body::Text(text)) => text,
        Some(aws_lambda_events::encodings::Body::Binary(bytes)) => {
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ if status.is_server_error() => {
            "the connection could not be set up (the server's log says why); try again\n".into()
        }
        _ => format!("$connect refused the connection ({status})\n"),
    };
    tracing::info!(
        route = "$connect",
        connection_id,
        status = status.as_u16(),
        reason = %body.trim_end(),
        "handshake refused"
    );
    let kind = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    (status, [(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Checks an upgrade request as RFC 6455 (section 4.2.1) asks; the `Sec-WebSocket-Accept` to
/// answer with, or the refusal: 426 naming the version we speak when the version is wrong
/// (section 4.4), 400 for anything else missing.
fn handshake(headers: &HeaderMap) -> Result<String, Box<Response>> {
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|value| value.to_str().ok());
    if version.map(str::trim) != Some("13") {
        tracing::info!(
            status = 426,
            version = version.unwrap_or("none"),
            "handshake refused: this server speaks websocket version 13"
        );
        return Err(Box::new(
            (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "this server speaks websocket version 13 (RFC 6455)\n",
            )
                .into_response(),
        ));
    }
    let bad = |what: &str| {
        tracing::info!(
            status = 400,
            reason = what,
            "handshake refused: not a websocket upgrade"
        );
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("not a websocket upgrade: {what}\n"),
            )
                .into_response(),
        )
    };
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(bad("`Connection` must include `Upgrade`"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| key.as_bytes())
        .filter(|key| {
            base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_ok_and(|nonce| nonce.len() == 16)
        })
        .ok_or_else(|| bad("`Sec-WebSocket-Key` must be 16 bytes in base64"))?;
    Ok(derive_accept_key(key))
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| {
            value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
}

/// The chat page (`web/index.html`): one self-contained file, no build step. It connects back to
/// the address it was served from, or to any `ws://` / `wss://` URL given in the page.
const PAGE: &str = include_str!("../../web/index.html");

/// Whether the request asks for a websocket (`Upgrade: websocket`), well-formed or not.
fn asks_for_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

/// A plain `GET /` (no upgrade) gets the chat page, as serverless-offline-style tools do.
fn not_a_websocket() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // the page's own script and styles only; it may connect to any websocket server, and ask its
            // own server for a dev token
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// An upgraded connection.
type Socketed = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why a connection ended, as `$disconnect` reports it, and whether the server closed it.
struct Ended {
    code: u16,
    reason: String,
    by_server: bool,
}

impl Ended {
    /// The client closed the connection, or lost it.
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Ended {
            code,
            reason: reason.into(),
            by_server: false,
        }
    }

    /// The server closed it: a limit, a rule broken, DeleteConnection, shutdown.
    fn by_server(code: u16, reason: impl Into<String>) -> Self {
        Ended {
            by_server: true,
            ..Ended::new(code, reason)
        }
    }
}

async fn serve(
    shared: &Arc<Shared>,
    websocket: Socketed,
    connection: ConnectionMeta,
    socket: Arc<Socket>,
    queue: mpsc::Receiver<Outbound>,
    owed: Arc<Owed>,
) {
    let id = connection.connection_id.clone();
    let (sink, mut frames) = websocket.split();
    let max_frame = shared.config.limits.max_frame_bytes.max(1);
    let mut writer = tokio::spawn(write(sink, queue, owed, max_frame));
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
                    Some(Err(error)) => match violation(&error) {
                        Some((code, reason)) => {
                            socket.send(Outbound::Close { code, reason });
                            break Ended::by_server(code, reason);
                        }
                        None => break Ended::new(1006, format!("read error: {error}")),
                    },
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
                    // The library has queued a pong already; past the byte cap, the kill below.
                    Message::Ping(payload) => {
                        socket.owe_pong(payload.len());
                    }
                    Message::Pong(_) => {}
                    Message::Frame(_) => {} // never read: the library assembles messages
                    Message::Close(frame) => {
                        break match frame {
                            Some(CloseFrame { code, reason }) => Ended::new(code.into(), reason.as_str()),
                            None => Ended::new(1005, "closed by the client"),
                        };
                    }
                }
            }
            () = sleep_until(idle_at) => {
                socket.send(Outbound::Close { code: 1001, reason: "Going away" });
                break Ended::by_server(1001, "idle timeout");
            }
            () = sleep_until(closes_at) => {
                socket.send(Outbound::Close { code: 1001, reason: "Going away" });
                break Ended::by_server(1001, "maximum connection duration");
            }
            () = socket.kill.cancelled() => {
                let (code, reason) = socket.killed().unwrap_or((1008, "dropped"));
                break Ended::by_server(code, reason);
            }
            // The server closed the socket (DeleteConnection, shutdown): it is closed now, whether
            // or not the client ever answers the close frame.
            written = &mut writer => {
                writer_done = true;
                break match written {
                    Ok(Some((code, reason))) => Ended::by_server(code, reason),
                    _ => Ended::new(1006, "the connection was lost"),
                };
            }
        }
    };

    // From here posts to this id answer 410, as API Gateway's do once a connection has closed.
    shared.registry.remove(&id);
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
    if ended.by_server {
        tracing::info!(connection_id = %id, code = ended.code, reason = %ended.reason, "closed by the server");
    } else {
        tracing::debug!(connection_id = %id, code = ended.code, reason = %ended.reason, "closed by the client");
    }
    disconnect(shared, &connection, ended.code, ended.reason).await;
    // A close the server began: read (and drop) what the client still sends until its close
    // answers ours, for a moment at most. Dropping the socket with the client's frames unread
    // would send a TCP reset, and a reset can make the client discard the frames before the
    // close (the refusal that says why) and the close itself, seeing 1006.
    if ended.by_server && !killed && writer_done {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(frame)) = frames.next().await {
                if frame.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}

/// Drains the outbound queue into the socket until a close frame (whose code it returns) or a
/// dead socket, paying off what the client is owed as bytes are written.
async fn write(
    mut sink: futures_util::stream::SplitSink<Socketed, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    owed: Arc<Owed>,
    max_frame: usize,
) -> Option<(u16, &'static str)> {
    let mut closed = None;
    while let Some(frame) = queue.recv().await {
        let bytes = frame.wire_bytes();
        let sent = match frame {
            Outbound::Flush(_) => sink.flush().await,
            // Like API Gateway, a message over the frame size goes out in frames of at most
            // that size ("this applies to @connections commands": AWS's quota table).
            Outbound::Text(text) if text.len() > max_frame => {
                send_fragmented(&mut sink, OpData::Text, Bytes::from(text), max_frame).await
            }
            Outbound::Binary(data) if data.len() > max_frame => {
                send_fragmented(&mut sink, OpData::Binary, data, max_frame).await
            }
            Outbound::Text(text) => sink.send(Message::Text(text)).await,
            Outbound::Binary(data) => sink.send(Message::Binary(data)).await,
            Outbound::Close { code, reason } => {
                let close = Message::Close(Some(CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                }));
                let _ = sink.send(close).await;
                closed = Some((code, reason));
                break;
            }
        };
        if sent.is_err() {
            break;
        }
        owed.paid(bytes);
    }
    let _ = sink.close().await;
    closed
}

/// One message as a first frame and continuation frames, each at most `max_frame` bytes.
async fn send_fragmented(
    sink: &mut futures_util::stream::SplitSink<Socketed, Message>,
    kind: OpData,
    data: Bytes,
    max_frame: usize,
) -> Result<(), tungstenite::Error> {
    let chunks = data.len().div_ceil(max_frame);
    for index in 0..chunks {
        let chunk = data.slice(index * max_frame..((index + 1) * max_frame).min(data.len()));
        let opcode = if index == 0 {
            OpCode::Data(kind)
        } else {
            OpCode::Data(OpData::Continue)
        };
        let last = index + 1 == chunks;
        sink.feed(Message::Frame(Frame::message(chunk, opcode, last)))
            .await?;
    }
    sink.flush().await
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
    let work = lambda::websocket(&shared.chat, route, &event, shared.deadline());
    // A failure is logged in the invocation's span; the connection goes on.
    let _ = invoke(Function::serving(route), request_id(&event), None, work).await;
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
    let work = lambda::websocket(
        &shared.chat,
        RouteKey::Disconnect,
        &event,
        shared.deadline(),
    );
    let _ = invoke(
        Function::serving(RouteKey::Disconnect),
        request_id(&event),
        None,
        work,
    )
    .await;
}

fn request_id(event: &aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest) -> &str {
    event
        .request_context
        .request_id
        .as_deref()
        .unwrap_or_default()
}

/// The close code and reason for a client that broke the rules: a frame or message over API
/// Gateway's size limits (1009), text that is not UTF-8 (1007), or a violation of RFC 6455 such
/// as an unmasked frame, reserved bits or an unknown opcode (1002). `None` for an I/O error.
fn violation(error: &tungstenite::Error) -> Option<(u16, &'static str)> {
    use tungstenite::error::ProtocolError;
    match error {
        // The client went away without a close frame: a lost connection (1006), not a violation.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Capacity(_) => Some((1009, "Message too big")),
        tungstenite::Error::Utf8(_) => Some((1007, "Invalid UTF-8 in a text frame")),
        tungstenite::Error::Protocol(_) => Some((1002, "Protocol error")),
        _ => None,
    }
}
