//! Sign-in on the local gateway, with the `authorize` function's code: every upgrade is
//! authorized first (a refusal is the 401 API Gateway answers), and the authorizer's context
//! reaches every route's event as `requestContext.authorizer`. `--dev-issuer` makes the gateway
//! its own OpenID issuer: discovery and a JWKS on its port, and `GET /dev/token?name=NAME`
//! minting a one-hour token for a loopback client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use crate::auth::issuer::LocalIssuer;
use crate::auth::jwks::{HttpKeys, IssuerUrl};
use crate::auth::{Expected, Identity, MAX_TOKEN_NAME_CHARS, Verifier};
use crate::lambda::authorizer::{self, AuthorizerRequest, AuthorizerRequestContext};

/// The audience of the dev issuer's tokens.
pub const DEV_AUDIENCE: &str = "webchat-local";

/// How connects are authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Tokens of this issuer (its OpenID discovery and JWKS), for this audience.
    Issuer { issuer: IssuerUrl, audience: String },
    /// The gateway is its own issuer (`--dev-issuer`), at its own address.
    Dev,
}

/// The authorizer of a gateway with sign-in.
pub(crate) struct Authorizer {
    verifier: Verifier<HttpKeys>,
    /// The gateway's own issuer, with `--dev-issuer`.
    pub(crate) dev: Option<Arc<LocalIssuer>>,
}

impl Authorizer {
    /// The authorizer for `auth` on a gateway listening at `local`.
    pub(crate) fn new(auth: &Auth, local: SocketAddr) -> std::io::Result<Self> {
        let (issuer, audience, dev) = match auth {
            Auth::Issuer { issuer, audience } => (issuer.clone(), audience.clone(), None),
            Auth::Dev => {
                let host = if local.ip().is_unspecified() || local.ip().is_loopback() {
                    match local {
                        SocketAddr::V6(_) if local.ip().is_loopback() => "[::1]".to_owned(),
                        _ => "127.0.0.1".to_owned(),
                    }
                } else {
                    return Err(std::io::Error::other(format!(
                        "--dev-issuer needs a loopback listen address (or 0.0.0.0): its tokens \
                         and keys are served to this machine only, and {local} is not one"
                    )));
                };
                let url = format!("http://{host}:{}", local.port());
                let issuer = IssuerUrl::parse(&url).map_err(std::io::Error::other)?;
                let dev = LocalIssuer::new(url);
                (issuer, DEV_AUDIENCE.to_owned(), Some(dev))
            }
        };
        let expected = Expected {
            issuer: issuer.as_str().to_owned(),
            audience,
        };
        Ok(Authorizer {
            verifier: Verifier::new(HttpKeys::new(issuer), expected),
            dev,
        })
    }

    /// The issuer tokens must come from.
    pub(crate) fn issuer(&self) -> &str {
        &self.verifier.expected().issuer
    }

    /// The audience tokens must be for.
    pub(crate) fn audience(&self) -> &str {
        &self.verifier.expected().audience
    }

    /// Checks an upgrade's token as the `authorize` function checks a `$connect`'s.
    pub(crate) async fn authorize(
        &self,
        connection_id: &str,
        headers: &HeaderMap,
        query: &[(String, String)],
        method_arn: String,
    ) -> Result<Identity, authorizer::Denied> {
        let request = AuthorizerRequest {
            method_arn: Some(method_arn),
            headers: Some(
                headers
                    .iter()
                    .filter_map(|(name, value)| {
                        Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                    })
                    .collect(),
            ),
            // as API Gateway: the last value of a repeated parameter
            query_string_parameters: Some(query.iter().cloned().collect()),
            request_context: Some(AuthorizerRequestContext {
                connection_id: Some(connection_id.to_owned()),
                route_key: Some("$connect".into()),
            }),
        };
        let now = chrono::Utc::now().timestamp();
        authorizer::authorize(&self.verifier, &request, now).await
    }
}

/// `requestContext.authorizer` of a connection the authorizer allowed: `principalId` and the
/// context, as API Gateway passes them to every route.
pub(crate) fn request_context(identity: &Identity) -> HashMap<String, Value> {
    let mut fields: HashMap<String, Value> = authorizer::context_of(identity).into_iter().collect();
    fields.insert(authorizer::PRINCIPAL_ID.into(), json!(identity.user));
    fields
}

/// The 401 a refused connect gets, with API Gateway's body.
pub(crate) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"message": authorizer::UNAUTHORIZED}).to_string(),
    )
        .into_response()
}

/// `GET /dev/token?name=NAME`: a one-hour token of the dev issuer for `name`, as plain text (so
/// `$(curl …)` gives it to wscat), to a loopback client only.
pub(crate) async fn dev_token(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let Some(dev) = shared.authorizer.as_ref().and_then(|a| a.dev.clone()) else {
        return (
            StatusCode::NOT_FOUND,
            "no dev issuer here: start webchat-local with --dev-issuer to mint tokens\n",
        )
            .into_response();
    };
    // a page on another site whose name was made to resolve to 127.0.0.1 (DNS rebinding) comes
    // from loopback too, but names its own host
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<axum::http::uri::Authority>().ok());
    let loopback_host = host
        .as_ref()
        .is_some_and(|host| crate::auth::jwks::is_loopback(host.host()));
    if !peer.ip().is_loopback() || !loopback_host {
        tracing::info!(%peer, host = ?host.map(|h| h.to_string()), "dev token refused: not a loopback client");
        return (
            StatusCode::FORBIDDEN,
            "dev tokens are minted for clients on this machine only\n",
        )
            .into_response();
    }
    let name = query
        .iter()
        .rev()
        .find(|(key, _)| key == "name")
        .map(|(_, name)| name.trim());
    let name = match name {
        None | Some("") => {
            return (
                StatusCode::BAD_REQUEST,
                "give a name: /dev/token?name=ada\n",
            )
                .into_response();
        }
        Some(name)
            if name.chars().count() > MAX_TOKEN_NAME_CHARS
                || name.chars().any(char::is_control) =>
        {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "a name is at most {MAX_TOKEN_NAME_CHARS} characters, none of them control characters\n"
                ),
            )
                .into_response();
        }
        Some(name) => name,
    };
    let token = dev.mint_for(name, DEV_AUDIENCE, chrono::Utc::now().timestamp());
    tracing::info!(name, user = %crate::auth::issuer::dev_user(name), "dev token minted");
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        token,
    )
        .into_response()
}
