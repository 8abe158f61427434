//! Starts a local gateway on port 0 and drives it with real websocket and HTTP clients.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use webchat::local::{Config, Gateway};

/// How long a test waits for something that should happen promptly.
pub use crate::support::PATIENCE;
use crate::support::poll_until_async;

pub struct TestGateway {
    pub addr: SocketAddr,
    /// With `--dev-issuer`, the gateway's own issuer.
    pub issuer: Option<std::sync::Arc<webchat::auth::issuer::LocalIssuer>>,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn() -> TestGateway {
    spawn_with(config()).await
}

/// webchat-local's defaults with every per-client limit off (`--no-limits`): for the tests that
/// are not about limits (tests/gateway/limits.rs is).
pub fn config() -> Config {
    let config = Config::default();
    Config {
        settings: webchat::domain::Settings {
            limits: webchat::domain::limits::Limits::off(),
            ..config.settings.clone()
        },
        ..config
    }
}

pub async fn spawn_with(config: Config) -> TestGateway {
    let gateway = Gateway::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("bind");
    let addr = gateway.local_addr();
    let issuer = gateway.dev_issuer();
    let (shutdown, signal) = oneshot::channel();
    let served = tokio::spawn(gateway.serve(async {
        let _ = signal.await;
    }));
    TestGateway {
        addr,
        issuer,
        shutdown: Some(shutdown),
        served: Some(served),
    }
}

impl TestGateway {
    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/{query}", self.addr)
    }

    /// Connects without waiting for the welcome.
    pub async fn connect(&self, query: &str) -> Client {
        let (ws, _) = connect_async(self.url(query))
            .await
            .expect("websocket handshake");
        Client { ws }
    }

    /// Connects offering `protocols` in `Sec-WebSocket-Protocol`, as a browser's
    /// `new WebSocket(url, protocols)` does: the handshake's answer, or its refusal's status.
    pub async fn connect_offering(
        &self,
        query: &str,
        protocols: &str,
    ) -> Result<(Client, Option<String>), u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = self.url(query).into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
        match connect_async(request).await {
            Ok((ws, response)) => {
                let echoed = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_owned());
                Ok((Client { ws }, echoed))
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("handshake: {other}"),
        }
    }

    /// The status a handshake to `query` is refused with (panics if it is accepted).
    pub async fn refused(&self, query: &str) -> u16 {
        match connect_async(self.url(query)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status().as_u16()
            }
            Ok(_) => panic!("the handshake was accepted"),
            Err(other) => panic!("handshake: {other}"),
        }
    }

    /// The status and body a handshake to `query` is refused with (panics if it is accepted).
    pub async fn refused_with_body(&self, query: &str) -> (u16, String) {
        match connect_async(self.url(query)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
                response.status().as_u16(),
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            ),
            Ok(_) => panic!("the handshake was accepted"),
            Err(other) => panic!("handshake: {other}"),
        }
    }

    /// Connects and waits for the welcome; returns the client and its connection id.
    pub async fn join(&self, query: &str) -> (Client, String) {
        let mut client = self.connect(query).await;
        let welcome = client.next_of_type("welcome").await;
        let id = welcome["connectionId"]
            .as_str()
            .expect("connectionId")
            .to_owned();
        (client, id)
    }

    /// One HTTP/1.1 request; returns status, headers (lower-case names) and body.
    pub async fn http(&self, method: &str, path: &str, body: &[u8]) -> HttpResponse {
        self.http_with(method, path, &[], body).await
    }

    /// One HTTP/1.1 request with more header lines (`"origin: http://x"`).
    pub async fn http_with(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> HttpResponse {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server may answer (413) before reading a large body; a reset write is fine then.
        let _ = stream.write_all(body).await;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw)).await;
        HttpResponse::parse(&raw)
    }

    /// Waits until `@connections` answers 410 for `id`: the close has been processed.
    pub async fn wait_until_gone(&self, id: &str) {
        let path = format!("/@connections/{id}");
        poll_until_async(&format!("{id} gone"), Duration::from_millis(20), || async {
            (self.http("GET", &path, b"").await.status == 410).then_some(())
        })
        .await;
    }

    /// Stops the gateway (as Ctrl-C does) and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        let served = self.served.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("stopped in time")
            .unwrap()
            .unwrap();
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(served) = self.served.take() {
            served.abort();
        }
    }
}

pub use crate::scenarios::HttpResponse;

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next data frame, as text.
    pub async fn next_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn next_json(&mut self) -> Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The next frame of `kind`, skipping others (a welcome can arrive late).
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        loop {
            let value = self.next_json().await;
            if value["type"] == kind {
                return value;
            }
        }
    }

    /// The next error frame's code.
    pub async fn next_error_code(&mut self) -> String {
        let error = self.next_of_type("error").await;
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        error["code"].as_str().unwrap().to_owned()
    }

    /// Waits for the server to close the socket; returns the close code (1006 if none was sent).
    pub async fn closed(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return 1006,
            }
        }
    }

    /// Waits for the server to close the socket; the close code and reason, and the text frames
    /// that came before it.
    pub async fn closed_with_reason(&mut self) -> (u16, String, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string(), before);
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new(), before),
                Some(Ok(Message::Text(text))) => {
                    before.push(serde_json::from_str(&text).expect("JSON"));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (1006, String::new(), before),
            }
        }
    }

    /// Nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(Ok(message))) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("expected nothing, got {message:?}");
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // drain until the server's close arrives, so its $disconnect has started
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, self.ws.next()).await {}
    }
}
