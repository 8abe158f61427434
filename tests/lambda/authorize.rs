//! The shipped `authorize` binary under the Runtime API, against an issuer served on loopback
//! (webchat's own, `auth::issuer`, publishing discovery and a JWKS as Cognito does): what it
//! allows, what it refuses with `Unauthorized` (API Gateway's 401), and how often it asks the
//! issuer for keys.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use serde_json::{Value, json};
use webchat::auth::issuer::LocalIssuer;

use crate::runtime_api::{Answer, Function};

const AUDIENCE: &str = "webchat-client";
const METHOD_ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/stage/$connect";

/// An issuer on a free loopback port, and the authorizer configured for it.
async fn setup() -> (Arc<LocalIssuer>, Function) {
    setup_logging_at("debug").await
}

/// [`setup`] with the function's `LOG_LEVEL`.
async fn setup_logging_at(level: &str) -> (Arc<LocalIssuer>, Function) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = LocalIssuer::new(format!("http://{}", listener.local_addr().unwrap()));
    let app: axum::Router = issuer.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let function = Function::start(
        "authorize",
        &[
            ("JWT_ISSUER", issuer.url().to_owned()),
            ("JWT_AUDIENCE", AUDIENCE.to_owned()),
            ("LOG_LEVEL", level.to_owned()),
        ],
    )
    .await;
    (issuer, function)
}

/// A REQUEST authorizer event as API Gateway sends it for a WebSocket `$connect` (AWS's
/// "Lambda REQUEST authorizer" input for WebSocket APIs), the token in `Sec-WebSocket-Protocol`.
fn event(protocols: Option<&str>, query: Value) -> Value {
    let mut headers = json!({
        "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "X-Amzn-Trace-Id": "Root=1-5f84c7a9-0e4b5c5c1d2e3f4a5b6c7d8e",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https"
    });
    if let Some(protocols) = protocols {
        headers["Sec-WebSocket-Protocol"] = json!(protocols);
    }
    let multi: serde_json::Map<String, Value> = headers
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), json!([v])))
        .collect();
    let multi_query: serde_json::Map<String, Value> = query
        .as_object()
        .map(|q| q.iter().map(|(k, v)| (k.clone(), json!([v]))).collect())
        .unwrap_or_default();
    json!({
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "stageVariables": {},
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "extendedRequestId": "T8yTjGqVoAMFb5g=",
            "requestTime": "06/Dec/2026:10:00:00 +0000",
            "messageDirection": "IN",
            "stage": "stage",
            "connectedAt": 1796551200000i64,
            "requestTimeEpoch": 1796551200000i64,
            "identity": { "sourceIp": "203.0.113.7", "userAgent": null },
            "requestId": "T8yTjGqVoAMFb5g=",
            "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "connectionId": "T8yTjcw4oAMCJBw=",
            "apiId": "abcdef1234"
        }
    })
}

fn offered(token: &str) -> Value {
    event(Some(&format!("webchat.v1, {token}")), Value::Null)
}

/// Claims of a valid ID token for `sub`, issued by `issuer` now.
fn claims(issuer: &LocalIssuer, sub: &str) -> Value {
    let now = Utc::now().timestamp();
    json!({
        "iss": issuer.url(),
        "sub": sub,
        "aud": AUDIENCE,
        "token_use": "id",
        "name": "Ada Lovelace",
        "iat": now,
        "exp": now + 3600,
    })
}

/// An invocation refused as API Gateway needs it for a 401: the error `Unauthorized`, nothing
/// else (the reason is in the log, not the answer).
fn assert_unauthorized(answer: Answer) {
    let (error_type, body) = answer.error();
    assert_eq!(error_type, "Unauthorized");
    assert_eq!(body["errorMessage"], "Unauthorized");
}

/// Waits for the refusal naming `reason` in the function's log (its stderr is read by a thread
/// of its own, which may be a moment behind the invocation's answer).
async fn assert_logged(function: &Function, reason: &str) {
    crate::support::poll_until(&format!("a refusal naming {reason:?} in the log"), || {
        function
            .logs()
            .iter()
            .any(|line| line.contains("connect refused") && line.contains(reason))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_valid_token_in_the_subprotocols_allows_the_connect_with_its_identity() {
    let (issuer, function) = setup().await;
    let token = issuer.mint(&claims(&issuer, "user-1"));
    let answer = function.invoke(&offered(&token)).await.response();
    assert_eq!(answer["principalId"], "user-1");
    assert_eq!(
        answer["policyDocument"],
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Action": "execute-api:Invoke",
                "Effect": "Allow",
                "Resource": METHOD_ARN,
            }]
        })
    );
    assert_eq!(answer["context"]["user"], "user-1");
    assert_eq!(answer["context"]["name"], "Ada Lovelace");
    assert!(answer["context"]["exp"].as_i64().unwrap() > Utc::now().timestamp());
    // the same token in ?token= does too
    let answer = function
        .invoke(&event(None, json!({ "token": token })))
        .await
        .response();
    assert_eq!(answer["principalId"], "user-1");
    // keys were fetched once, through discovery
    assert_eq!(issuer.requests(), (1, 1));
}

#[tokio::test]
async fn a_cognito_access_token_is_for_its_client_id() {
    let (issuer, function) = setup().await;
    let now = Utc::now().timestamp();
    let token = issuer.mint(&json!({
        "iss": issuer.url(),
        "sub": "user-2",
        "client_id": AUDIENCE,
        "token_use": "access",
        "scope": "openid",
        "username": "grace",
        "cognito:username": "grace",
        "iat": now,
        "exp": now + 3600,
    }));
    let answer = function.invoke(&offered(&token)).await.response();
    assert_eq!(answer["context"]["user"], "user-2");
    assert_eq!(answer["context"]["name"], "grace");
    // for another client, it is not
    let mut other = claims(&issuer, "user-2");
    other.as_object_mut().unwrap().remove("aud");
    other["client_id"] = json!("another-client");
    assert_unauthorized(function.invoke(&offered(&issuer.mint(&other))).await);
    assert_logged(&function, "another-client").await;
}

#[tokio::test]
async fn expired_wrong_issuer_wrong_audience_and_no_token_are_unauthorized() {
    let (issuer, function) = setup().await;
    let mut expired = claims(&issuer, "u");
    expired["exp"] = json!(Utc::now().timestamp() - 120);
    assert_unauthorized(function.invoke(&offered(&issuer.mint(&expired))).await);
    assert_logged(&function, "expired").await;

    let mut foreign = claims(&issuer, "u");
    foreign["iss"] = json!("https://evil.example.com");
    assert_unauthorized(function.invoke(&offered(&issuer.mint(&foreign))).await);
    assert_logged(&function, "evil.example.com").await;

    let mut elsewhere = claims(&issuer, "u");
    elsewhere["aud"] = json!("another-app");
    assert_unauthorized(function.invoke(&offered(&issuer.mint(&elsewhere))).await);
    assert_logged(&function, "another-app").await;

    assert_unauthorized(function.invoke(&event(None, Value::Null)).await);
    assert_unauthorized(
        function
            .invoke(&event(Some("webchat.v1"), Value::Null))
            .await,
    );
    assert_logged(&function, "no token").await;
    assert_unauthorized(function.invoke(&offered("not.a.token")).await);
    // the function kept serving: a valid token still passes
    let valid = issuer.mint(&claims(&issuer, "u"));
    function.invoke(&offered(&valid)).await.response();
}

#[tokio::test]
async fn alg_none_and_hs256_keyed_with_the_public_key_are_unauthorized() {
    let (issuer, function) = setup().await;
    let kid = issuer.jwks()["keys"][0]["kid"].as_str().unwrap().to_owned();
    let body = URL_SAFE_NO_PAD.encode(claims(&issuer, "mallory").to_string());
    let none = format!(
        "{}.{body}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string())
    );
    assert_unauthorized(function.invoke(&offered(&none)).await);

    // the classic confusion: the issuer's public key (as published) used as an HMAC secret
    let public = issuer.jwks()["keys"][0].to_string();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid);
    let hs256 = jsonwebtoken::encode(
        &header,
        &claims(&issuer, "mallory"),
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    assert_unauthorized(function.invoke(&offered(&hs256)).await);
    assert_logged(&function, "HS256").await;
    // neither made the authorizer fetch keys
    assert_eq!(issuer.requests(), (0, 0));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_made_up_kids_fetch_nothing_more() {
    let (issuer, function) = setup().await;
    let first = issuer.mint(&claims(&issuer, "u"));
    function.invoke(&offered(&first)).await.response();
    assert_eq!(issuer.requests(), (1, 1));
    // the issuer rotates: a token signed by the new key makes one refetch, and passes
    issuer.rotate();
    let rotated = issuer.mint(&claims(&issuer, "u"));
    function.invoke(&offered(&rotated)).await.response();
    assert_eq!(issuer.requests(), (2, 2));
    // tokens naming kids the issuer never published: refused, and no request within the minute
    for n in 0..5 {
        let now = Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(format!("made-up-{n}"));
        let forged = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(serde_json::to_string(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(json!({"sub": "m", "exp": now + 60}).to_string())
        );
        assert_unauthorized(function.invoke(&offered(&forged)).await);
    }
    assert_eq!(issuer.requests(), (2, 2));
    assert_logged(&function, "made-up-0").await;
    // both keys still work
    function.invoke(&offered(&first)).await.response();
    function.invoke(&offered(&rotated)).await.response();
    assert_eq!(issuer.requests(), (2, 2));
}

#[tokio::test]
async fn an_issuer_down_is_unauthorized_not_a_crash_and_its_known_keys_still_serve() {
    let (issuer, function) = setup().await;
    issuer.set_down(true);
    let token = issuer.mint(&claims(&issuer, "u"));
    assert_unauthorized(function.invoke(&offered(&token)).await);
    assert_logged(&function, "503").await;
    assert_eq!(issuer.requests(), (1, 0));

    // a second function instance, up while the issuer was: it keeps its keys when it goes down
    issuer.set_down(false);
    let (other_issuer, other) = setup().await;
    let token = other_issuer.mint(&claims(&other_issuer, "u"));
    other.invoke(&offered(&token)).await.response();
    other_issuer.set_down(true);
    other_issuer.rotate();
    let rotated = other_issuer.mint(&claims(&other_issuer, "u"));
    assert_unauthorized(other.invoke(&offered(&rotated)).await);
    other.invoke(&offered(&token)).await.response();
    assert_eq!(other_issuer.requests(), (2, 1));
}

#[tokio::test]
async fn even_at_log_level_trace_no_token_reaches_the_log() {
    let (issuer, function) = setup_logging_at("trace").await;
    let token = issuer.mint(&claims(&issuer, "u"));
    function.invoke(&offered(&token)).await.response();
    assert_unauthorized(
        function
            .invoke(&event(None, json!({"token": "leaked.x.y"})))
            .await,
    );
    // every line up to the second invocation's refusal is in, before looking for tokens
    assert_logged(&function, "").await;
    let logs = function.logs().join("\n");
    // lambda_runtime logs each raw event at TRACE: that one line is kept out
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "the token is in the log");
    assert!(!logs.contains("leaked.x.y"), "a query token is in the log");
}

#[tokio::test]
async fn a_missing_issuer_setting_is_an_init_error_that_names_it() {
    let mut function = Function::start("authorize", &[("JWT_AUDIENCE", AUDIENCE.to_owned())]).await;
    let (error_type, body) = function.api.init_error().await;
    assert_eq!(error_type, "Runtime.InvalidConfiguration");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("JWT_ISSUER"),
        "{body}"
    );
    assert!(!function.exited().await.success());
}
