//! The `$connect` authorizer: API Gateway's Lambda REQUEST authorizer event in, an IAM policy
//! and the connection's identity out. The `authorize` function runs it; `webchat-local` runs the
//! same code before every upgrade.
//!
//! The token rides in `Sec-WebSocket-Protocol` (the entry after [`SUBPROTOCOL`]; a browser can set
//! no other header on a WebSocket) or in `?token=`. A valid one gives a policy allowing the
//! connect, with the context every route of the connection then reads as
//! `requestContext.authorizer`: `user` (the token's `sub`), `name`, `exp`. Anything else is the
//! error `Unauthorized`, which API Gateway answers with 401; why goes to the log only.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{FetchKeys, Identity, Refusal, Verifier};
use jsonwebtoken::jwk::Jwk;

/// The subprotocol a client offers before its token; the `$connect` response echoes it.
pub const SUBPROTOCOL: &str = "webchat.v1";
/// The header the subprotocols are offered in.
pub const PROTOCOL_HEADER: &str = "Sec-WebSocket-Protocol";
/// The query parameter a token may ride in instead.
pub const TOKEN_PARAMETER: &str = "token";
/// The error message API Gateway turns into a 401.
pub const UNAUTHORIZED: &str = "Unauthorized";

/// The keys of the authorizer's context, as routes find them in `requestContext.authorizer`.
pub mod context {
    pub const USER: &str = "user";
    pub const NAME: &str = "name";
    pub const EXP: &str = "exp";
}

/// The fields of a WebSocket API's REQUEST authorizer event this reads. (aws_lambda_events'
/// `ApiGatewayCustomAuthorizerRequestTypeRequest` has a REST API's request context.)
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerRequest {
    #[serde(default)]
    pub method_arn: Option<String>,
    #[serde(default)]
    pub headers: Option<HashMap<String, String>>,
    #[serde(default)]
    pub query_string_parameters: Option<HashMap<String, String>>,
    #[serde(default)]
    pub request_context: Option<AuthorizerRequestContext>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerRequestContext {
    #[serde(default)]
    pub connection_id: Option<String>,
    #[serde(default)]
    pub route_key: Option<String>,
}

/// Why a connect was refused (logged; the client sees 401 only).
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("no token: neither {PROTOCOL_HEADER}: {SUBPROTOCOL}, <token> nor ?{TOKEN_PARAMETER}=")]
    NoToken,
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl AuthorizerRequest {
    /// A header's value, its name in any case (API Gateway passes them as the client sent them).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .as_ref()?
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The token offered: after `webchat.v1` in the subprotocols, else `?token=`.
    pub fn token(&self) -> Option<&str> {
        self.header(PROTOCOL_HEADER)
            .and_then(token_in_protocols)
            .or_else(|| {
                self.query_string_parameters
                    .as_ref()?
                    .get(TOKEN_PARAMETER)
                    .map(String::as_str)
                    .filter(|token| !token.is_empty())
            })
    }
}

/// The entry after `webchat.v1` in a `Sec-WebSocket-Protocol` value.
pub fn token_in_protocols(offered: &str) -> Option<&str> {
    let mut entries = offered.split(',').map(str::trim);
    entries.find(|entry| *entry == SUBPROTOCOL)?;
    entries.next().filter(|token| !token.is_empty())
}

/// Whether a `Sec-WebSocket-Protocol` value offers `webchat.v1` (then the answer must echo it).
pub fn offers_subprotocol(offered: &str) -> bool {
    offered.split(',').any(|entry| entry.trim() == SUBPROTOCOL)
}

/// Checks the connect's token at `now` (seconds since the epoch).
pub async fn authorize<F: FetchKeys<Key = Jwk>>(
    verifier: &Verifier<F>,
    request: &AuthorizerRequest,
    now: i64,
) -> Result<Identity, Denied> {
    let token = request.token().ok_or(Denied::NoToken)?;
    Ok(verifier.verify(token, now).await?)
}

/// Why an authorizer invocation gives no policy.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// Reported as the error `Unauthorized`: API Gateway answers 401.
    #[error("{UNAUTHORIZED}")]
    Unauthorized,
    /// Not a REQUEST authorizer event (API Gateway answers 500).
    #[error("malformed event: {0}")]
    MalformedEvent(String),
}

/// Serves one authorizer event, as Lambda hands it over (JSON), at `now`: the `authorize`
/// function's handler. A refusal is logged with its reason, and stores nothing.
pub async fn handle<F: FetchKeys<Key = Jwk>>(
    verifier: &Verifier<F>,
    event: Value,
    now: i64,
) -> Result<Value, AuthorizeError> {
    let malformed = |why: String| {
        tracing::error!(error = why, "not an authorizer event");
        AuthorizeError::MalformedEvent(why)
    };
    let request: AuthorizerRequest = serde_json::from_value(event)
        .map_err(|e| malformed(format!("not an authorizer event: {e}")))?;
    let method_arn = request
        .method_arn
        .clone()
        .filter(|arn| !arn.is_empty())
        .ok_or_else(|| malformed("no methodArn".into()))?;
    let connection_id = request
        .request_context
        .as_ref()
        .and_then(|context| context.connection_id.clone())
        .unwrap_or_default();
    tracing::Span::current().record("connection_id", connection_id.as_str());
    match authorize(verifier, &request, now).await {
        Ok(identity) => {
            tracing::debug!(connection_id, user = identity.user, "connect allowed");
            Ok(allow(&identity, &method_arn))
        }
        Err(denied) => {
            tracing::info!(connection_id, reason = %denied, "connect refused: 401");
            Err(AuthorizeError::Unauthorized)
        }
    }
}

/// The authorizer's answer for an allowed connect: a policy allowing this `$connect` (its
/// `methodArn`), and the identity as context.
pub fn allow(identity: &Identity, method_arn: &str) -> Value {
    json!({
        "principalId": identity.user,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{
                "Action": "execute-api:Invoke",
                "Effect": "Allow",
                "Resource": method_arn,
            }],
        },
        "context": context_of(identity),
    })
}

/// The context the authorizer gives: what every route of the connection reads.
pub fn context_of(identity: &Identity) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert(context::USER.into(), json!(identity.user));
    context.insert(context::NAME.into(), json!(identity.name));
    context.insert(context::EXP.into(), json!(identity.expires_at));
    context
}

/// The identity a route finds in `requestContext.authorizer` (API Gateway may pass the context's
/// numbers as strings); `None` where no authorizer ran. It fails closed: an authorizer's answer
/// (a `principalId`) with an `exp` that cannot be read counts as expired, never as no sign-in.
pub fn identity_in(authorizer: &HashMap<String, Value>) -> Option<Identity> {
    let text = |key: &str| match authorizer.get(key)? {
        Value::String(text) => Some(text.clone()),
        other @ Value::Number(_) => Some(other.to_string()),
        _ => None,
    };
    let user = text(context::USER)
        .or_else(|| text(PRINCIPAL_ID))
        .filter(|user| !user.is_empty())?;
    let name = text(context::NAME).unwrap_or_else(|| user.clone());
    let expires_at = text(context::EXP)
        .and_then(|exp| exp.parse::<f64>().ok())
        .filter(|exp| exp.is_finite())
        .map_or(i64::MIN, |exp| exp as i64);
    Some(Identity {
        user,
        name,
        expires_at,
    })
}

/// Where API Gateway puts the authorizer's `principalId` in a route's `requestContext.authorizer`.
pub const PRINCIPAL_ID: &str = "principalId";

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], query: &[(&str, &str)]) -> AuthorizerRequest {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        AuthorizerRequest {
            method_arn: Some("arn:aws:execute-api:eu-west-1:1:api/stage/$connect".into()),
            headers: map(headers),
            query_string_parameters: map(query),
            request_context: None,
        }
    }

    #[test]
    fn the_token_follows_the_subprotocol_or_is_in_the_query() {
        let sent = request(
            &[("sec-websocket-protocol", "webchat.v1, abc.def.ghi")],
            &[],
        );
        assert_eq!(sent.token(), Some("abc.def.ghi"));
        let sent = request(
            &[("Sec-WebSocket-Protocol", "webchat.v1,t")],
            &[("token", "q")],
        );
        assert_eq!(sent.token(), Some("t"));
        let sent = request(&[("Sec-WebSocket-Protocol", "other, t")], &[("token", "q")]);
        assert_eq!(sent.token(), Some("q"));
        let sent = request(
            &[("Sec-WebSocket-Protocol", "webchat.v1")],
            &[("token", "")],
        );
        assert_eq!(sent.token(), None);
        assert_eq!(request(&[], &[]).token(), None);
        assert!(offers_subprotocol("chat, webchat.v1"));
        assert!(!offers_subprotocol("webchat.v10"));
    }

    #[test]
    fn the_context_round_trips_as_routes_receive_it_numbers_or_strings() {
        let identity = Identity {
            user: "u-1".into(),
            name: "Ada".into(),
            expires_at: 1_700_000_000,
        };
        let answer = allow(&identity, "arn:m");
        assert_eq!(answer["principalId"], "u-1");
        assert_eq!(
            answer["policyDocument"]["Statement"][0]["Resource"],
            "arn:m"
        );
        assert_eq!(answer["policyDocument"]["Statement"][0]["Effect"], "Allow");
        let mut authorizer: HashMap<String, Value> =
            serde_json::from_value(answer["context"].clone()).unwrap();
        assert_eq!(identity_in(&authorizer), Some(identity.clone()));
        authorizer.insert("exp".into(), json!("1700000000"));
        authorizer.insert("principalId".into(), json!("u-1"));
        assert_eq!(identity_in(&authorizer), Some(identity));
        assert_eq!(identity_in(&HashMap::new()), None);
        // an authorizer's answer whose exp cannot be read is expired, not signed out
        authorizer.insert("exp".into(), json!("soon"));
        assert_eq!(identity_in(&authorizer).unwrap().expires_at, i64::MIN);
        authorizer.remove("exp");
        authorizer.remove("user");
        assert_eq!(identity_in(&authorizer).unwrap().user, "u-1");
    }
}
