//! A recording stand-in for EventBridge (PutEvents, AWS JSON 1.1), SQS (SendMessageBatch, AWS
//! JSON 1.0, as aws-sdk-sqs speaks it) and API Gateway's management API
//! (`/{stage}/@connections/{id}`, REST-JSON), on one port, with scripted answers: 410 for
//! chosen ids, 429s before success, PutEvents partial failures, and an optional delay per call.
//! moto cannot stand in here: its `@connections` always answers 200, never 410.
//!
//! Every `@connections` request's SigV4 signature is checked as API Gateway checks it: the
//! signature is computed again with aws-sigv4 over the request as received (method, path,
//! the headers it says it signed, body) with the secret key [`SECRET_ACCESS_KEY`]; a mismatch is
//! answered 403 `InvalidSignatureException`, as API Gateway answers it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::{Value, json};

/// The secret access key of the credentials the functions under test sign with.
pub const SECRET_ACCESS_KEY: &str = "testing";

/// Whether a request's `authorization` header is the SigV4 signature of the request as received,
/// by `SECRET_ACCESS_KEY`.
fn signature_is_valid(
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> bool {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4::SigningParams;

    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let Some(authorization) = header("authorization") else {
        return false;
    };
    // AWS4-HMAC-SHA256 Credential={akid}/{date}/{region}/{service}/aws4_request, SignedHeaders=a;b, Signature={hex}
    let field = |name: &str| {
        authorization
            .split([' ', ','])
            .find_map(|part| part.strip_prefix(name))
    };
    let (Some(credential), Some(signed), Some(date)) = (
        field("Credential="),
        field("SignedHeaders="),
        header("x-amz-date"),
    ) else {
        return false;
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, _day, region, service, "aws4_request"] = scope[..] else {
        return false;
    };
    let Ok(time) = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ") else {
        return false;
    };
    let credentials = Credentials::new(
        access_key,
        SECRET_ACCESS_KEY,
        header("x-amz-security-token").map(str::to_owned),
        None,
        "fake",
    )
    .into();
    let Ok(params) = SigningParams::builder()
        .identity(&credentials)
        .region(region)
        .name(service)
        .time(time.and_utc().into())
        .settings(SigningSettings::default())
        .build()
    else {
        return false;
    };
    let signed_headers = signed
        .split(';')
        .filter(|name| !matches!(*name, "x-amz-date" | "x-amz-security-token"))
        .filter_map(|name| Some((name, header(name)?)));
    let url = format!("http://{}{uri}", header("host").unwrap_or_default());
    let Ok(request) = SignableRequest::new(
        method.as_str(),
        &url,
        signed_headers,
        SignableBody::Bytes(body),
    ) else {
        return false;
    };
    match sign(request, &params.into()) {
        Ok(output) => output
            .output()
            .headers()
            .any(|(name, value)| name == "authorization" && value == authorization),
        Err(_) => false,
    }
}

/// One `@connections` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub connection_id: String,
    pub body: String,
    /// What the fake answered.
    pub status: u16,
}

#[derive(Default)]
struct FakeState {
    put_events: Mutex<Vec<Value>>,
    /// Every message body sent to SQS, in order.
    sqs_messages: Mutex<Vec<String>>,
    put_events_failures: Mutex<usize>,
    calls: Mutex<Vec<Call>>,
    gone: Mutex<HashSet<String>>,
    scripted: Mutex<HashMap<String, VecDeque<u16>>>,
    delay: Mutex<Duration>,
    /// Where DynamoDB requests go (moto), and how many of each operation to throttle first.
    dynamodb: Mutex<Option<String>>,
    throttled: Mutex<HashMap<String, usize>>,
}

#[derive(Clone)]
pub struct FakeAws {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
}

impl FakeAws {
    pub async fn start() -> FakeAws {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/", post(put_events))
            .route("/{stage}/@connections/{id}", any(connections))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeAws { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The management endpoint of stage `test`, as WEBSOCKET_API_ENDPOINT.
    pub fn management_endpoint(&self) -> String {
        format!("http://{}/test", self.addr)
    }

    /// A function's environment for the stack's variables, with DynamoDB at `dynamodb_endpoint`
    /// (moto) and EventBridge and `@connections` here.
    pub fn function_env(
        &self,
        table: &str,
        dynamodb_endpoint: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("CONNECTIONS_TABLE", table.to_owned()),
            // the rooms table beside it (moto::table creates both)
            ("ROOMS_TABLE", table.replacen("connections-", "rooms-", 1)),
            ("EVENT_BUS_NAME", "webchat-test".into()),
            ("WEBSOCKET_API_ENDPOINT", self.management_endpoint()),
            ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint.to_owned()),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", self.endpoint()),
            ("AWS_ENDPOINT_URL_SQS", self.endpoint()),
        ]
    }

    /// Stands in front of DynamoDB at `upstream` (moto): requests pass through, but the next
    /// `count` calls of `operation` (e.g. `Scan`) answer 400 ProvisionedThroughputExceededException,
    /// as DynamoDB does when a table's throughput is exceeded. Point AWS_ENDPOINT_URL_DYNAMODB at
    /// [`FakeAws::endpoint`].
    pub fn throttle_dynamodb(&self, upstream: &str, operation: &str, count: usize) {
        *self.state.dynamodb.lock().unwrap() = Some(upstream.to_owned());
        self.state
            .throttled
            .lock()
            .unwrap()
            .insert(format!("DynamoDB_20120810.{operation}"), count);
    }

    /// How many calls of `operation` are still to be throttled.
    pub fn throttles_left(&self, operation: &str) -> usize {
        self.state
            .throttled
            .lock()
            .unwrap()
            .get(&format!("DynamoDB_20120810.{operation}"))
            .copied()
            .unwrap_or(0)
    }

    /// The connection answers 410 from now on.
    pub fn gone(&self, connection_id: &str) {
        self.state
            .gone
            .lock()
            .unwrap()
            .insert(connection_id.to_owned());
    }

    /// The next calls for `connection_id` answer these statuses, then normal service resumes.
    pub fn script(&self, connection_id: &str, statuses: &[u16]) {
        self.state
            .scripted
            .lock()
            .unwrap()
            .entry(connection_id.to_owned())
            .or_default()
            .extend(statuses);
    }

    /// The next `count` PutEvents calls report their entry as failed.
    pub fn fail_put_events(&self, count: usize) {
        *self.state.put_events_failures.lock().unwrap() = count;
    }

    /// Every `@connections` call waits this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// The PutEvents request bodies received.
    /// The bodies of every message sent to SQS, in order.
    pub fn sqs_messages(&self) -> Vec<String> {
        self.state.sqs_messages.lock().unwrap().clone()
    }

    /// The shard queue's URL here, as SHARD_QUEUE_URL (aws-sdk-sqs sends to the endpoint in
    /// AWS_ENDPOINT_URL_SQS, and names the queue in the body).
    pub fn queue_url(&self) -> String {
        format!("{}/000000000000/shards", self.endpoint())
    }

    pub fn put_events(&self) -> Vec<Value> {
        self.state.put_events.lock().unwrap().clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Bodies POSTed to `connection_id` and answered 200, in order.
    pub fn delivered_to(&self, connection_id: &str) -> Vec<String> {
        self.delivered()
            .into_iter()
            .filter(|(id, _)| id == connection_id)
            .map(|(_, body)| body)
            .collect()
    }

    /// (connection id, body) of every POST answered 200.
    pub fn delivered(&self) -> Vec<(String, String)> {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|call| call.method == "POST" && call.status == 200)
            .map(|call| (call.connection_id.clone(), call.body.clone()))
            .collect()
    }
}

async fn put_events(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target.starts_with("DynamoDB_20120810.") {
        return dynamodb(&state, target, &headers, body).await;
    }
    if target == "AmazonSQS.SendMessageBatch" {
        return send_message_batch(&state, &body);
    }
    if target != "AWSEvents.PutEvents" {
        return (
            StatusCode::BAD_REQUEST,
            format!("unexpected target {target:?}"),
        )
            .into_response();
    }
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let entries = request["Entries"].as_array().map_or(0, Vec::len);
    state.put_events.lock().unwrap().push(request);
    let fail = {
        let mut failures = state.put_events_failures.lock().unwrap();
        let fail = *failures > 0;
        *failures = failures.saturating_sub(1);
        fail
    };
    let answer = if fail {
        json!({"FailedEntryCount": entries, "Entries": vec![json!({"ErrorCode": "InternalFailure", "ErrorMessage": "scripted failure"}); entries]})
    } else {
        json!({"FailedEntryCount": 0, "Entries": (0..entries).map(|i| json!({"EventId": format!("event-{i}")})).collect::<Vec<_>>()})
    };
    (
        [("content-type", "application/x-amz-json-1.1")],
        answer.to_string(),
    )
        .into_response()
}

/// SQS's SendMessageBatch: records every body, answers every entry as sent (with the MD5 of its
/// body, as SQS does; aws-sdk-sqs does not check it).
fn send_message_batch(state: &FakeState, body: &str) -> Response {
    let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
    let mut successful = Vec::new();
    for entry in &entries {
        let body = entry["MessageBody"].as_str().unwrap_or_default().to_owned();
        let n = {
            let mut messages = state.sqs_messages.lock().unwrap();
            messages.push(body.clone());
            messages.len()
        };
        successful.push(json!({
            "Id": entry["Id"],
            "MessageId": format!("00000000-0000-4000-8000-{n:012}"),
            "MD5OfMessageBody": format!("{:x}", md5_of(body.as_bytes())),
        }));
    }
    (
        [("content-type", "application/x-amz-json-1.0")],
        json!({"Successful": successful, "Failed": []}).to_string(),
    )
        .into_response()
}

/// MD5 (RFC 1321), for SQS's `MD5OfMessageBody`.
fn md5_of(data: &[u8]) -> u128 {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    let mut h: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    for chunk in message.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(k[i])
                .wrapping_add(m[g])
                .rotate_left(S[i]);
            (a, d, c) = (d, c, b);
            b = b.wrapping_add(rotated);
        }
        h = [
            h[0].wrapping_add(a),
            h[1].wrapping_add(b),
            h[2].wrapping_add(c),
            h[3].wrapping_add(d),
        ];
    }
    u128::from_be_bytes(
        h.iter()
            .flat_map(|word| word.to_le_bytes())
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap(),
    )
}

/// A DynamoDB call: throttled if scripted, else passed to moto as it came.
async fn dynamodb(state: &FakeState, target: &str, headers: &HeaderMap, body: String) -> Response {
    let throttle = {
        let mut throttled = state.throttled.lock().unwrap();
        match throttled.get_mut(target) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    };
    if throttle {
        // DynamoDB's answer, as its API reference documents it (AWS JSON 1.0 error shape).
        let body = json!({
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.",
        });
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/x-amz-json-1.0")],
            body.to_string(),
        )
            .into_response();
    }
    let upstream = state.dynamodb.lock().unwrap().clone();
    let Some(upstream) = upstream else {
        return (StatusCode::BAD_REQUEST, "no DynamoDB upstream").into_response();
    };
    let (status, content_type, answer) = forward(&upstream, target, headers, &body).await;
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", content_type)],
        answer,
    )
        .into_response()
}

/// One HTTP/1.0 POST to `upstream` (so the answer is neither chunked nor kept alive).
async fn forward(
    upstream: &str,
    target: &str,
    headers: &HeaderMap,
    body: &str,
) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = upstream.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let request = format!(
        "POST / HTTP/1.0\r\nhost: {host}\r\ncontent-type: {}\r\nx-amz-target: {target}\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n{body}",
        header("content-type"),
        header("authorization"),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| "application/x-amz-json-1.0".into());
    (status, content_type, response[split + 4..].to_vec())
}

fn aws_error(status: u16, error_type: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [
            ("x-amzn-ErrorType", error_type.to_string()),
            ("content-type", "application/json".to_string()),
        ],
        json!({"message": format!("scripted {error_type}")}).to_string(),
    )
        .into_response()
}

async fn connections(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: axum::http::Uri,
    Path((_stage, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !signature_is_valid(&method, &uri, &headers, &body) {
        return aws_error(403, "InvalidSignatureException");
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let scripted = state
        .scripted
        .lock()
        .unwrap()
        .get_mut(&id)
        .and_then(VecDeque::pop_front);
    let status = scripted.unwrap_or_else(|| {
        if state.gone.lock().unwrap().contains(&id) {
            410
        } else {
            200
        }
    });
    state.calls.lock().unwrap().push(Call {
        method: method.to_string(),
        connection_id: id.clone(),
        body,
        status,
    });
    match (status, method) {
        (200, Method::GET) => (
            [("content-type", "application/json")],
            json!({"connectedAt": "2026-11-28T07:00:00.000Z", "lastActiveAt": "2026-11-28T07:30:00.000Z", "identity": {"sourceIp": "203.0.113.7", "userAgent": "wscat"}}).to_string(),
        )
            .into_response(),
        (200, Method::DELETE) => StatusCode::NO_CONTENT.into_response(),
        (200, _) => StatusCode::OK.into_response(),
        (410, _) => aws_error(410, "GoneException"),
        (429, _) => aws_error(429, "LimitExceededException"),
        (413, _) => aws_error(413, "PayloadTooLargeException"),
        (other, _) => aws_error(other, "InternalServerErrorException"),
    }
}

#[test]
fn md5_matches_rfc_1321s_test_vectors() {
    assert_eq!(
        format!("{:032x}", md5_of(b"")),
        "d41d8cd98f00b204e9800998ecf8427e"
    );
    assert_eq!(
        format!("{:032x}", md5_of(b"abc")),
        "900150983cd24fb0d6963f7d28e17f72"
    );
    let long = b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
    assert_eq!(
        format!("{:032x}", md5_of(long)),
        "57edf4a22be3c955ac49da2e2107b67a"
    );
}
