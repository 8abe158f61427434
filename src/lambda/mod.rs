//! The Lambda glue: events in the exact shapes API Gateway, EventBridge and SQS send, translated
//! into domain calls, and the domain's answers translated into API Gateway proxy responses and
//! SQS partial batch responses.
//!
//! These functions are what every Lambda binary runs, and what `webchat-local` feeds with the
//! events its emulated gateway builds, so the local path and the deployed path share everything
//! above the transport.

pub mod authorizer;
pub mod events;
#[cfg(feature = "aws")]
pub mod runtime;

/// The Lambda functions: one binary (`src/bin/<name>.rs`), one image and one function each.
/// The Pulumi program declares the same names (`pulumi/contract.json`, checked by a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// Serves an API Gateway route.
    Route(RouteKey),
    /// Delivers the welcome event the EventBridge rule hands it.
    Post,
    /// Removes stale records, on a schedule.
    Cleanup,
    /// Delivers the shard jobs of large broadcasts, from the shard queue.
    Fanout,
    /// Checks the token of a `$connect` (the API's REQUEST authorizer, with JWT auth).
    Authorize,
}

impl Function {
    pub const ALL: [Function; 13] = [
        Function::Route(RouteKey::Connect),
        Function::Route(RouteKey::Disconnect),
        Function::Route(RouteKey::Default),
        Function::Route(RouteKey::Broadcast),
        Function::Route(RouteKey::List),
        Function::Route(RouteKey::Chat),
        Function::Route(RouteKey::Join),
        Function::Route(RouteKey::Leave),
        Function::Route(RouteKey::History),
        Function::Post,
        Function::Cleanup,
        Function::Fanout,
        Function::Authorize,
    ];

    /// Its name: its binary's, its image's, and (after the stack's prefix) its function's.
    pub fn name(self) -> &'static str {
        match self {
            Function::Route(route) => route.as_str().trim_start_matches('$'),
            Function::Post => "post",
            Function::Cleanup => "cleanup",
            Function::Fanout => "fanout",
            Function::Authorize => "authorize",
        }
    }

    /// The API Gateway route it serves; `None` for `post`, `cleanup`, `fanout` and `authorize`.
    pub fn route(self) -> Option<RouteKey> {
        match self {
            Function::Route(route) => Some(route),
            Function::Post | Function::Cleanup | Function::Fanout | Function::Authorize => None,
        }
    }

    /// The function that serves an API Gateway route.
    pub fn serving(route: RouteKey) -> Function {
        Function::Route(route)
    }
}

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use base64::Engine;
use chrono::DateTime;
use serde_json::Value;

use crate::domain::{Admitted, Chat, CleanupReport, ConnectError, Deadline, RouteError, Sender};
use crate::ports::{ConnectionApi, ConnectionStore, EventBus, RoomStore, ShardJob};
use crate::protocol::{EVENT_SOURCE, RouteKey, WELCOME_DETAIL_TYPE, WelcomeDetail};

/// An invocation that cannot be served. Reported to the Lambda Runtime API as an invocation error;
/// the function goes on serving the next event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event lacks what the route needs: it did not come from the API or rule it was meant for.
    #[error("malformed event: {0}")]
    MalformedEvent(String),
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// Serves one API Gateway websocket event on `route`, the route this function is wired to,
/// before `deadline` (the invocation's).
pub async fn websocket<S, A, B, R>(
    chat: &Chat<S, A, B, R>,
    route: RouteKey,
    event: &ApiGatewayWebsocketProxyRequest,
    deadline: Deadline,
) -> Result<ApiGatewayProxyResponse, HandlerError>
where
    S: ConnectionStore,
    A: ConnectionApi,
    B: EventBus,
    R: RoomStore,
{
    let connection_id = event
        .request_context
        .connection_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| HandlerError::MalformedEvent("no requestContext.connectionId".into()))?;
    let span = tracing::Span::current();
    span.record("route", route.as_str());
    span.record("connection_id", connection_id);
    // the authorizer's context, on every route of a signed-in connection
    let identity = authorizer::identity_in(&event.request_context.authorizer.fields);
    let sender = Sender {
        connection_id,
        identity: identity.as_ref(),
    };
    let message_route = !matches!(route, RouteKey::Connect | RouteKey::Disconnect);
    if let Some(identity) = &identity
        && message_route
        && chat.clock.now().timestamp() > identity.expires_at
    {
        chat.expired(connection_id, deadline).await?;
        return Ok(response(200, None));
    }
    // the limits, before any work is done for the frame
    if message_route && chat.admit(sender, deadline).await? == Admitted::No {
        return Ok(response(200, None));
    }
    match route {
        RouteKey::Connect => {
            let name = event.query_string_parameters.first("name");
            let connected_at = Some(event.request_context.connected_at)
                .filter(|millis| *millis > 0)
                .and_then(DateTime::from_timestamp_millis);
            let connected = chat
                .connect(connection_id, name, identity.as_ref(), connected_at)
                .await;
            return match connected {
                Ok(_) => {
                    let mut answer = response(200, None);
                    // a browser that offered the subprotocol fails the handshake unless echoed
                    let offered = event
                        .headers
                        .get(authorizer::PROTOCOL_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .is_some_and(authorizer::offers_subprotocol);
                    if offered {
                        answer.headers.insert(
                            authorizer::PROTOCOL_HEADER,
                            http::HeaderValue::from_static(authorizer::SUBPROTOCOL),
                        );
                    }
                    Ok(answer)
                }
                Err(ConnectError::Refused(error)) => Ok(response(400, Some(error.to_frame()))),
                Err(ConnectError::TooMany(error)) => Ok(response(429, Some(error.to_frame()))),
                Err(ConnectError::Failed(error)) => Err(error.into()),
            };
        }
        RouteKey::Disconnect => chat.disconnect(connection_id, deadline).await?,
        RouteKey::Default => {
            let (frame, binary) = body_bytes(event);
            chat.default(connection_id, &frame, binary, deadline)
                .await?
        }
        RouteKey::Broadcast => chat.broadcast(sender, &body_text(event), deadline).await?,
        RouteKey::List => chat.list(sender, &body_text(event), deadline).await?,
        RouteKey::Chat => chat.chat(sender, &body_text(event), deadline).await?,
        RouteKey::Join => chat.join(sender, &body_text(event), deadline).await?,
        RouteKey::Leave => chat.leave(sender, &body_text(event), deadline).await?,
        RouteKey::History => chat.history(sender, &body_text(event), deadline).await?,
    }
    Ok(response(200, None))
}

/// Serves the welcome event that EventBridge hands to `post`.
pub async fn post<S, A, B, R>(
    chat: &Chat<S, A, B, R>,
    event: EventBridgeEvent<Value>,
    deadline: Deadline,
) -> Result<(), HandlerError>
where
    S: ConnectionStore,
    A: ConnectionApi,
    B: EventBus,
    R: RoomStore,
{
    if event.source != EVENT_SOURCE || event.detail_type != WELCOME_DETAIL_TYPE {
        return Err(HandlerError::MalformedEvent(format!(
            "expected source {EVENT_SOURCE:?} and detail-type {WELCOME_DETAIL_TYPE:?}, got {:?} and {:?}",
            event.source, event.detail_type
        )));
    }
    let welcome: WelcomeDetail = serde_json::from_value(event.detail)
        .map_err(|error| HandlerError::MalformedEvent(format!("welcome detail: {error}")))?;
    tracing::Span::current().record("connection_id", welcome.connection_id.as_str());
    chat.post(&welcome, deadline).await?;
    Ok(())
}

/// Serves the schedule's tick. The event's content does not matter.
pub async fn cleanup<S, A, B, R>(
    chat: &Chat<S, A, B, R>,
    deadline: Deadline,
) -> Result<CleanupReport, HandlerError>
where
    S: ConnectionStore,
    A: ConnectionApi,
    B: EventBus,
    R: RoomStore,
{
    Ok(chat.cleanup(deadline).await?)
}

/// Serves the shard jobs the event source mapping hands to `fanout` (one a batch, as the stack
/// configures it; more are served one after the other). A job that fails, or a message that is
/// not a job, is reported in `batchItemFailures`, so that the queue retries it (and sets it aside
/// after its retries) while the others are deleted. A job that fails its last attempt (its
/// `ApproximateReceiveCount` reached `SHARD_ATTEMPTS`, the queue's `maxReceiveCount`) is told to
/// its sender first.
pub async fn shards<S, A, B, R>(
    chat: &Chat<S, A, B, R>,
    event: SqsEvent,
    deadline: Deadline,
) -> SqsBatchResponse
where
    S: ConnectionStore,
    A: ConnectionApi,
    B: EventBus,
    R: RoomStore,
{
    let mut failures = Vec::new();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let job = message
            .body
            .as_deref()
            .ok_or_else(|| "no body".to_owned())
            .and_then(|body| serde_json::from_str::<ShardJob>(body).map_err(|e| e.to_string()));
        let served = match &job {
            Ok(job) => chat
                .shard(job.clone(), deadline)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(format!("not a shard job: {error}")),
        };
        if let Err(error) = served {
            let receives = message
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|count| count.parse::<u32>().ok());
            let last = receives.is_some_and(|n| n >= chat.settings.shard_attempts);
            if last {
                tracing::error!(message_id = id, receives, %error, "shard job failed its last attempt; the queue sets it aside");
            } else {
                tracing::error!(message_id = id, receives, %error, "shard job failed; the queue will retry it");
            }
            if let (Ok(job), Some(receives)) = (&job, receives)
                && last
            {
                chat.shard_abandoned(job, receives, deadline).await;
            }
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failures.push(failure);
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

/// Serves one event of `function`, as Lambda hands it over (JSON), and answers in JSON: what
/// every function binary runs. An event that is not of the function's kind is `MalformedEvent`.
pub async fn handle<S, A, B, R>(
    chat: &Chat<S, A, B, R>,
    function: Function,
    event: Value,
    deadline: Deadline,
) -> Result<Value, HandlerError>
where
    S: ConnectionStore,
    A: ConnectionApi,
    B: EventBus,
    R: RoomStore,
{
    fn parse<T: serde::de::DeserializeOwned>(event: Value, kind: &str) -> Result<T, HandlerError> {
        serde_json::from_value(event)
            .map_err(|error| HandlerError::MalformedEvent(format!("not {kind}: {error}")))
    }
    let answer = match function {
        Function::Route(route) => {
            let event = parse(event, "an API Gateway websocket event")?;
            let response = Box::pin(websocket(chat, route, &event, deadline)).await?;
            serde_json::to_value(response)
        }
        Function::Post => {
            let event = parse(event, "an EventBridge event")?;
            Box::pin(post(chat, event, deadline)).await?;
            Ok(Value::Null)
        }
        Function::Fanout => {
            let event = parse(event, "an SQS event")?;
            serde_json::to_value(Box::pin(shards(chat, event, deadline)).await)
        }
        // served by `authorizer::handle`, with no store, bus or @connections
        Function::Authorize => {
            return Err(HandlerError::MalformedEvent(
                "authorize serves authorizer events, with no chat".into(),
            ));
        }
        // Whatever the schedule sends is accepted.
        Function::Cleanup => {
            let report = Box::pin(cleanup(chat, deadline)).await?;
            Ok(serde_json::json!({
                "checked": report.checked,
                "expired": report.expired,
                "gone": report.gone,
                "failed": report.failed,
                "complete": report.complete,
            }))
        }
    };
    Ok(answer.expect("a response always serializes"))
}

fn response(status: i64, body: Option<String>) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response.body = body.map(Body::Text);
    response
}

/// The frame as bytes, and whether it was a binary frame (API Gateway base64-encodes those).
fn body_bytes(event: &ApiGatewayWebsocketProxyRequest) -> (Vec<u8>, bool) {
    let body = event.body.as_deref().unwrap_or_default();
    if event.is_base64_encoded {
        // Undecodable base64 cannot come from API Gateway; treat it as the opaque bytes it is.
        let decoded = base64::engine::general_purpose::STANDARD.decode(body);
        (decoded.unwrap_or_else(|_| body.as_bytes().to_vec()), true)
    } else {
        (body.as_bytes().to_vec(), false)
    }
}

fn body_text(event: &ApiGatewayWebsocketProxyRequest) -> String {
    let (bytes, _) = body_bytes(event);
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}
