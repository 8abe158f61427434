//! One connected trace per user action: spans exported over OTLP/HTTP with the invocation's X-Ray
//! trace as their parent, PutEvents carrying the trace to `post`, JSON logs carrying the trace id,
//! and spans flushed before the invocation's response.

use serde_json::Value;

use super::otlp::{OtlpReceiver, ReceivedSpan};
use super::{Stack, connect_event, websocket_event, welcome_event};

const ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";
const TRACE_ID: &str = "5759e988bd862e3fe1be46a994272793";
const HEADER: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            panic!("no span {name:?} among {names:?}")
        })
}

#[tokio::test]
async fn a_connect_and_the_post_of_its_welcome_are_one_trace() {
    let stack = Stack::new().await;
    let otlp = OtlpReceiver::start().await;
    let collector = [("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())];

    let connect = stack.function_with("connect", &collector).await;
    let answer = connect
        .invoke_traced(&connect_event("abc=", Some("alice")), HEADER)
        .await
        .response();
    assert_eq!(answer["statusCode"], 200);

    // exported before the response came back
    let spans = otlp.spans_of_trace(TRACE_ID);
    let invocation = named(&spans, "webchat-connect");
    assert_eq!(
        invocation.parent_span_id, "53995c3f42cd8ad8",
        "the invocation continues Lambda's trace"
    );
    assert_eq!(invocation.attribute("route"), Some("$connect"));
    assert_eq!(invocation.attribute("connection_id"), Some("abc="));
    assert_eq!(invocation.attribute("cold_start"), Some("true"));
    assert!(
        invocation
            .attribute("requestId")
            .is_some_and(|id| id.starts_with("req-"))
    );
    let put_item = named(&spans, "DynamoDB.PutItem");
    assert_eq!(put_item.parent_span_id, invocation.span_id);
    let put_events = named(&spans, "EventBridge.PutEvents");
    assert_eq!(put_events.parent_span_id, invocation.span_id);

    let entry = &stack.fake.put_events()[0]["Entries"][0];
    let trace_header = entry["TraceHeader"]
        .as_str()
        .expect("PutEvents carries a TraceHeader");
    assert_eq!(
        trace_header,
        format!("Root={ROOT};Parent={};Sampled=1", put_events.span_id)
    );

    // EventBridge hands the header to the target as its invocation's trace header
    let post = stack.function_with("post", &collector).await;
    post.invoke_traced(&welcome_event("abc="), trace_header)
        .await
        .response();
    let spans = otlp.spans_of_trace(TRACE_ID);
    let post_invocation = named(&spans, "webchat-post");
    assert_eq!(
        post_invocation.parent_span_id, put_events.span_id,
        "post continues the connect's trace"
    );
    let post_to_connection = named(&spans, "ApiGatewayManagementApi.PostToConnection");
    assert_eq!(post_to_connection.parent_span_id, post_invocation.span_id);
    assert_eq!(post_to_connection.attribute("outcome"), Some("done"));
    assert!(
        otlp.spans().iter().all(|span| span.trace_id == TRACE_ID),
        "nothing else was traced"
    );
}

#[tokio::test]
async fn every_log_line_is_json_and_carries_the_trace_id_and_request_id() {
    let stack = Stack::new().await;
    stack.put("a=", None, 60).await;
    let otlp = OtlpReceiver::start().await;
    let broadcast = stack
        .function_with(
            "broadcast",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())],
        )
        .await;
    let body = r#"{"action":"broadcast","message":"hi"}"#;
    broadcast
        .invoke_traced(&websocket_event("broadcast", "a=", Some(body)), HEADER)
        .await
        .response();
    let logs = broadcast.logs();
    assert!(!logs.is_empty());
    let lines: Vec<Value> = logs
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for line in &lines {
        assert!(
            line["level"].is_string()
                && line["message"].is_string()
                && line["timestamp"].is_string(),
            "{line}"
        );
    }
    let summary = lines
        .iter()
        .find(|line| line["message"] == "broadcast")
        .expect("the fan-out summary");
    assert_eq!(summary["trace_id"], ROOT);
    assert!(
        summary["requestId"]
            .as_str()
            .is_some_and(|id| id.starts_with("req-"))
    );
    assert_eq!(summary["connection_id"], "a=");
    assert_eq!(summary["delivered"], 1);
}

#[tokio::test]
async fn a_fan_out_is_one_span_with_counts_not_a_span_per_post() {
    let stack = Stack::new().await;
    for id in ["a=", "b=", "c=", "d="] {
        stack.put(id, None, 60).await;
    }
    stack.fake.gone("d=");
    let otlp = OtlpReceiver::start().await;
    let broadcast = stack
        .function_with(
            "broadcast",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())],
        )
        .await;
    let body = r#"{"action":"broadcast","message":"hi"}"#;
    broadcast
        .invoke_traced(&websocket_event("broadcast", "a=", Some(body)), HEADER)
        .await
        .response();
    let spans = otlp.spans_of_trace(TRACE_ID);
    let fan_out = named(&spans, "fan_out");
    assert_eq!(fan_out.attribute("delivered"), Some("3"));
    assert_eq!(fan_out.attribute("pruned"), Some("1"));
    assert_eq!(fan_out.attribute("failed"), Some("0"));
    assert!(
        !spans.iter().any(|s| s.name.ends_with("PostToConnection")),
        "no span per post"
    );
}

#[tokio::test]
async fn each_invocations_spans_are_exported_before_the_next_invocation_starts() {
    let stack = Stack::new().await;
    let otlp = OtlpReceiver::start().await;
    let default = stack
        .function_with(
            "default",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())],
        )
        .await;
    for round in 0..3 {
        let header = format!(
            "Root=1-5759e988-bd862e3fe1be46a99427279{round};Parent=53995c3f42cd8ad8;Sampled=1"
        );
        default
            .invoke_traced(&websocket_event("$default", "a=", Some("?")), &header)
            .await
            .response();
        let trace_id = format!("5759e988bd862e3fe1be46a99427279{round}");
        let spans = otlp.spans_of_trace(&trace_id);
        let invocation = named(&spans, "webchat-default");
        assert_eq!(
            invocation.attribute("cold_start"),
            Some(if round == 0 { "true" } else { "false" })
        );
    }
}

#[tokio::test]
async fn without_a_collector_the_function_still_serves_and_says_why_spans_were_lost() {
    let stack = Stack::new().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let default = stack
        .function_with(
            "default",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"))],
        )
        .await;
    for _ in 0..2 {
        let answer = default
            .invoke_traced(&websocket_event("$default", "a=", Some("?")), HEADER)
            .await
            .response();
        assert_eq!(answer["statusCode"], 200);
    }
    assert_eq!(stack.fake.delivered_to("a=").len(), 2);
    assert!(
        default
            .logs()
            .iter()
            .any(|line| line.contains("could not export spans"))
    );
}

#[tokio::test]
async fn webchat_local_exports_a_connect_and_its_welcome_as_one_trace() {
    use futures_util::StreamExt;

    let otlp = OtlpReceiver::start().await;
    let endpoint = otlp.endpoint();
    let local = crate::support::LocalProcess::start(
        &["--otlp-endpoint", &endpoint],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let url = local.url.clone();
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let welcome = socket.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(welcome.contains("\"welcome\""));

    let (connect, post) =
        crate::support::poll_until("the connect's and the post's spans exported", || {
            let spans = otlp.spans();
            let connect = spans.iter().find(|s| s.name == "connect").cloned();
            let post = spans.iter().find(|s| s.name == "post").cloned();
            connect.zip(post)
        })
        .await;
    drop(local);
    assert_eq!(
        connect.trace_id, post.trace_id,
        "the welcome continues the connect's trace"
    );
    assert_eq!(
        post.parent_span_id, connect.span_id,
        "post's parent is the connect that published the welcome"
    );
}
