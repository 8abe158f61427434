//! API Gateway's management API (`@connections`): GetConnection through
//! aws-sdk-apigatewaymanagement, PostToConnection (a fan-out's every call) through the SDK's
//! own HTTP connector and signing primitives without its orchestrator.
//!
//! Why: a fan-out's CPU is almost all per-post work, and the SDK's orchestrator (runtime plugins
//! merged per call, a dozen interceptors, type-erased config bags, the general SigV4 signer)
//! cost more than a post's budget of CPU (docs/benchmarks.md). [`Poster`] sends the same request the SDK sends (same
//! path, same signature, checked against aws-sigv4 in [`super::sigv4`]) over the same connector
//! (hyper, rustls with aws-lc, the SDK's connect timeout), and reads the answer with the same
//! rules. docs/benchmarks.md has the profile and the figures.
//!
//! 410 `GoneException` is the [`Outcome::Gone`] outcome. Throttling (429 / `LimitExceededException`)
//! and unavailability (5xx, timeouts) are retryable errors; the domain retries them within its
//! budget, so the SDK's own retries are off for this client (two retry loops would multiply).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::DateTime as AwsDateTime;
use aws_smithy_http::label::{EncodingStrategy, fmt_string};
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;

use super::sigv4::{SigningKey, sign};
use crate::ports::{ApiError, ConnectionApi, ConnectionInfo, Outcome};
use crate::telemetry::connection_span;

/// Runs one management-API call in its own span with its outcome (the telemetry setup leaves
/// it out of the export inside a fan-out or a cleanup, which count their calls instead).
///
/// `work` is boxed: the SDK's futures are kilobytes, and without the box every future awaiting
/// this one (the retry loop, the deadline, the fan-out's task) would hold, and move, a copy of
/// that size, and moving and allocating it was a large share of the CPU a post cost (the profile
/// is in docs/benchmarks.md).
async fn traced<T>(
    operation: &'static str,
    work: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Outcome<T>, ApiError>> + Send + '_>,
    >,
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
    poster: Arc<Poster>,
}

impl ManagementApi {
    /// `client` must be configured with the stage's management endpoint as its endpoint URL,
    /// which `poster` posts to.
    pub fn new(client: Client, poster: Poster) -> Self {
        ManagementApi {
            client,
            poster: Arc::new(poster),
        }
    }
}

/// PostToConnection without the SDK's orchestrator; see the module's documentation.
pub struct Poster {
    connector: Connector,
    /// `scheme://authority/stage`, without a trailing slash.
    base: String,
    /// The authority without a default port, as SigV4 signs it; and as the `host` header.
    host: String,
    host_header: http::HeaderValue,
    /// The base path, encoded once more for the canonical request.
    canonical_base: String,
    region: String,
    credentials: SharedCredentialsProvider,
    /// Derived once a day per set of credentials.
    key: Mutex<Option<Arc<SigningKey>>>,
    timeout: Duration,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster").field("base", &self.base).finish()
    }
}

/// SigV4's name for API Gateway's management API.
const SIGNING_NAME: &str = "execute-api";

impl Poster {
    /// Posts to the stage at `endpoint` (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`,
    /// validated by the configuration), signing as `region` with `credentials`; every call gives
    /// up after `timeout`.
    pub fn new(
        endpoint: &str,
        region: &str,
        credentials: SharedCredentialsProvider,
        timeout: Duration,
    ) -> Result<Poster, String> {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|error| format!("{endpoint}: {error}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(format!("{endpoint}: not an absolute URL"));
        };
        let default_port = matches!(
            (scheme, authority.port_u16()),
            ("https", Some(443)) | ("http", Some(80))
        );
        let host = if default_port {
            authority.host()
        } else {
            authority.as_str()
        };
        let path = uri.path().trim_end_matches('/');
        if path.contains("//") || path.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "{endpoint}: the path must be plain (no '.', '..' or '//')"
            ));
        }
        let connector = Connector::builder()
            .connector_settings(
                HttpConnectorSettings::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build(),
            )
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .build();
        Ok(Poster {
            connector,
            base: format!("{scheme}://{authority}{path}"),
            host_header: http::HeaderValue::from_str(host).map_err(|error| error.to_string())?,
            host: host.to_owned(),
            canonical_base: fmt_string(path, EncodingStrategy::Greedy),
            region: region.to_owned(),
            credentials,
            key: Mutex::new(None),
            timeout,
        })
    }

    /// The signing key for `now`, derived again when the day or the credentials change.
    async fn key(&self, now: SystemTime) -> Result<Arc<SigningKey>, ApiError> {
        if let Some(key) = self.key.lock().unwrap().as_ref()
            && key.is_valid_at(now)
        {
            return Ok(key.clone());
        }
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|error| ApiError::Other(format!("no credentials: {error}")))?;
        let key = Arc::new(SigningKey::new(
            credentials,
            now,
            &self.region,
            SIGNING_NAME,
        ));
        *self.key.lock().unwrap() = Some(key.clone());
        Ok(key)
    }

    async fn post(&self, connection_id: &str, data: Bytes) -> Result<Outcome<()>, ApiError> {
        let now = SystemTime::now();
        let key = self.key(now).await?;
        // The connection id is a URI label, percent-encoded as the SDK encodes it; the canonical
        // path encodes the whole path once more ('%' and '@' included), as SigV4 does.
        let label = fmt_string(connection_id, EncodingStrategy::Default);
        let canonical_path = format!(
            "{}/%40connections/{}",
            self.canonical_base,
            label.replace('%', "%25")
        );
        let signature = sign(&key, "POST", &self.host, &canonical_path, now, &data);
        let mut request = http::Request::post(format!("{}/@connections/{label}", self.base))
            .header(http::header::HOST, self.host_header.clone())
            .header("x-amz-date", signature.amz_date)
            .header(http::header::AUTHORIZATION, signature.authorization);
        if let Some(token) = key.session_token() {
            request = request.header("x-amz-security-token", token);
        }
        let request = request
            .body(SdkBody::from(data))
            .map_err(|error| ApiError::Other(error.to_string()))?;
        let request =
            HttpRequest::try_from(request).map_err(|error| ApiError::Other(error.to_string()))?;
        let exchange = async {
            let response = self.connector.call(request).await?;
            let status = response.status().as_u16();
            let code = response
                .headers()
                .get("x-amzn-errortype")
                .map(|code| code.split(':').next().unwrap_or(code).to_owned());
            // Read to the end, so that the connection goes back to the pool.
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, code, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(ApiError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
            Ok(Err(error)) => Err(ApiError::Unavailable(error.to_string())),
            Ok(Ok((200..=299, _, _))) => Ok(Outcome::Done(())),
            Ok(Ok((status, code, body))) => sort(
                code.as_deref(),
                Some(status),
                format!("{status}: {}", String::from_utf8_lossy(&body)),
            ),
        }
    }
}

/// What signs when the SDK's chain found no credentials: every post fails with that reason.
#[derive(Debug)]
pub struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no credentials provider configured",
            ),
        ))
    }
}

/// The SDK's connect timeout (`BehaviorVersion::latest()`).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// Sorts an SDK error into the outcomes and errors the domain distinguishes.
fn classify<T, E>(error: SdkError<E, HttpResponse>) -> Result<Outcome<T>, ApiError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let detail = DisplayErrorContext(&error).to_string();
    sort(error.code(), status, detail)
}

/// An error answer (its code, if any, and its status; none if there was no answer) as the
/// outcome or error the domain distinguishes.
fn sort<T>(
    code: Option<&str>,
    status: Option<u16>,
    detail: String,
) -> Result<Outcome<T>, ApiError> {
    match (code, status) {
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
        let poster = &self.poster;
        traced(
            "PostToConnection",
            Box::pin(async move { poster.post(connection_id, data).await }),
        )
        .await
    }

    async fn delete_connection(&self, connection_id: &str) -> Result<Outcome<()>, ApiError> {
        let delete = self.client.delete_connection().connection_id(connection_id);
        traced(
            "DeleteConnection",
            Box::pin(async move {
                match delete.send().await {
                    Ok(_) => Ok(Outcome::Done(())),
                    Err(error) => classify(error),
                }
            }),
        )
        .await
    }

    async fn describe(&self, connection_id: &str) -> Result<Outcome<ConnectionInfo>, ApiError> {
        let get = self.client.get_connection().connection_id(connection_id);
        traced(
            "GetConnection",
            Box::pin(async move {
                match get.send().await {
                    Ok(output) => {
                        let connected_at =
                            to_chrono(output.connected_at()).unwrap_or_else(Utc::now);
                        let identity = output.identity();
                        Ok(Outcome::Done(ConnectionInfo {
                            connected_at,
                            last_active_at: to_chrono(output.last_active_at())
                                .unwrap_or(connected_at),
                            source_ip: identity.and_then(|i| i.source_ip()).map(str::to_owned),
                            user_agent: identity.and_then(|i| i.user_agent()).map(str::to_owned),
                        }))
                    }
                    Err(error) => classify(error),
                }
            }),
        )
        .await
    }
}
