//! Telemetry for every binary: JSON logs that carry the trace id, and OpenTelemetry spans
//! exported over OTLP/HTTP (protobuf) to the ADOT collector, which sends them to X-Ray.
//!
//! - Logs: `tracing` events as one JSON object a line (`timestamp`, `level`, `target`,
//!   `message`, the event's fields, and the fields of every enclosing span, so the invocation's
//!   `requestId` and `trace_id` are on every line), or plain text for a terminal.
//! - Spans: `tracing` spans of this crate become OpenTelemetry spans with X-Ray-compatible ids
//!   (opentelemetry-aws). An invocation's root span takes its parent from the X-Ray trace header
//!   Lambda hands to that invocation, and the header of the current span is what PutEvents
//!   carries, so a connect and the `post` that delivers its welcome are one trace.
//! - Export: a batch processor posts to `OTEL_EXPORTER_OTLP_ENDPOINT` (default
//!   `http://localhost:4318`, the ADOT extension's receiver), or to an explicit endpoint. Lambda
//!   freezes the sandbox after a response, so [`Telemetry::flush`] runs at the end of every
//!   invocation; export errors are logged and never fail a request. HTTP keeps gRPC out.

use std::fmt;
use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_aws::trace::XrayIdGenerator;
use opentelemetry_aws::trace::xray_propagator::{span_context_from_str, span_context_to_string};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets, dynamic_filter_fn};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::domain::COUNTING_TARGET;

/// How long one export may take. The collector is on localhost: anything slower is a fault, and
/// a flush must not hold an invocation's response for long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line: for CloudWatch.
    Json,
    /// Human-readable, coloured on a terminal.
    Text,
}

/// Where spans go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Export {
    /// Nowhere (spans still give logs their trace ids).
    Disabled,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, or `http://localhost:4318`.
    FromEnvironment,
    /// This OTLP/HTTP base URL (`/v1/traces` is appended).
    Endpoint(String),
}

#[derive(Clone, Debug)]
pub struct Options {
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// A level or `tracing` filter for the logs.
    pub log_filter: String,
    pub log_format: LogFormat,
    pub export: Export,
}

impl Options {
    /// What a Lambda function uses: the level from `RUST_LOG`, else `log_level` (the function's
    /// `LOG_LEVEL`), else Lambda's advanced logging controls (`AWS_LAMBDA_LOG_LEVEL`), else
    /// `info`; JSON unless `AWS_LAMBDA_LOG_FORMAT` is `Text`; export unless `OTEL_SDK_DISABLED`
    /// is `true`. (`LOG_LEVEL` comes before Lambda's level because the stack keeps Lambda's
    /// filter at INFO or below whatever `LOG_LEVEL` says: the metrics' lines have no level, and
    /// Lambda filters them as INFO.)
    pub fn for_lambda(service_name: &str, log_level: Option<&str>) -> Options {
        let log_filter = format!(
            "{},{RAW_EVENTS_OFF}",
            log_filter(
                std::env::var("RUST_LOG").ok(),
                log_level,
                std::env::var("AWS_LAMBDA_LOG_LEVEL").ok(),
            )
        );
        let text = std::env::var("AWS_LAMBDA_LOG_FORMAT")
            .is_ok_and(|format| format.eq_ignore_ascii_case("text"));
        let disabled = std::env::var("OTEL_SDK_DISABLED")
            .is_ok_and(|value| value.eq_ignore_ascii_case("true"));
        Options {
            service_name: service_name.to_owned(),
            log_filter,
            log_format: if text {
                LogFormat::Text
            } else {
                LogFormat::Json
            },
            export: if disabled {
                Export::Disabled
            } else {
                Export::FromEnvironment
            },
        }
    }
}

/// A function's log filter: `RUST_LOG`, else `LOG_LEVEL`, else Lambda's level (whose FATAL is
/// `tracing`'s error), else `info`.
/// lambda_runtime logs every raw event at TRACE from this module (its only line): an event
/// carries a connect's token (`Sec-WebSocket-Protocol`, `?token=`) and every message, so at
/// `LOG_LEVEL=trace` they would reach CloudWatch. The functions log what they need themselves.
pub const RAW_EVENTS_OFF: &str = "lambda_runtime::layers::api_response=off";

fn log_filter(
    rust_log: Option<String>,
    log_level: Option<&str>,
    lambda_level: Option<String>,
) -> String {
    let lambda_level = lambda_level.map(|level| match level.to_ascii_lowercase().as_str() {
        "fatal" => "error".to_owned(),
        other => other.to_owned(),
    });
    rust_log
        .or_else(|| log_level.map(str::to_owned))
        .or(lambda_level)
        .unwrap_or_else(|| "info".to_owned())
}

/// The installed telemetry; flush it at the end of every invocation.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Installs the global subscriber and the tracer provider. A second call in one process keeps
/// the first subscriber (tests start several gateways).
pub fn init(options: Options) -> Telemetry {
    let resource = Resource::builder()
        .with_service_name(options.service_name.clone())
        .build();
    let mut provider = SdkTracerProvider::builder()
        .with_id_generator(XrayIdGenerator::default())
        .with_resource(resource);
    match span_exporter(&options.export) {
        Ok(Some(exporter)) => provider = provider.with_batch_exporter(exporter),
        Ok(None) => {}
        Err(error) => eprintln!("telemetry: spans will not be exported: {error}"),
    }
    let provider = provider.build();
    let tracer = provider.tracer("webchat");

    let log_filter =
        EnvFilter::try_new(&options.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match options.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(log_filter)
            .boxed(),
    };
    // Only this crate's spans become OpenTelemetry spans (the AWS SDK's internal spans would
    // multiply every call into several), less the per-connection calls a span counts instead.
    // Only the per-connection callsites are decided span by span; the rest once per callsite.
    let not_counted = dynamic_filter_fn(|metadata, context| !counted_elsewhere(metadata, context))
        .with_callsite_filter(|metadata| {
            if metadata.target() == PER_CONNECTION {
                Interest::sometimes()
            } else {
                Interest::always()
            }
        })
        .with_max_level_hint(LevelFilter::DEBUG);
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            Targets::new()
                .with_target("webchat", Level::INFO)
                .with_target(PER_CONNECTION, Level::DEBUG)
                .and(not_counted),
        );
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    Telemetry { provider }
}

fn span_exporter(export: &Export) -> Result<Option<opentelemetry_otlp::SpanExporter>, String> {
    let builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        // The collector is local: a retry would only hold the invocation's response longer.
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled());
    let builder = match export {
        Export::Disabled => return Ok(None),
        Export::FromEnvironment => builder,
        Export::Endpoint(base) => {
            builder.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')))
        }
    };
    builder.build().map(Some).map_err(|error| error.to_string())
}

impl Telemetry {
    /// Exports every finished span now: the sandbox may freeze as soon as the response is sent.
    /// A failed export is logged, never raised.
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "could not export spans");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Makes `span` the root of an invocation: its parent is the trace in `xray_header` (Lambda's
/// `Lambda-Runtime-Trace-Id`, or the header a local event carries), or a new trace. Records the
/// X-Ray trace id in the span's `trace_id` field, which every log line inside then carries.
pub fn begin(span: &Span, xray_header: Option<&str>) {
    let parent = xray_header.and_then(span_context_from_str);
    if let Some(parent) = &parent {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent.clone()));
    }
    let trace_id = span.context().span().span_context().trace_id();
    let trace_id = if trace_id != TraceId::INVALID {
        Some(trace_id)
    } else {
        parent.map(|p| p.trace_id())
    };
    if let Some(trace_id) = trace_id {
        span.record("trace_id", xray_trace_id(trace_id));
    }
}

/// The X-Ray trace header (`Root=1-…;Parent=…;Sampled=…`) of the current span, to hand on.
pub fn current_xray_header() -> Option<String> {
    span_context_to_string(Span::current().context().span().span_context())
}

/// A trace id in X-Ray's notation: `1-{8 hex digits of epoch seconds}-{24 hex digits}`.
pub fn xray_trace_id(trace_id: TraceId) -> String {
    let hex = format!("{trace_id:032x}");
    format!("1-{}-{}", &hex[..8], &hex[8..])
}

/// The target of [`connection_span`]s.
const PER_CONNECTION: &str = "webchat::aws::connection";

/// A span for one AWS API call about one connection (`@connections`). Exported, except inside
/// a span that counts such calls instead (a fan-out, a cleanup): the telemetry setup leaves
/// them out there. At `debug`, so that the logs at `info` do not want it either: inside a
/// fan-out no layer does, and a post costs no span at all.
pub fn connection_span(operation: &'static str) -> Span {
    tracing::debug_span!(
        target: PER_CONNECTION,
        "aws_call",
        otel.name = %format_args!("ApiGatewayManagementApi.{operation}"),
        otel.kind = "client",
        rpc.system = "aws-api",
        rpc.service = "ApiGatewayManagementApi",
        rpc.method = operation,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Whether a span is left out of the export: a per-connection call inside a counting span.
fn counted_elsewhere<S>(
    metadata: &tracing::Metadata<'_>,
    context: &tracing_subscriber::layer::Context<'_, S>,
) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    metadata.is_span()
        && metadata.target() == PER_CONNECTION
        && context.lookup_current().is_some_and(|current| {
            current
                .scope()
                .any(|span| span.metadata().target() == COUNTING_TARGET)
        })
}

/// A span for one AWS API call.
pub fn aws_span(service: &'static str, operation: &'static str) -> Span {
    tracing::info_span!(
        target: "webchat::aws",
        "aws_call",
        otel.name = %format_args!("{service}.{operation}"),
        otel.kind = "client",
        rpc.system = "aws-api",
        rpc.service = service,
        rpc.method = operation,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Runs one AWS call inside `span`, marking the span as an error when the call fails.
pub async fn call<T, E>(span: Span, work: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    use tracing::Instrument;
    let result = work.instrument(span.clone()).await;
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    result
}

/// Runs one invocation's work inside its root span; a failure marks the span as an error and is
/// logged there. The Lambda runtime and `webchat-local` run every event through it.
pub async fn invoked<T, E: fmt::Display>(
    span: Span,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    let result = work.instrument(span.clone()).await;
    if let Err(error) = &result {
        span.record("otel.status_code", "ERROR");
        span.in_scope(|| tracing::error!(%error, "invocation failed"));
    }
    result
}

/// The root span of one invocation of a function (or of one event in webchat-local). The glue
/// records `route` and `connection_id` when it knows them; [`begin`] records `trace_id`.
pub fn invocation_span(function: &str, request_id: &str, cold_start: bool) -> Span {
    tracing::info_span!(
        target: "webchat",
        "invocation",
        otel.name = %function,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        function = %function,
        requestId = %request_id,
        cold_start,
        route = tracing::field::Empty,
        connection_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    )
}

/// A JSON log line with the fields of every enclosing span flattened to the top level (so
/// `requestId` and `trace_id` are plain keys CloudWatch Logs Insights can filter on).
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert(
            "level".into(),
            Value::String(metadata.level().as_str().into()),
        );
        line.insert("target".into(), Value::String(metadata.target().into()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    line.extend(
                        fields
                            .into_iter()
                            .filter(|(key, _)| !key.starts_with("otel.")),
                    );
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        line.entry("message")
            .or_insert_with(|| Value::String(String::new()));
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_written_in_xray_notation() {
        let id = TraceId::from_hex("5759e988bd862e3fe1be46a994272793").unwrap();
        assert_eq!(xray_trace_id(id), "1-5759e988-bd862e3fe1be46a994272793");
    }

    #[test]
    fn a_functions_level_is_rust_log_then_log_level_then_lambdas() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            log_filter(some("trace"), Some("warn"), some("INFO")),
            "trace"
        );
        // The stack keeps Lambda's filter at INFO while LOG_LEVEL says warn: warn it is.
        assert_eq!(log_filter(None, Some("warn"), some("INFO")), "warn");
        assert_eq!(log_filter(None, None, some("FATAL")), "error");
        assert_eq!(log_filter(None, None, some("DEBUG")), "debug");
        assert_eq!(log_filter(None, None, None), "info");
    }
}
