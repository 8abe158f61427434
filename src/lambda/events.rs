//! Events in the shapes API Gateway and EventBridge deliver them to Lambda: the one builder the
//! local gateway and the route tests use. (The SQS event is built beside the queue that delivers
//! it, [`crate::adapters::memory::sqs_event`]. The process-level tests, `tests/lambda`, write
//! their events out as literal JSON instead: they state the wire shape independently of this
//! code.)

use std::collections::HashMap;

use aws_lambda_events::apigw::{
    ApiGatewayWebsocketProxyRequest, ApiGatewayWebsocketProxyRequestContext,
};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use base64::Engine;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;

use crate::ports::BusEvent;
use crate::protocol::RouteKey;

/// The account id in local events: AWS's documentation placeholder, so nobody mistakes it.
const LOCAL_ACCOUNT: &str = "123456789012";

/// An id in API Gateway's style: 11 random bytes in URL-safe base64, e.g. `L0SM9cOFvHcCIhw=`.
/// URL-safe so it can stand in an `@connections/{id}` path unescaped.
pub fn gateway_id() -> String {
    let mut bytes = [0u8; 11];
    fastrand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// What the gateway knows of a connection, copied into every event for it.
#[derive(Clone, Debug)]
pub struct ConnectionMeta {
    pub connection_id: String,
    pub connected_at: DateTime<Utc>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// What the `$connect` authorizer gave (`principalId` and its context), in every event's
    /// `requestContext.authorizer`; empty without one.
    pub authorizer: HashMap<String, Value>,
}

/// Where the gateway runs, as API Gateway names it in every event.
#[derive(Clone, Debug)]
pub struct StageMeta {
    pub api_id: String,
    pub stage: String,
    pub domain_name: String,
}

/// What one event is about.
pub enum Kind<'a> {
    Connect {
        headers: &'a HeaderMap,
        query: &'a [(String, String)],
    },
    Message {
        route: RouteKey,
        body: String,
        base64: bool,
    },
    Disconnect {
        status_code: u16,
        reason: String,
    },
}

pub fn websocket_event(
    stage: &StageMeta,
    connection: &ConnectionMeta,
    kind: Kind<'_>,
) -> ApiGatewayWebsocketProxyRequest {
    let now = Utc::now();
    let request_id = gateway_id();
    let mut context = ApiGatewayWebsocketProxyRequestContext::default();
    context.apiid = Some(stage.api_id.clone());
    context.stage = Some(stage.stage.clone());
    context.domain_name = Some(stage.domain_name.clone());
    context.connection_id = Some(connection.connection_id.clone());
    context.connected_at = connection.connected_at.timestamp_millis();
    context.request_id = Some(request_id.clone());
    context.extended_request_id = Some(request_id);
    context.request_time = Some(now.format("%d/%b/%Y:%H:%M:%S %z").to_string());
    context.request_time_epoch = now.timestamp_millis();
    context.message_direction = Some("IN".into());
    context.identity.source_ip = connection.source_ip.clone();
    context.identity.user_agent = connection.user_agent.clone();
    context.authorizer.fields = connection.authorizer.clone();

    let mut event = ApiGatewayWebsocketProxyRequest::default();
    event.is_base64_encoded = false;
    match kind {
        Kind::Connect { headers, query } => {
            context.route_key = Some(RouteKey::Connect.as_str().into());
            context.event_type = Some("CONNECT".into());
            event.headers = headers.clone();
            event.multi_value_headers = headers.clone();
            // As API Gateway does: every value in multiValueQueryStringParameters, and the last
            // one of a repeated key in queryStringParameters (`?name=a&name=b` gives "b").
            let mut all: HashMap<String, Vec<String>> = HashMap::new();
            for (key, value) in query {
                all.entry(key.clone()).or_default().push(value.clone());
            }
            let last: HashMap<String, Vec<String>> = all
                .iter()
                .filter_map(|(key, values)| Some((key.clone(), vec![values.last()?.clone()])))
                .collect();
            event.query_string_parameters = last.into();
            event.multi_value_query_string_parameters = all.into();
        }
        Kind::Message {
            route,
            body,
            base64,
        } => {
            context.route_key = Some(route.as_str().into());
            context.event_type = Some("MESSAGE".into());
            context.message_id = Some(gateway_id());
            event.body = Some(body);
            event.is_base64_encoded = base64;
        }
        Kind::Disconnect {
            status_code,
            reason,
        } => {
            context.route_key = Some(RouteKey::Disconnect.as_str().into());
            context.event_type = Some("DISCONNECT".into());
            context.disconnect_status_code = Some(i64::from(status_code));
            context.disconnect_reason = Some(reason);
        }
    }
    event.request_context = context;
    event
}

/// The event EventBridge hands to a rule's target.
pub fn eventbridge_event(event: &BusEvent, region: &str) -> EventBridgeEvent<Value> {
    let mut delivered = EventBridgeEvent::<Value>::default();
    delivered.version = Some("0".into());
    delivered.id = Some(uuid_like());
    delivered.detail_type = event.detail_type.clone();
    delivered.source = event.source.clone();
    delivered.account = Some(LOCAL_ACCOUNT.into());
    delivered.time = Some(Utc::now());
    delivered.region = Some(region.into());
    delivered.resources = Some(Vec::new());
    // The bus only carries JSON details (the domain serializes them); anything else is kept as a
    // string so the consumer reports it instead of the bus dropping it.
    delivered.detail =
        serde_json::from_str(&event.detail).unwrap_or_else(|_| Value::String(event.detail.clone()));
    delivered
}

fn uuid_like() -> String {
    let hex = format!("{:032x}", fastrand::u128(..));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage() -> StageMeta {
        StageMeta {
            api_id: "local".into(),
            stage: "local".into(),
            domain_name: "127.0.0.1:3001".into(),
        }
    }

    fn connection() -> ConnectionMeta {
        ConnectionMeta {
            connection_id: "L0SM9cOFvHcCIhw=".into(),
            connected_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            source_ip: Some("127.0.0.1".into()),
            user_agent: Some("wscat".into()),
            authorizer: Default::default(),
        }
    }

    #[test]
    fn ids_look_like_api_gateways() {
        for _ in 0..100 {
            let id = gateway_id();
            assert_eq!(id.len(), 16);
            assert!(id.ends_with('='));
            assert!(
                id[..15]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
        }
        assert_ne!(gateway_id(), gateway_id());
    }

    #[test]
    fn a_connect_event_carries_what_api_gateway_sends() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:3001".parse().unwrap());
        let query = vec![("name".to_string(), "alice".to_string())];
        let event = websocket_event(
            &stage(),
            &connection(),
            Kind::Connect {
                headers: &headers,
                query: &query,
            },
        );
        let value = serde_json::to_value(&event).unwrap();
        let context = &value["requestContext"];
        assert_eq!(context["messageDirection"], "IN");
        assert_eq!(context["routeKey"], "$connect");
        assert_eq!(context["eventType"], "CONNECT");
        assert_eq!(context["connectionId"], "L0SM9cOFvHcCIhw=");
        assert_eq!(context["connectedAt"], 1_700_000_000_123i64);
        assert_eq!(context["stage"], "local");
        assert_eq!(context["domainName"], "127.0.0.1:3001");
        assert_eq!(context["apiId"], "local");
        assert_eq!(context["identity"]["sourceIp"], "127.0.0.1");
        assert!(
            context["requestId"]
                .as_str()
                .is_some_and(|id| id.len() == 16)
        );
        assert_eq!(event.query_string_parameters.first("name"), Some("alice"));
        assert_eq!(value["headers"]["host"], "127.0.0.1:3001");
        // and it reads back as the Lambda runtime would deserialize it
        let back: ApiGatewayWebsocketProxyRequest = serde_json::from_value(value).unwrap();
        assert_eq!(back.query_string_parameters.first("name"), Some("alice"));
    }

    #[test]
    fn a_message_event_names_its_route_and_carries_the_frame() {
        let kind = Kind::Message {
            route: RouteKey::Broadcast,
            body: r#"{"action":"broadcast"}"#.into(),
            base64: false,
        };
        let value = serde_json::to_value(websocket_event(&stage(), &connection(), kind)).unwrap();
        assert_eq!(value["requestContext"]["routeKey"], "broadcast");
        assert_eq!(value["requestContext"]["eventType"], "MESSAGE");
        assert!(value["requestContext"]["messageId"].is_string());
        assert_eq!(value["body"], r#"{"action":"broadcast"}"#);
        assert_eq!(value["isBase64Encoded"], false);
    }

    #[test]
    fn an_eventbridge_event_has_the_envelope_a_rule_target_receives() {
        let bus = BusEvent {
            source: "webchat".into(),
            detail_type: "welcome".into(),
            detail: r#"{"connectionId":"x","message":"m"}"#.into(),
        };
        let value = serde_json::to_value(eventbridge_event(&bus, "local")).unwrap();
        assert_eq!(value["source"], "webchat");
        assert_eq!(value["detail-type"], "welcome");
        assert_eq!(value["version"], "0");
        assert_eq!(value["detail"], json!({"connectionId":"x","message":"m"}));
        assert!(value["id"].as_str().is_some_and(|id| id.len() == 36));
    }
}
