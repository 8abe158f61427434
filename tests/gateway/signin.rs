//! Sign-in on the wire: webchat-local with `--dev-issuer` (its own issuer, the `authorize`
//! function's code), driven as a browser and wscat drive it.

use chrono::Utc;
use serde_json::{Value, json};
use webchat::auth::issuer::{LocalIssuer, dev_user};
use webchat::local::{Auth, Config, DEV_AUDIENCE};

use super::helpers::{TestGateway, spawn, spawn_with};

async fn signed_in_gateway() -> TestGateway {
    spawn_with(Config {
        auth: Some(Auth::Dev),
        ..crate::helpers::config()
    })
    .await
}

/// A token from `GET /dev/token?name=…`, as the page and wscat users get one.
async fn token(gateway: &TestGateway, name: &str) -> String {
    let path = format!("/dev/token?name={}", urlencode(name));
    let answer = gateway.http("GET", &path, b"").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body.trim().to_owned()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_browser_signs_in_with_the_subprotocol_and_the_welcome_says_who() {
    let gateway = signed_in_gateway().await;
    let token = token(&gateway, "Ada Lovelace").await;
    let (mut ada, echoed) = gateway
        .connect_offering("?name=ignored", &format!("webchat.v1, {token}"))
        .await
        .expect("allowed");
    assert_eq!(echoed.as_deref(), Some("webchat.v1"));
    let welcome = ada.next_of_type("welcome").await;
    assert_eq!(welcome["user"], dev_user("Ada Lovelace"));
    assert_eq!(welcome["name"], "Ada Lovelace");
    ada.send_json(json!({"action":"broadcast","message":"hi"}))
        .await;
    let said = ada.next_of_type("broadcast").await;
    assert_eq!(said["user"], dev_user("Ada Lovelace"));
    assert_eq!(said["name"], "Ada Lovelace");
}

#[tokio::test]
async fn wscat_signs_in_with_the_token_in_the_query() {
    let gateway = signed_in_gateway().await;
    let token = token(&gateway, "grace").await;
    let (mut grace, _) = gateway.join(&format!("?token={token}")).await;
    grace.send_json(json!({"action":"list"})).await;
    let list = grace.next_of_type("connections").await;
    assert_eq!(list["connections"][0]["user"], dev_user("grace"));
    assert_eq!(list["connections"][0]["name"], "grace");
}

#[tokio::test]
async fn no_token_a_forged_one_or_an_expired_one_is_401_and_stores_nothing() {
    let gateway = signed_in_gateway().await;
    assert_eq!(gateway.refused("").await, 401);
    assert_eq!(gateway.refused("?name=mallory").await, 401);
    assert_eq!(gateway.refused("?token=not.a.jwt").await, 401);
    // signed by another issuer's key under the same kid, claiming to be ours
    let issuer = gateway.issuer.as_ref().unwrap();
    let impostor = LocalIssuer::new(issuer.url());
    let now = Utc::now().timestamp();
    let forged = impostor.mint_for("mallory", DEV_AUDIENCE, now);
    assert_eq!(gateway.refused(&format!("?token={forged}")).await, 401);
    let expired = issuer.mint(&json!({
        "sub": "u-late", "aud": DEV_AUDIENCE, "name": "late",
        "iat": now - 7200, "exp": now - 3600,
    }));
    assert_eq!(gateway.refused(&format!("?token={expired}")).await, 401);
    let elsewhere = issuer.mint_for("eve", "another-app", now);
    assert_eq!(gateway.refused(&format!("?token={elsewhere}")).await, 401);
    // and none of them is stored: a signed-in client sees only itself
    let token = token(&gateway, "ada").await;
    let (mut ada, id) = gateway.join(&format!("?token={token}")).await;
    ada.send_json(json!({"action":"list"})).await;
    let list = ada.next_of_type("connections").await;
    assert_eq!(
        list["connections"].as_array().unwrap().len(),
        1,
        "only {id}: {list}"
    );
}

#[tokio::test]
async fn two_tabs_of_one_person_and_another_person_message_each_other_by_user() {
    let gateway = signed_in_gateway().await;
    let (ada_token, bob_token) = (token(&gateway, "ada").await, token(&gateway, "bob").await);
    let (mut ada_1, ada_1_id) = gateway.join(&format!("?token={ada_token}")).await;
    let (mut ada_2, _) = gateway.join(&format!("?token={ada_token}")).await;
    let (mut bob, _) = gateway.join(&format!("?token={bob_token}")).await;
    // bob finds ada's user id by her name in the list, and messages the person
    bob.send_json(json!({"action":"list"})).await;
    let list = bob.next_of_type("connections").await;
    let ada_user = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["name"] == "ada")
        .map(|entry| entry["user"].clone())
        .unwrap();
    bob.send_json(json!({"action":"chat","user":ada_user,"message":"hi ada"}))
        .await;
    for tab in [&mut ada_1, &mut ada_2, &mut bob] {
        let chat = tab.next_of_type("chat").await;
        assert_eq!(chat["message"], "hi ada");
        assert_eq!(chat["toUser"], ada_user);
        assert_eq!(chat["user"], dev_user("bob"));
        assert_eq!(chat["name"], "bob");
    }
    // ada answers from one tab: bob gets it; her other tab does not
    ada_1
        .send_json(json!({"action":"chat","user":dev_user("bob"),"message":"hi bob"}))
        .await;
    assert_eq!(bob.next_of_type("chat").await["from"], ada_1_id.as_str());
    assert_eq!(ada_1.next_of_type("chat").await["message"], "hi bob");
    ada_2
        .expect_silence(std::time::Duration::from_millis(200))
        .await;
    ada_1
        .send_json(json!({"action":"chat","user":"dev-nobody","message":"?"}))
        .await;
    assert_eq!(ada_1.next_error_code().await, "user_not_found");
}

#[tokio::test]
async fn a_frame_after_the_token_expired_is_told_token_expired_and_the_socket_closed() {
    let gateway = signed_in_gateway().await;
    let issuer = gateway.issuer.as_ref().unwrap();
    let now = Utc::now().timestamp();
    // past its exp, but within the minute of skew a connect allows
    let token = issuer.mint(&json!({
        "sub": "u-late", "aud": DEV_AUDIENCE, "name": "late",
        "iat": now - 3600, "exp": now - 30,
    }));
    let (mut late, _) = gateway.join(&format!("?token={token}")).await;
    late.send_json(json!({"action":"broadcast","message":"still here?"}))
        .await;
    assert_eq!(late.next_error_code().await, "token_expired");
    assert_eq!(late.closed().await, 1000, "closed by DeleteConnection");
}

#[tokio::test]
async fn the_dev_issuer_publishes_discovery_and_keys_and_tokens_need_a_name() {
    let gateway = signed_in_gateway().await;
    let discovery = gateway
        .http("GET", "/.well-known/openid-configuration", b"")
        .await;
    assert_eq!(discovery.status, 200);
    let document: Value = serde_json::from_str(&discovery.body).unwrap();
    assert_eq!(document["issuer"], format!("http://{}", gateway.addr));
    let keys = gateway.http("GET", "/.well-known/jwks.json", b"").await;
    let keys: Value = serde_json::from_str(&keys.body).unwrap();
    assert_eq!(keys["keys"][0]["alg"], "ES256");
    assert_eq!(gateway.http("GET", "/dev/token", b"").await.status, 400);
    let long = "n".repeat(65);
    let path = format!("/dev/token?name={long}");
    assert_eq!(gateway.http("GET", &path, b"").await.status, 400);
}

#[tokio::test]
async fn a_page_elsewhere_that_reaches_loopback_gets_no_dev_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway = signed_in_gateway().await;
    // DNS rebinding: another site's name resolved to 127.0.0.1, so the peer is loopback
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /dev/token?name=mallory HTTP/1.1\r\nhost: evil.example.com:3001\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // localhost, as a person types it, is fine
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "GET /dev/token?name=ada HTTP/1.1\r\nhost: localhost:{}\r\nconnection: close\r\n\r\n",
        gateway.addr.port()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn without_sign_in_there_is_no_dev_issuer_and_names_come_from_the_query() {
    let gateway = spawn().await;
    assert_eq!(
        gateway.http("GET", "/dev/token?name=a", b"").await.status,
        404
    );
    let (mut anyone, _) = gateway.join("?name=anyone").await;
    anyone
        .send_json(json!({"action":"broadcast","message":"hi"}))
        .await;
    let said = anyone.next_of_type("broadcast").await;
    assert_eq!(said["user"], Value::Null);
    assert_eq!(said["name"], "anyone");
    // a browser that offers the subprotocol gets it echoed without sign-in too
    let (_, echoed) = gateway
        .connect_offering("", "webchat.v1")
        .await
        .expect("allowed");
    assert_eq!(echoed.as_deref(), Some("webchat.v1"));
}

#[tokio::test]
async fn with_an_issuer_of_its_own_choosing_tokens_for_its_audience_sign_in() {
    // an OIDC provider elsewhere (on loopback, as http:// must be)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = LocalIssuer::new(format!("http://{}/pool", listener.local_addr().unwrap()));
    let app: axum::Router = axum::Router::new().nest("/pool", issuer.router());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gateway = spawn_with(Config {
        auth: Some(Auth::Issuer {
            issuer: webchat::auth::jwks::IssuerUrl::parse(issuer.url()).unwrap(),
            audience: "app-client".into(),
        }),
        ..crate::helpers::config()
    })
    .await;
    let now = Utc::now().timestamp();
    let token = issuer.mint_for("carol", "app-client", now);
    let (mut carol, _) = gateway.join(&format!("?token={token}")).await;
    carol.send_json(json!({"action":"list"})).await;
    assert_eq!(
        carol.next_of_type("connections").await["connections"][0]["name"],
        "carol"
    );
    let other = issuer.mint_for("dave", "another-client", now);
    assert_eq!(gateway.refused(&format!("?token={other}")).await, 401);
    assert_eq!(
        gateway.http("GET", "/dev/token?name=x", b"").await.status,
        404,
        "no dev issuer"
    );
}

#[tokio::test]
async fn the_terminal_client_signs_in_with_a_token_and_messages_a_person() {
    use super::{webchat_connect, webchat_connect_with};
    let gateway = signed_in_gateway().await;
    let url = format!("ws://{}", gateway.addr);
    let (mut bob, _) = gateway
        .join(&format!("?token={}", token(&gateway, "bob").await))
        .await;
    let ada = token(&gateway, "ada").await;
    let to_bob = format!("/to {} hello bob\n", dev_user("bob"));
    let (status, stdout, stderr) = webchat_connect(&[&url, "--token", &ada], &to_bob).await;
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stdout.contains(r#""name":"ada""#),
        "the welcome says who: {stdout}"
    );
    let chat = bob.next_of_type("chat").await;
    assert_eq!(chat["message"], "hello bob");
    assert_eq!(chat["user"], dev_user("ada"));
    // WEBCHAT_TOKEN does the same
    let (status, stdout, stderr) =
        webchat_connect_with(&[&url], &[("WEBCHAT_TOKEN", &ada)], "/list\n").await;
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stdout.contains(&dev_user("bob")), "{stdout}");
    // without a token, or with a bad one: why, in words
    let (status, _, stderr) = webchat_connect(&[&url], "").await;
    assert_eq!(status, Some(1));
    assert!(
        stderr.contains("needs sign-in") && stderr.contains("--token"),
        "{stderr}"
    );
    let (status, _, stderr) = webchat_connect(&[&url, "--token", "a.b.c"], "").await;
    assert_eq!(status, Some(1));
    assert!(stderr.contains("refused the token"), "{stderr}");
    // --print-url gives wscat the token in the query
    let (status, stdout, _) = webchat_connect(&[&url, "--token", &ada, "--print-url"], "").await;
    assert_eq!(status, Some(0));
    assert_eq!(stdout.trim(), format!("{url}/?token={ada}"));
}
