//! API Gateway's management API (`@connections`) through aws-sdk-apigatewaymanagement.
//!
//! 410 `GoneException` is the [`Outcome::Gone`] outcome. Throttling (429 / `LimitExceededException`)
//! and unavailability (5xx, timeouts) are retryable errors; the domain retries them within its
//! budget, so the SDK's own retries are off for this client (two retry loops would multiply).

use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::{Blob, DateTime as AwsDateTime};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::ports::{ApiError, ConnectionApi, ConnectionInfo, Outcome};
use crate::telemetry::connection_span;

/// Runs one management-API call in its own span with its outcome (the telemetry setup leaves
/// it out of the export inside a fan-out or a cleanup, which count their calls instead).
async fn traced<T>(
    operation: &'static str,
    work: impl std::future::Future<Output = Result<Outcome<T>, ApiError>>,
) -> Result<Outcome<T>, ApiError> {
    use tracing::Instrument;
    let span = connection_span(operation);
    let result = work.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(Outcome::Done(_)) => "done",
        Ok(Outcome::Gone) => "gone",
        Err(ApiError::Throttled(_)) => "throttled",
        Err(ApiError::Unavailable(_)) => "unavailable",
        Err(ApiError::PayloadTooLarge) => "payload_too_large",
        Err(ApiError::Other(_)) => "error",
    };
    span.record("outcome", outcome);
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    result
}

#[derive(Clone, Debug)]
pub struct ManagementApi {
    client: Client,
}

impl ManagementApi {
    /// `client` must be configured with the stage's management endpoint as its endpoint URL.
    pub fn new(client: Client) -> Self {
        ManagementApi { client }
    }
}

/// Sorts an SDK error into the outcomes and errors the domain distinguishes.
fn classify<T, E>(error: SdkError<E, HttpResponse>) -> Result<Outcome<T>, ApiError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let code = error.code().map(str::to_owned);
    let detail = DisplayErrorContext(&error).to_string();
    match (code.as_deref(), status) {
        (Some("GoneException"), _) | (_, Some(410)) => Ok(Outcome::Gone),
        (
            Some("LimitExceededException" | "ThrottlingException" | "TooManyRequestsException"),
            _,
        )
        | (_, Some(429)) => Err(ApiError::Throttled(detail)),
        (Some("PayloadTooLargeException"), _) | (_, Some(413)) => Err(ApiError::PayloadTooLarge),
        (_, Some(500..=599)) | (_, None) => Err(ApiError::Unavailable(detail)),
        _ => Err(ApiError::Other(detail)),
    }
}

fn to_chrono(time: Option<&AwsDateTime>) -> Option<DateTime<Utc>> {
    let time = time?;
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

impl ConnectionApi for ManagementApi {
    async fn post(&self, connection_id: &str, data: Bytes) -> Result<Outcome<()>, ApiError> {
        let post = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(data))
            .send();
        traced("PostToConnection", async {
            match post.await {
                Ok(_) => Ok(Outcome::Done(())),
                Err(error) => classify(error),
            }
        })
        .await
    }

    async fn describe(&self, connection_id: &str) -> Result<Outcome<ConnectionInfo>, ApiError> {
        let get = self
            .client
            .get_connection()
            .connection_id(connection_id)
            .send();
        traced("GetConnection", async {
            match get.await {
                Ok(output) => {
                    let connected_at = to_chrono(output.connected_at()).unwrap_or_else(Utc::now);
                    let identity = output.identity();
                    Ok(Outcome::Done(ConnectionInfo {
                        connected_at,
                        last_active_at: to_chrono(output.last_active_at()).unwrap_or(connected_at),
                        source_ip: identity.and_then(|i| i.source_ip()).map(str::to_owned),
                        user_agent: identity.and_then(|i| i.user_agent()).map(str::to_owned),
                    }))
                }
                Err(error) => classify(error),
            }
        })
        .await
    }
}
