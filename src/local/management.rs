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

/// `/@connections/{id}` and `/{stage}/@connections/{id}`: the stage, when given, must be ours,
/// and the request must not come from a web page.
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
    if let Some(stage) = params.get("stage") {
        if *stage != shared.stage.stage {
            return Err(Box::new(aws_error(
                StatusCode::FORBIDDEN,
                "ForbiddenException",
                &format!(
                    "no stage {stage:?} here; this gateway serves {:?}",
                    shared.stage.stage
                ),
            )));
        }
    }
    Ok(params.get("id").cloned().unwrap_or_default())
}

/// PostToConnection: the raw body becomes one frame to the client.
pub(crate) async fn post(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = match connection_id(&shared, &headers, &params) {
        Ok(id) => id,
        Err(response) => return *response,
    };
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
    match shared.chat.api.post(&id, data).await {
        Ok(Outcome::Done(())) => StatusCode::OK.into_response(),
        Ok(Outcome::Gone) => gone(&id),
        Err(ApiError::PayloadTooLarge) => too_large(limit),
        Err(error) => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
            &error.to_string(),
        ),
    }
}

/// GetConnection: when the connection was established and last active, and who it is.
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let id = match connection_id(&shared, &headers, &params) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    match shared.chat.api.describe(&id).await {
        Ok(Outcome::Done(info)) => Json(json!({
            "connectedAt": rfc3339(info.connected_at),
            "identity": { "sourceIp": info.source_ip, "userAgent": info.user_agent },
            "lastActiveAt": rfc3339(info.last_active_at),
        }))
        .into_response(),
        Ok(Outcome::Gone) => gone(&id),
        Err(error) => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
            &error.to_string(),
        ),
    }
}

/// DeleteConnection: closes the client's socket (after the frames already queued for it).
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let id = match connection_id(&shared, &headers, &params) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    match shared.chat.api.delete(&id).await {
        Ok(Outcome::Done(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Outcome::Gone) => gone(&id),
        Err(error) => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
            &error.to_string(),
        ),
    }
}

fn gone(id: &str) -> Response {
    aws_error(
        StatusCode::GONE,
        "GoneException",
        &format!("connection {id} is gone"),
    )
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
