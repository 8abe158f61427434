//! The terminal client (`webchat connect`): an interactive session like wscat's, with shortcuts
//! for the protocol, that signs its own connect request for stages with IAM auth.
//!
//! - [`command`] turns a typed line into the frame to send (`/list`, `/chat <id> <text>`,
//!   `/broadcast <text>`; any other line is sent as it is).
//! - [`sign_url`] presigns the connect URL with SigV4 (service `execute-api`), as API Gateway
//!   expects for `AWS_IAM` on `$connect`.
//! - [`session`] runs the session over any input and output, so tests drive it through pipes.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::lambda::authorizer::SUBPROTOCOL;
use crate::protocol::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};

/// What a line typed in a session means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send this frame.
    Send(String),
    /// Tell the user this (a mistyped shortcut), send nothing.
    Explain(String),
    /// Nothing to do (an empty line).
    Nothing,
}

pub const HELP: &str = "commands: /list [room] · /broadcast <text> · /chat <connection id> <text> · /to <user id> <text> (a signed-in person, on every connection of theirs) · /join <room> [since seq] · /leave <room> · /in <room> <text> (say it in a room) · /history <room> [before seq] [limit] · /help · /quit; any other line is broadcast (a line that starts with { is sent as it is, raw JSON)";

/// Interprets one typed line, and checks what would be refused before it is sent: a frame over
/// 32 KB (the server would close the connection) or a message over 16 KiB (`message_too_large`).
pub fn command(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Command::Nothing;
    }
    let Some(shortcut) = line.strip_prefix('/') else {
        // raw JSON for whoever wants to speak the protocol; anything else is chat text
        if line.trim_start().starts_with('{') {
            let message = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|frame| frame["message"].as_str().map(str::len));
            return checked(line.to_owned(), message.unwrap_or(0));
        }
        return said(json!({"action": "broadcast", "message": line}), line);
    };
    let (name, rest) = shortcut
        .split_once(char::is_whitespace)
        .unwrap_or((shortcut, ""));
    let rest = rest.trim_start();
    let words: Vec<&str> = rest.split_whitespace().collect();
    match name {
        "list" => match words.as_slice() {
            [] => Command::Send(json!({"action": "list"}).to_string()),
            [room] => Command::Send(json!({"action": "list", "room": room}).to_string()),
            _ => Command::Explain("usage: /list [room]".into()),
        },
        "join" => match words.as_slice() {
            [room] => Command::Send(json!({"action": "join", "room": room}).to_string()),
            [room, since] => match since.parse::<u64>() {
                Ok(since) => Command::Send(
                    json!({"action": "join", "room": room, "since": since}).to_string(),
                ),
                Err(_) => Command::Explain("usage: /join <room> [since seq]".into()),
            },
            _ => Command::Explain("usage: /join <room> [since seq]".into()),
        },
        "leave" => match words.as_slice() {
            [room] => Command::Send(json!({"action": "leave", "room": room}).to_string()),
            _ => Command::Explain("usage: /leave <room>".into()),
        },
        "history" => {
            let numbers: Option<Vec<u64>> = words.iter().skip(1).map(|w| w.parse().ok()).collect();
            match (words.first(), numbers.as_deref()) {
                (Some(room), Some([])) => {
                    Command::Send(json!({"action": "history", "room": room}).to_string())
                }
                (Some(room), Some([before])) => Command::Send(
                    json!({"action": "history", "room": room, "before": before}).to_string(),
                ),
                (Some(room), Some([before, limit])) => Command::Send(
                    json!({"action": "history", "room": room, "before": before, "limit": limit})
                        .to_string(),
                ),
                _ => Command::Explain("usage: /history <room> [before seq] [limit]".into()),
            }
        }
        "in" => match rest.split_once(char::is_whitespace) {
            Some((room, message)) if !message.trim().is_empty() => {
                let message = message.trim_start();
                said(
                    json!({"action": "broadcast", "room": room, "message": message}),
                    message,
                )
            }
            _ => Command::Explain("usage: /in <room> <text>".into()),
        },
        "broadcast" if !rest.is_empty() => {
            said(json!({"action": "broadcast", "message": rest}), rest)
        }
        "chat" => match rest.split_once(char::is_whitespace) {
            Some((connection, message)) if !message.trim().is_empty() => {
                let message = message.trim_start();
                said(
                    json!({"action": "chat", "connection": connection, "message": message}),
                    message,
                )
            }
            _ => Command::Explain("usage: /chat <connection id> <text>".into()),
        },
        "to" => match rest.split_once(char::is_whitespace) {
            Some((user, message)) if !message.trim().is_empty() => {
                let message = message.trim_start();
                said(
                    json!({"action": "chat", "user": user, "message": message}),
                    message,
                )
            }
            _ => Command::Explain("usage: /to <user id> <text>".into()),
        },
        "broadcast" => Command::Explain("usage: /broadcast <text>".into()),
        "help" | "" => Command::Explain(HELP.into()),
        unknown => Command::Explain(format!("unknown command /{unknown}; {HELP}")),
    }
}

/// A frame that says `message`, checked.
fn said(frame: serde_json::Value, message: &str) -> Command {
    checked(frame.to_string(), message.len())
}

/// `frame` to send, unless the server would refuse it: over the frame limit, or its message
/// (`message_bytes` of UTF-8) over the message limit.
fn checked(frame: String, message_bytes: usize) -> Command {
    if frame.len() > MAX_FRAME_BYTES {
        return Command::Explain(format!(
            "not sent: that frame is {} bytes, over the {MAX_FRAME_BYTES}-byte frame limit (quotes, \\ and control characters count twice or more once escaped)",
            frame.len()
        ));
    }
    if message_bytes > MAX_MESSAGE_BYTES {
        return Command::Explain(format!(
            "not sent: the message is {message_bytes} bytes; at most {MAX_MESSAGE_BYTES} bytes (16 KiB) go in one message"
        ));
    }
    Command::Send(frame)
}

/// The websocket URL for what a person typed: `ws://` and `wss://` as they are; `http://` and
/// `https://` as `ws://` and `wss://`; a bare `host:port` (or `host/stage`) as `ws://`, or
/// `wss://` for an AWS host. Anything else is refused with what to type.
pub fn websocket_url(typed: &str) -> Result<String, String> {
    let typed = typed.trim();
    let split = typed
        .split_once("://")
        .map(|(scheme, rest)| (scheme.to_ascii_lowercase(), rest));
    if split.is_none()
        && let Some((scheme, _)) = typed.split_once(":/")
        && ["ws", "wss", "http", "https"].contains(&scheme.to_ascii_lowercase().as_str())
    {
        return Err(format!(
            "{typed:?} has one slash after {scheme}: did you mean {scheme}://?"
        ));
    }
    match split
        .as_ref()
        .map(|(scheme, rest)| (scheme.as_str(), *rest))
    {
        Some((scheme @ ("ws" | "wss"), rest)) => Ok(format!("{scheme}://{rest}")),
        Some(("http", rest)) => Ok(format!("ws://{rest}")),
        Some(("https", rest)) => Ok(format!("wss://{rest}")),
        Some((scheme, _)) => Err(format!(
            "{typed:?} is a {scheme}:// URL: webchat connect takes ws:// (webchat-local) or \
             wss:// (a deployed stage), e.g. ws://127.0.0.1:3001"
        )),
        None if typed.is_empty() => Err("no URL: try ws://127.0.0.1:3001".into()),
        None => {
            let host = typed.split(['/', '?', ':']).next().unwrap_or_default();
            let scheme = if host.ends_with(".amazonaws.com") {
                "wss"
            } else {
                "ws"
            };
            Ok(format!("{scheme}://{typed}"))
        }
    }
}

/// The longest the input is held after `rate_limited`.
const MAX_HOLD_MS: u64 = 60_000;

/// A readable line for a limit's error frame (`rate_limited`, `forbidden`), and for
/// `rate_limited` how long to hold the next lines (its `retryAfterMs`).
pub fn limit_notice(text: &str) -> Option<(String, Option<Duration>)> {
    let frame: serde_json::Value = serde_json::from_str(text).ok()?;
    if frame["type"] != "error" {
        return None;
    }
    let message = frame["message"].as_str().unwrap_or_default();
    match frame["code"].as_str()? {
        "rate_limited" => {
            // at most a minute: a server's word never freezes the input (and /quit) for longer
            let millis = frame["retryAfterMs"]
                .as_u64()
                .unwrap_or(1_000)
                .min(MAX_HOLD_MS);
            let tenths = millis.div_ceil(100);
            Some((
                format!(
                    "! slow down: {message}\n! your next lines wait {}.{} s, then go",
                    tenths / 10,
                    tenths % 10
                ),
                Some(Duration::from_millis(millis)),
            ))
        }
        "forbidden" => Some((format!("! not allowed: {message}"), None)),
        _ => None,
    }
}

/// A failed connect, in words that say what to do.
pub fn explain_connect_error(
    url: &str,
    signed_in: bool,
    error: &tokio_tungstenite::tungstenite::Error,
) -> String {
    use tokio_tungstenite::tungstenite::Error;
    let shown = url.split('?').next().unwrap_or(url);
    let host = shown
        .split("://")
        .nth(1)
        .unwrap_or(shown)
        .split('/')
        .next()
        .unwrap_or(shown);
    match error {
        Error::Http(response) if response.status() == 401 => {
            if signed_in {
                format!(
                    "{shown} refused the token (401 Unauthorized): it may have expired, or be for \
                     another issuer or audience; get a new one (webchat-local --dev-issuer: curl \
                     -s 'http://{host}/dev/token?name=you')"
                )
            } else {
                format!(
                    "{shown} needs sign-in (401 Unauthorized): give a token with --token or \
                     WEBCHAT_TOKEN (webchat-local --dev-issuer: --token \"$(curl -s \
                     'http://{host}/dev/token?name=you')\")"
                )
            }
        }
        Error::Http(response) => {
            let status = response.status();
            let body = response.body().as_deref().unwrap_or_default();
            let reason = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|frame| frame["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
            if reason.is_empty() {
                format!("{shown} refused the connection ({status})")
            } else {
                format!("{shown} refused the connection ({status}): {reason}")
            }
        }
        Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "nothing is listening at {host} (connection refused): is webchat-local running? \
             Start it with `cargo run --release --bin webchat-local`; it prints the URL to give here"
        ),
        // rustls reports a server that answers plain text to its hello as invalid data
        Error::Tls(_) | Error::Io(_)
            if shown.starts_with("wss://")
                && !matches!(error, Error::Io(io) if io.kind() != std::io::ErrorKind::InvalidData) =>
        {
            format!(
                "{host} did not answer TLS ({error}): webchat-local speaks plain websocket, so use \
                 ws://{host}; wss:// is for deployed stages"
            )
        }
        Error::Url(url_error) => format!("{shown} is not a URL to connect to: {url_error}"),
        other => format!("could not connect to {shown}: {other}"),
    }
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The person quit, or the input ended and the linger passed.
    Quit,
    /// The server closed the connection with this code (1000: normally).
    Closed(u16),
    /// The connection broke without a close.
    Lost,
}

/// The region of an API Gateway URL (`wss://{api-id}.execute-api.{region}.amazonaws.com/...`).
pub fn region_of(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split(['/', '?', ':']).next()?;
    let mut parts = host.split('.');
    let (_, service, region) = (parts.next()?, parts.next()?, parts.next()?);
    (service == "execute-api").then(|| region.to_owned())
}

/// Adds `name` to the connect URL's query string (and the `/` path a bare host lacks).
pub fn with_name(url: &str, name: &str) -> String {
    with_parameter(url, "name", name)
}

/// `url` with `key=value` added to its query string, the value percent-encoded.
pub fn with_parameter(url: &str, key: &str, value: &str) -> String {
    let bare_host = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.contains(['/', '?']));
    let url = if bare_host {
        format!("{url}/")
    } else {
        url.to_owned()
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let encoded: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("{url}{separator}{key}={encoded}")
}

/// Presigns a `wss://` (or `https://`) connect URL with SigV4 in the query string, valid for
/// `expires`, as API Gateway requires on `$connect` with `AWS_IAM` authorization.
pub fn sign_url(
    url: &str,
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
    expires: Duration,
) -> Result<String, String> {
    let https = match url.split_once("://") {
        Some(("wss" | "https", rest)) => format!("https://{rest}"),
        Some(("ws" | "http", rest)) => format!("http://{rest}"),
        _ => return Err(format!("not a websocket URL: {url}")),
    };
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable =
        SignableRequest::new("GET", &https, std::iter::empty(), SignableBody::Bytes(&[]))
            .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut request = http::Request::builder()
        .uri(&https)
        .body(())
        .map_err(|e| e.to_string())?;
    instructions.apply_to_request_http1x(&mut request);
    let signed = request.uri().to_string();
    Ok(match url.split_once("://") {
        Some(("wss", _)) => signed.replacen("https://", "wss://", 1),
        Some(("ws", _)) => signed.replacen("http://", "ws://", 1),
        _ => signed,
    })
}

/// Presigns `url` for five minutes with credentials from the standard AWS chain (`profile`, or
/// the chain's default), for `region` or the one the URL's host names.
pub async fn sign_with_default_credentials(
    url: &str,
    profile: Option<&str>,
    region: Option<&str>,
) -> anyhow::Result<String> {
    use aws_credential_types::provider::ProvideCredentials;
    let region = region
        .map(str::to_owned)
        .or_else(|| region_of(url))
        .ok_or_else(|| anyhow::anyhow!("a region is needed: the URL does not name one"))?;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
    }
    let config = loader.load().await;
    let provider = config
        .credentials_provider()
        .ok_or_else(|| anyhow::anyhow!("no AWS credentials provider is configured"))?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|error| anyhow::anyhow!("no AWS credentials to sign with: {error}"))?;
    sign_url(
        url,
        &region,
        &credentials,
        SystemTime::now(),
        Duration::from_secs(300),
    )
    .map_err(|error| anyhow::anyhow!("could not sign the URL: {error}"))
}

/// Runs a session: frames from the server are written as `< frame`, typed lines are sent. At the
/// end of the input the session waits `linger` for answers, then closes. Returns how it ended:
/// when the server closes the connection, at once, whatever the input is doing. A `token` signs
/// in as a browser does: in `Sec-WebSocket-Protocol`, after `webchat.v1` (so it is in no URL).
pub async fn session(
    url: &str,
    token: Option<&str>,
    input: impl AsyncBufRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
    linger: Duration,
) -> anyhow::Result<Ended> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url
        .into_client_request()
        .map_err(|error| anyhow::anyhow!(explain_connect_error(url, false, &error)))?;
    if let Some(token) = token {
        let offered = format!("{SUBPROTOCOL}, {token}");
        let value = offered.parse().map_err(|_| {
            anyhow::anyhow!("the token has characters no header can carry: is it a JWT?")
        })?;
        request
            .headers_mut()
            .insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|error| anyhow::anyhow!(explain_connect_error(url, token.is_some(), &error)))?;
    output
        .write_all(b"connected (type /help for commands)\n")
        .await?;
    let (mut sink, mut frames) = socket.split();
    // lines as bytes: one that is not UTF-8 is read as well as it can be, not the end
    let mut lines = input.split(b'\n');
    let mut input_open = true;
    let mut deadline = None::<tokio::time::Instant>;
    // after rate_limited: typed lines wait in the input until the server would take them
    let mut held = None::<tokio::time::Instant>;
    let ended = loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    output.write_all(format!("< {text}\n").as_bytes()).await?;
                    if let Some((notice, wait)) = limit_notice(&text) {
                        output.write_all(format!("{notice}\n").as_bytes()).await?;
                        if let Some(wait) = wait {
                            let until = tokio::time::Instant::now() + wait;
                            held = Some(held.map_or(until, |held| held.max(until)));
                            // the end of the input waits for what is held too
                            if let Some(end) = &mut deadline {
                                *end = (*end).max(until + linger);
                            }
                        }
                    }
                }
                Some(Ok(Message::Binary(bytes))) => output.write_all(format!("< ({} binary bytes)\n", bytes.len()).as_bytes()).await?,
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    output.write_all(format!("disconnected by the server: {code} {reason}\n").as_bytes()).await?;
                    break Ended::Closed(code);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    output.write_all(format!("disconnected: {error}\n").as_bytes()).await?;
                    break Ended::Lost;
                }
                None => {
                    output.write_all(b"disconnected: the connection was lost\n").await?;
                    break Ended::Lost;
                }
            },
            () = async { tokio::time::sleep_until(held.expect("set")).await }, if held.is_some() => held = None,
            line = lines.next_segment(), if input_open && held.is_none() => match line?.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()) {
                Some(line) if line.trim() == "/quit" => break Ended::Quit,
                Some(line) => match command(&line) {
                    Command::Send(frame) => sink.send(Message::text(frame)).await?,
                    Command::Explain(text) => output.write_all(format!("{text}\n").as_bytes()).await?,
                    Command::Nothing => {}
                },
                None => {
                    input_open = false;
                    deadline = Some(tokio::time::Instant::now() + linger);
                }
            },
            () = async { tokio::time::sleep_until(deadline.expect("set")).await }, if deadline.is_some() => break Ended::Quit,
        }
        output.flush().await?;
    };
    output.flush().await?;
    let _ = sink.close().await;
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcuts_become_protocol_frames() {
        assert_eq!(
            command("/to u-1 hi there"),
            Command::Send(
                json!({"action": "chat", "user": "u-1", "message": "hi there"}).to_string()
            )
        );
        assert!(matches!(command("/to u-1"), Command::Explain(_)));
        let frame = |line| match command(line) {
            Command::Send(frame) => serde_json::from_str::<serde_json::Value>(&frame).unwrap(),
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(frame("/list"), json!({"action": "list"}));
        assert_eq!(frame("/list red"), json!({"action": "list", "room": "red"}));
        assert_eq!(frame("/join red"), json!({"action": "join", "room": "red"}));
        assert_eq!(
            frame("/join red 41"),
            json!({"action": "join", "room": "red", "since": 41})
        );
        assert_eq!(
            frame("/leave red"),
            json!({"action": "leave", "room": "red"})
        );
        assert_eq!(
            frame("/history red"),
            json!({"action": "history", "room": "red"})
        );
        assert_eq!(
            frame("/history red 90 20"),
            json!({"action": "history", "room": "red", "before": 90, "limit": 20})
        );
        assert_eq!(
            frame("/in red hello  there"),
            json!({"action": "broadcast", "room": "red", "message": "hello  there"})
        );
        for typo in [
            "/join",
            "/join red soon",
            "/leave",
            "/history",
            "/history red later",
            "/in red",
            "/list a b",
        ] {
            assert!(matches!(command(typo), Command::Explain(_)), "{typo}");
        }
        assert_eq!(
            frame("/broadcast Anybody <b>home</b>?"),
            json!({"action": "broadcast", "message": "Anybody <b>home</b>?"})
        );
        assert_eq!(
            frame("/chat L0SM9cOFvHcCIhw= Yo! how are you"),
            json!({"action": "chat", "connection": "L0SM9cOFvHcCIhw=", "message": "Yo! how are you"})
        );
        assert_eq!(
            command(r#"{"action":"list"}"#),
            Command::Send(r#"{"action":"list"}"#.into())
        );
        assert_eq!(
            frame("plain text, as a chat client sends it"),
            json!({"action": "broadcast", "message": "plain text, as a chat client sends it"})
        );
        assert_eq!(command("   "), Command::Nothing);
        assert!(matches!(command("/chat onlyid"), Command::Explain(_)));
        assert!(matches!(command("/broadcast"), Command::Explain(_)));
        match command("/dance") {
            Command::Explain(text) => {
                assert!(text.starts_with("unknown command /dance;"), "{text}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(command("/help"), Command::Explain(HELP.into()));
        // what the server would refuse is not sent
        match command(&"é".repeat(8193)) {
            Command::Explain(text) => assert!(text.contains("16386 bytes"), "{text}"),
            other => panic!("{other:?}"),
        }
        match command(&"\"".repeat(16384)) {
            Command::Explain(text) => assert!(text.contains("frame limit"), "{text}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits_errors_become_notices_and_rate_limited_holds_the_input() {
        let (notice, wait) = limit_notice(
            r#"{"type":"error","code":"rate_limited","message":"too many frames","retryAfterMs":250}"#,
        )
        .unwrap();
        assert_eq!(wait, Some(Duration::from_millis(250)));
        assert!(notice.contains("slow down: too many frames"), "{notice}");
        assert!(
            notice.contains("wait 0.2 s") || notice.contains("wait 0.3 s"),
            "{notice}"
        );
        let (notice, wait) =
            limit_notice(r#"{"type":"error","code":"forbidden","message":"at most 2 a minute"}"#)
                .unwrap();
        assert_eq!(wait, None);
        assert_eq!(notice, "! not allowed: at most 2 a minute");
        assert!(limit_notice(r#"{"type":"error","code":"internal","message":"x"}"#).is_none());
        assert!(limit_notice(r#"{"type":"broadcast","message":"hi"}"#).is_none());
        assert!(limit_notice("not json").is_none());
    }

    #[test]
    fn a_typed_url_becomes_a_websocket_url_or_says_what_to_type() {
        for (typed, url) in [
            ("ws://127.0.0.1:3001", "ws://127.0.0.1:3001"),
            (
                "wss://a.execute-api.eu-west-1.amazonaws.com/stage",
                "wss://a.execute-api.eu-west-1.amazonaws.com/stage",
            ),
            ("http://127.0.0.1:3001/", "ws://127.0.0.1:3001/"),
            ("https://example.org/chat", "wss://example.org/chat"),
            ("127.0.0.1:3001", "ws://127.0.0.1:3001"),
            ("localhost:3001/local", "ws://localhost:3001/local"),
            (
                "a.execute-api.eu-west-1.amazonaws.com/stage",
                "wss://a.execute-api.eu-west-1.amazonaws.com/stage",
            ),
        ] {
            assert_eq!(websocket_url(typed).as_deref(), Ok(url), "{typed}");
        }
        assert_eq!(websocket_url("HTTP://h:1").as_deref(), Ok("ws://h:1"));
        let refused = websocket_url("ftp://example.org").unwrap_err();
        assert!(refused.contains("ws://127.0.0.1:3001"), "{refused}");
        let typo = websocket_url("ws:/127.0.0.1:3001").unwrap_err();
        assert!(typo.contains("did you mean ws://"), "{typo}");
    }

    #[test]
    fn the_region_comes_from_an_api_gateway_url() {
        assert_eq!(
            region_of("wss://abc123.execute-api.eu-west-1.amazonaws.com/stage").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of("ws://127.0.0.1:3001"), None);
    }

    #[test]
    fn names_are_added_to_the_query_string_encoded() {
        assert_eq!(with_name("ws://h/", "alice"), "ws://h/?name=alice");
        assert_eq!(with_name("ws://h/?x=1", "a b"), "ws://h/?x=1&name=a%20b");
        assert_eq!(
            with_name("ws://127.0.0.1:3001", "bob"),
            "ws://127.0.0.1:3001/?name=bob"
        );
    }

    /// A known answer computed independently with botocore's SigV4QueryAuth for the same
    /// credentials (AWS's documentation example keys), URL, region and fixed clock.
    #[test]
    fn presigning_matches_an_independent_sigv4_implementation() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_849_200); // 2026-11-28T07:00:00Z
        let signed = sign_url(
            "wss://abc123.execute-api.eu-west-1.amazonaws.com/stage?name=alice",
            "eu-west-1",
            &credentials,
            time,
            Duration::from_secs(300),
        )
        .unwrap();
        assert!(
            signed.starts_with("wss://abc123.execute-api.eu-west-1.amazonaws.com/stage?"),
            "{signed}"
        );
        let query: std::collections::HashMap<&str, &str> = signed
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .collect();
        assert_eq!(query["name"], "alice");
        assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(
            query["X-Amz-Credential"],
            "AKIDEXAMPLE%2F20261128%2Feu-west-1%2Fexecute-api%2Faws4_request"
        );
        assert_eq!(query["X-Amz-Date"], "20261128T070000Z");
        assert_eq!(query["X-Amz-Expires"], "300");
        assert_eq!(query["X-Amz-SignedHeaders"], "host");
        assert_eq!(
            query["X-Amz-Signature"],
            "145ce1f4d488f15f85847365a5a24b2c024ddcfce96b1af02c3aef38df962c4e"
        );
    }
}
