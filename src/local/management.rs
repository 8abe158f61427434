//! The management API API Gateway offers on its callback URL, `@connections/{id}`, with AWS's
//! REST-JSON error convention (`x-amzn-ErrorType` header, `{"message": ...}` body) so that
//! aws-sdk-apigatewaymanagement and the AWS CLI can talk to it unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use crate::ports::{ApiError, ConnectionApi, Outcome, rfc3339};

/// The `{id}` of `/@connections/{id}` and `/{stage}/@connections/{id}`, extracted only when the
/// stage, if given, is ours and the request does not come from a web page (else the answer is
/// the rejection).
pub(crate) struct ConnectionId(String);

impl axum::extract::FromRequestParts<Arc<Shared>> for ConnectionId {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Response> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        connection_id(shared, &parts.headers, &params)
            .map(ConnectionId)
            .map_err(|response| *response)
    }
}

/// The stage, when given, must be ours, and the request must not come from a web page.
fn connection_id(
    shared: &Shared,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<String, Box<Response>> {
    // AWS SDKs and the CLI send neither header; every browser sends `Origin` with a cross-site
    // POST or DELETE, and `Sec-Fetch-Site` with every request. Without this, any page the
    // developer visits could post forged frames to their chat with a simple `text/plain` form.
    if let Some(origin) = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get("sec-fetch-site"))
    {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        return Err(Box::new(aws_error(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            &format!(
                "the management API does not serve web pages (request from {origin:?}); call it with an AWS SDK, the AWS CLI or curl"
            ),
        )));
    }
    if let Some(stage) = params.get("stage")
        && *stage != shared.stage.stage
    {
        return Err(Box::new(aws_error(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            &format!(
                "no stage {stage:?} here; this gateway serves {:?}",
                shared.stage.stage
            ),
        )));
    }
    Ok(params.get("id").cloned().unwrap_or_default())
}

/// PostToConnection: the raw body becomes one frame to the client.
pub(crate) async fn post(
    State(shared): State<Arc<Shared>>,
    ConnectionId(id): ConnectionId,
    body: Body,
) -> Response {
    let limit = shared.config.limits.max_message_bytes;
    // A body sent a byte at a time must not hold the connection: it gets the header timeout.
    let data = match tokio::time::timeout(shared.config.header_timeout, to_bytes(body, limit)).await
    {
        Ok(Ok(data)) => data,
        Ok(Err(_)) => return too_large(limit),
        Err(_) => {
            return aws_error(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                "the request body did not arrive in time",
            );
        }
    };
    let posted = shared.registry.post(&id, data).await;
    answer(&shared, &id, posted, |()| StatusCode::OK.into_response())
}

/// GetConnection: when the connection was established and last active, and who it is.
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    ConnectionId(id): ConnectionId,
) -> Response {
    let described = shared.registry.describe(&id).await;
    answer(&shared, &id, described, |info| {
        Json(json!({
            "connectedAt": rfc3339(info.connected_at),
            "identity": { "sourceIp": info.source_ip, "userAgent": info.user_agent },
            "lastActiveAt": rfc3339(info.last_active_at),
        }))
        .into_response()
    })
}

/// DeleteConnection: closes the client's socket through the registry (after the frames already
/// queued for it).
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    ConnectionId(id): ConnectionId,
) -> Response {
    let closed = Ok(shared.registry.delete(&id));
    answer(&shared, &id, closed, |()| {
        StatusCode::NO_CONTENT.into_response()
    })
}

/// The answer to a call about connection `id`, in AWS's REST-JSON convention: `done` makes the
/// success; 410 for a connection that is gone, 413 for a payload over the limit, else 500.
fn answer<T>(
    shared: &Shared,
    id: &str,
    result: Result<Outcome<T>, ApiError>,
    done: impl FnOnce(T) -> Response,
) -> Response {
    match result {
        Ok(Outcome::Done(value)) => done(value),
        Ok(Outcome::Gone) => aws_error(
            StatusCode::GONE,
            "GoneException",
            &format!("connection {id} is gone"),
        ),
        Err(ApiError::PayloadTooLarge) => too_large(shared.config.limits.max_message_bytes),
        Err(error) => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
            &error.to_string(),
        ),
    }
}

fn too_large(limit: usize) -> Response {
    aws_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLargeException",
        &format!("the payload exceeds {limit} bytes"),
    )
}

fn aws_error(status: StatusCode, error_type: &'static str, message: &str) -> Response {
    (
        status,
        [("x-amzn-ErrorType", error_type)],
        Json(json!({ "message": message })),
    )
        .into_response()
}
