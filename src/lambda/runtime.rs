//! Serving on the Lambda Runtime API: what every function binary runs.
//!
//! Init happens once per execution environment: telemetry, configuration (an error is reported to
//! the Runtime API's `/init/error` and the process exits), the AWS clients. Then `lambda_runtime`
//! fetches events one at a time and hands them to the [glue](super); a handler error is reported
//! as that invocation's error and the function goes on with the next event.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

use super::HandlerError;
use super::authorizer::{self, AuthorizeError, UNAUTHORIZED};
use crate::adapters::dynamodb::DynamoStore;
use crate::adapters::eventbridge::EventBridgeBus;
use crate::adapters::management::{ManagementApi, NoCredentials, Poster};
use crate::adapters::rooms::DynamoRoomStore;
use crate::adapters::sqs::SqsShardQueue;
use crate::auth::jwks::HttpKeys;
use crate::auth::{Expected, Verifier};
use crate::config::{
    AuthorizerConfig, ConfigError, DYNAMODB_ATTEMPT_TIMEOUT, DYNAMODB_ATTEMPTS, DYNAMODB_BACKOFF,
    DYNAMODB_MAX_BACKOFF, DYNAMODB_OPERATION_TIMEOUT, DYNAMODB_RETRY_QUOTA, FunctionConfig,
    MANAGEMENT_CALL_TIMEOUT,
};
use crate::domain::{Chat, Deadline};
use crate::metrics::Emf;
use crate::ports::{NoMetrics, ShardQueue, SystemClock};
use crate::telemetry::{self, Options, Telemetry};
use aws_sdk_dynamodb::config::retry::{RetryPartition, TokenBucket};

/// The routes over the AWS adapters.
pub type AwsChat = Chat<DynamoStore, ManagementApi, EventBridgeBus, DynamoRoomStore>;

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Diagnostic {
        let error_type = match &error {
            HandlerError::MalformedEvent(_) => "MalformedEvent",
            HandlerError::Route(_) => "RouteFailed",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

/// Builds the clients once. Credentials and region come from the standard chain (in Lambda, the
/// function's role and `AWS_REGION`); emulator endpoints from `AWS_ENDPOINT_URL_<SERVICE>`.
pub async fn build(config: &FunctionConfig) -> AwsChat {
    build_with(aws_config::load_from_env().await, config)
}

/// [`build`] from an SDK configuration already loaded (a test or a bench gives its own region
/// and credentials, rather than setting them in the process's environment).
pub fn build_with(mut sdk: aws_config::SdkConfig, config: &FunctionConfig) -> AwsChat {
    if sdk.region().is_none() {
        // Lambda always sets AWS_REGION; an emulator harness may not, and every call would fail.
        tracing::warn!("no AWS region configured; using {FALLBACK_REGION}");
        sdk = sdk
            .into_builder()
            .region(aws_config::Region::new(FALLBACK_REGION))
            .build();
    }
    let management = aws_sdk_apigatewaymanagement::config::Builder::from(&sdk)
        .endpoint_url(&config.websocket_api_endpoint)
        // The domain retries throttling with its own budget; SDK retries would multiply it.
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(MANAGEMENT_CALL_TIMEOUT)
                .build(),
        )
        .build();
    // Throttling (ProvisionedThroughputExceededException, ThrottlingException, ...) and 5xx are
    // retried by the SDK's standard strategy, with more attempts and shorter pauses than its
    // defaults (3 attempts, pauses up to 20 s): a chat cannot wait 20 s, and the domain cuts
    // every fan-out off before the invocation's deadline anyway.
    let dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(DYNAMODB_ATTEMPTS)
                .with_initial_backoff(DYNAMODB_BACKOFF)
                .with_max_backoff(DYNAMODB_MAX_BACKOFF),
        )
        // The SDK's retry quota (500 tokens, 5 a throttled retry) is shared by the whole
        // process: a throttled fan-out's prunes would drain it in a hundred retries, after which
        // nothing is retried at all. A larger bucket keeps the brake on retry storms.
        .retry_partition(
            RetryPartition::custom("webchat-dynamodb")
                .token_bucket(TokenBucket::new(DYNAMODB_RETRY_QUOTA))
                .build(),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(DYNAMODB_ATTEMPT_TIMEOUT)
                .operation_timeout(DYNAMODB_OPERATION_TIMEOUT)
                .build(),
        )
        .build();
    let poster = Poster::new(
        &config.websocket_api_endpoint,
        sdk.region()
            .map_or(FALLBACK_REGION, |region| region.as_ref()),
        sdk.credentials_provider()
            .unwrap_or_else(|| SharedCredentialsProvider::new(NoCredentials)),
        MANAGEMENT_CALL_TIMEOUT,
    )
    .expect("the configuration validated the endpoint");
    let shards = config.shard_queue_url.as_deref().map(|url| {
        let sqs = aws_sdk_sqs::config::Builder::from(&sdk)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(SQS_OPERATION_TIMEOUT)
                    .build(),
            )
            .build();
        Arc::new(SqsShardQueue::new(aws_sdk_sqs::Client::from_conf(sqs), url))
            as Arc<dyn ShardQueue>
    });
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(dynamodb);
    // the rooms table holds the limits' buckets too (`limit#` keys): one table, one TTL
    let limits = Arc::new(crate::adapters::limits::DynamoLimits::new(
        dynamodb.clone(),
        &config.rooms_table,
    ));
    Chat {
        rooms: DynamoRoomStore::new(
            dynamodb.clone(),
            &config.rooms_table,
            &config.connections_table,
            config.scan_page_size,
        ),
        store: DynamoStore::new(dynamodb, &config.connections_table, config.scan_page_size),
        api: ManagementApi::new(
            aws_sdk_apigatewaymanagement::Client::from_conf(management),
            poster,
        ),
        bus: EventBridgeBus::new(
            aws_sdk_eventbridge::Client::new(&sdk),
            &config.event_bus_name,
        ),
        clock: Arc::new(SystemClock),
        settings: config.settings.clone(),
        shards,
        // init sets the stack's (METRICS_NAMESPACE)
        metrics: Arc::new(NoMetrics),
        limits,
    }
}

const FALLBACK_REGION: &str = "us-east-1";

/// A shard job's enqueue, retries included, gives up after this long (the caller's invocation
/// fails, and the queue or the sender retries it).
const SQS_OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// lambda_runtime panics when Lambda's own variables are missing. Lambda always sets them, but a
/// hand-rolled Runtime API harness may not: default them rather than crash.
fn default_lambda_environment() {
    let name = std::env::args()
        .next()
        .and_then(|path| {
            std::path::Path::new(&path)
                .file_name()?
                .to_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "webchat".into());
    for (variable, default) in [
        ("AWS_LAMBDA_FUNCTION_NAME", name.as_str()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ] {
        let valid = match variable {
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" => {
                std::env::var(variable).is_ok_and(|v| v.parse::<i32>().is_ok())
            }
            _ => std::env::var_os(variable).is_some(),
        };
        if !valid {
            // SAFETY: called first thing in init, before this process starts any other thread.
            unsafe { std::env::set_var(variable, default) };
        }
    }
}

/// A function after init: its name and its telemetry.
struct Initialized {
    name: String,
    telemetry: Telemetry,
}

/// Init: the configuration `read` gives (an error is reported to `/init/error`), then telemetry
/// at its log level.
async fn init<C>(
    read: impl FnOnce() -> Result<C, ConfigError>,
    log_level: impl FnOnce(&C) -> Option<&str>,
) -> Result<(Initialized, C), Error> {
    default_lambda_environment();
    let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "webchat".into());
    match read() {
        Ok(config) => {
            let telemetry = telemetry::init(Options::for_lambda(&name, log_level(&config)));
            Ok((Initialized { name, telemetry }, config))
        }
        Err(error) => {
            let _telemetry = telemetry::init(Options::for_lambda(&name, None));
            tracing::error!(%error, "invalid configuration");
            report_init_error("Runtime.InvalidConfiguration", &error.to_string()).await;
            Err(error.into())
        }
    }
}

/// Init of a chat function: its configuration, telemetry, the AWS clients.
async fn init_chat(function: super::Function) -> Result<(Initialized, AwsChat), Error> {
    let (initialized, config) = init(FunctionConfig::from_env, |c| c.log_level.as_deref()).await?;
    let mut chat = build(&config).await;
    if let Some(namespace) = config.metrics_namespace.clone() {
        chat.metrics = Arc::new(Emf {
            namespace,
            function: function.name(),
        });
    }
    Ok((initialized, chat))
}

/// The first invocation of an execution environment is its cold start.
static COLD_START: AtomicBool = AtomicBool::new(true);

impl Initialized {
    /// Runs one invocation inside its root span, parented on the invocation's X-Ray trace header
    /// (from the Runtime API, not the process-wide `_X_AMZN_TRACE_ID`), then exports its spans
    /// before the response lets Lambda freeze the sandbox.
    async fn invoke<T, E>(
        &self,
        context: &lambda_runtime::Context,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
    {
        let span = telemetry::invocation_span(
            &self.name,
            &context.request_id,
            COLD_START.swap(false, Ordering::Relaxed),
        );
        telemetry::begin(&span, context.xray_trace_id.as_deref());
        let result = telemetry::invoked(span, work).await;
        self.telemetry.flush();
        result
    }
}

/// Tells the Runtime API that init failed, so Lambda reports it (and does not wait for `/next`).
async fn report_init_error(error_type: &str, message: &str) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return; // not running in Lambda
    };
    let base = if api.contains("://") {
        api
    } else {
        format!("http://{api}")
    };
    let Ok(base) = base.parse() else {
        tracing::error!("AWS_LAMBDA_RUNTIME_API is not a valid address");
        return;
    };
    let client = lambda_runtime_api_client::PooledClient::builder()
        .with_endpoint(base)
        .build();
    let body = json!({ "errorType": error_type, "errorMessage": message }).to_string();
    let request = lambda_runtime_api_client::build_request()
        .method("POST")
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", error_type)
        .body(lambda_runtime_api_client::body::Body::from(body));
    match request {
        Ok(request) => {
            if let Err(error) = client.call(request).await {
                tracing::error!(%error, "could not report the init error");
            }
        }
        Err(error) => tracing::error!(%error, "could not build the init error report"),
    }
}

// Handler futures are boxed: the fan-out's stream combinators nest deep enough that
// `lambda_runtime::run`'s future would exceed the compiler's layout recursion limit.

/// Serves `function`'s events one at a time: what every function binary runs.
pub async fn serve(function: super::Function) -> Result<(), Error> {
    if function == super::Function::Authorize {
        return serve_authorizer().await;
    }
    let (initialized, chat) = &init_chat(function).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        Box::pin(async move {
            let deadline = Deadline::from_epoch_millis(event.context.deadline);
            let work = Box::pin(super::handle(chat, function, event.payload, deadline));
            initialized.invoke(&event.context, work).await
        })
    }))
    .await
}

impl From<AuthorizeError> for Diagnostic {
    fn from(error: AuthorizeError) -> Diagnostic {
        let error_type = match &error {
            AuthorizeError::Unauthorized => UNAUTHORIZED,
            AuthorizeError::MalformedEvent(_) => "MalformedEvent",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

/// The `authorize` function: the issuer's keys, kept across invocations (API Gateway caches no
/// WebSocket authorizer's answer), check each `$connect`'s token.
async fn serve_authorizer() -> Result<(), Error> {
    let (initialized, config) =
        init(AuthorizerConfig::from_env, |c| c.log_level.as_deref()).await?;
    let verifier = &Verifier::new(
        HttpKeys::new(config.issuer.clone()),
        Expected {
            issuer: config.issuer.as_str().to_owned(),
            audience: config.audience.clone(),
        },
    );
    let initialized = &initialized;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now = chrono::Utc::now().timestamp();
        // a refusal is the client's doing: logged at info by `handle`, not an invocation error
        let work =
            async { Ok::<_, Infallible>(authorizer::handle(verifier, event.payload, now).await) };
        let Ok(answer) = initialized.invoke(&event.context, work).await;
        answer
    }))
    .await
}
