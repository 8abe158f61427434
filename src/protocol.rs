//! The wire protocol: what clients send, what the server sends back, the limits that keep every
//! frame within API Gateway's quotas, and API Gateway's route selection (`$request.body.action`).
//! The contract clients depend on is `docs/protocol.md`.
//!
//! Everything here is pure: parsing and validation turn untrusted text into typed requests or a
//! [`ProtocolError`] carrying a stable [`ErrorCode`] and a readable message. Nothing here panics on
//! any input (a property test in this module feeds it arbitrary bytes).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// API Gateway's WebSocket frame size quota: a frame larger than this closes the connection (1009).
pub const MAX_FRAME_BYTES: usize = 32 * 1024;

/// API Gateway's WebSocket message payload quota (a message may span several frames), and the
/// largest body `@connections` accepts.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// The largest chat `message` we accept, in UTF-8 bytes. Half a frame, so that the envelope we
/// deliver (sender id, name, timestamp and the JSON quoting of ordinary text) stays within one
/// 32 KB frame.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Display names: 1 to 32 of `[A-Za-z0-9_.-]`, so they need no escaping anywhere they are shown.
pub const MAX_NAME_BYTES: usize = 32;

/// Connection ids we are willing to look up. API Gateway's are 16 characters; the bound only keeps
/// absurd input away from the store (DynamoDB keys may not exceed 2048 bytes).
pub const MAX_CONNECTION_ID_BYTES: usize = 128;
/// The longest user id (a token's `sub`) accepted, in bytes: Cognito's are 36-byte UUIDs.
pub const MAX_USER_BYTES: usize = 256;

/// Room names: 1 to 64 of `[A-Za-z0-9_.-]`.
pub const MAX_ROOM_BYTES: usize = 64;
/// The rooms one connection may be in at once.
pub const MAX_ROOMS_PER_CONNECTION: usize = 20;
/// A history page's size when the request names none, and the largest it may name.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
pub const MAX_HISTORY_LIMIT: u32 = 100;

/// A record lives for API Gateway's hard connection limit (2 h) plus a margin, so a connection
/// whose `$disconnect` never ran is ignored on read and removed by the table's TTL.
pub const CONNECTION_TTL_SECONDS: i64 = 2 * 60 * 60 + 5 * 60;

/// The EventBridge `source` of every event webchat publishes.
pub const EVENT_SOURCE: &str = "webchat";

/// The EventBridge `detail-type` of the welcome event that `connect` publishes and `post` consumes.
pub const WELCOME_DETAIL_TYPE: &str = "welcome";

/// The API Gateway routes, one Lambda function each. `post` and `cleanup` are not routes: they are
/// invoked by EventBridge and by the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKey {
    Connect,
    Disconnect,
    Default,
    Broadcast,
    List,
    Chat,
    Join,
    Leave,
    History,
}

impl RouteKey {
    pub const ALL: [RouteKey; 9] = [
        RouteKey::Connect,
        RouteKey::Disconnect,
        RouteKey::Default,
        RouteKey::Broadcast,
        RouteKey::List,
        RouteKey::Chat,
        RouteKey::Join,
        RouteKey::Leave,
        RouteKey::History,
    ];

    /// The route key as API Gateway spells it (`$connect`, `broadcast`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKey::Connect => "$connect",
            RouteKey::Disconnect => "$disconnect",
            RouteKey::Default => "$default",
            RouteKey::Broadcast => "broadcast",
            RouteKey::List => "list",
            RouteKey::Chat => "chat",
            RouteKey::Join => "join",
            RouteKey::Leave => "leave",
            RouteKey::History => "history",
        }
    }

    /// The route a client can select by naming it in `action`.
    pub fn from_action(action: &str) -> Option<RouteKey> {
        match action {
            "broadcast" => Some(RouteKey::Broadcast),
            "list" => Some(RouteKey::List),
            "chat" => Some(RouteKey::Chat),
            "join" => Some(RouteKey::Join),
            "leave" => Some(RouteKey::Leave),
            "history" => Some(RouteKey::History),
            _ => None,
        }
    }
}

/// API Gateway's route selection with `$request.body.action`: a text frame that is a JSON object
/// whose string `action` names a route goes there; everything else (binary frames are routed by
/// the caller) goes to `$default`.
pub fn select_route(text: &str) -> RouteKey {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object
            .get("action")
            .and_then(Value::as_str)
            .and_then(RouteKey::from_action)
            .unwrap_or(RouteKey::Default),
        _ => RouteKey::Default,
    }
}

/// The stable error codes of `{"type":"error"}` frames. Clients branch on these; never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    UnknownAction,
    MissingField,
    InvalidField,
    MessageTooLarge,
    ConnectionNotFound,
    /// A chat to a user with no live connection.
    UserNotFound,
    /// A join past the rooms one connection may be in.
    TooManyRooms,
    /// A leave, a room broadcast or history from a connection not in the room.
    NotAMember,
    /// A frame sent after the connection's token expired; the connection is then closed.
    TokenExpired,
    /// A broadcast may have missed some live connections (failures, or the time limit).
    DeliveryIncomplete,
    /// Over a budget (frames, deliveries): dropped; `retryAfterMs` says when it would pass.
    RateLimited,
    /// Never allowed: a broadcast larger than the whole delivery budget, or to everyone where
    /// the stack turned that off.
    Forbidden,
    /// A connect past the connections one signed-in user may hold (answered with 429).
    TooManyConnections,
    Internal,
}

impl std::fmt::Display for ErrorCode {
    /// The code as the frame spells it (`invalid_json`): serde's spelling, so the two never differ.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(Value::String(code)) => f.write_str(&code),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// A request the client got wrong: what to tell it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// With `rate_limited`: milliseconds until the same frame would pass (`retryAfterMs`).
    pub retry_after_ms: Option<u64>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// `rate_limited`, passing again after `retry_after` (rounded up to whole milliseconds).
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let millis = retry_after.as_micros().div_ceil(1000);
        ProtocolError {
            retry_after_ms: Some(u64::try_from(millis).unwrap_or(u64::MAX)),
            ..ProtocolError::new(ErrorCode::RateLimited, message)
        }
    }

    /// The `{"type":"error"}` frame that tells the client.
    pub fn to_frame(&self) -> String {
        ServerMessage::Error {
            code: self.code,
            message: &self.message,
            retry_after_ms: self.retry_after_ms,
        }
        .to_json()
    }
}

/// `{"action":"broadcast","message":"..."}`, to everyone, or with `"room"` to a room's members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastRequest {
    pub message: String,
    pub room: Option<String>,
}

/// `{"action":"join","room":"<room>","since":<seq, optional>}`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    pub room: String,
    /// The last `seq` the client has: the messages after it come as a `history` frame.
    pub since: Option<u64>,
}

/// `{"action":"leave","room":"<room>"}`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveRequest {
    pub room: String,
}

/// `{"action":"list"}`, or with `"room"` a room's live members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRequest {
    pub room: Option<String>,
}

/// `{"action":"history","room":"<room>","before":<seq, optional>,"limit":<1..100, optional>}`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRequest {
    pub room: String,
    pub before: Option<u64>,
    pub limit: u32,
}

impl JoinRequest {
    pub fn parse(body: &str) -> Result<Self, ProtocolError> {
        let object = parse_object(body)?;
        Ok(JoinRequest {
            room: room_field(&object)?,
            since: sequence_field(&object, "since")?,
        })
    }
}

impl LeaveRequest {
    pub fn parse(body: &str) -> Result<Self, ProtocolError> {
        let object = parse_object(body)?;
        Ok(LeaveRequest {
            room: room_field(&object)?,
        })
    }
}

impl ListRequest {
    pub fn parse(body: &str) -> Result<Self, ProtocolError> {
        let object = parse_object(body)?;
        Ok(ListRequest {
            room: optional_room(&object)?,
        })
    }
}

impl HistoryRequest {
    pub fn parse(body: &str) -> Result<Self, ProtocolError> {
        let object = parse_object(body)?;
        let room = room_field(&object)?;
        let bad_limit = || {
            ProtocolError::new(
                ErrorCode::InvalidField,
                format!("`limit` must be a whole number from 1 to {MAX_HISTORY_LIMIT}"),
            )
        };
        let limit = match sequence_field(&object, "limit").map_err(|_| bad_limit())? {
            None => DEFAULT_HISTORY_LIMIT,
            Some(limit) if (1..=u64::from(MAX_HISTORY_LIMIT)).contains(&limit) => limit as u32,
            Some(_) => return Err(bad_limit()),
        };
        Ok(HistoryRequest {
            room,
            before: sequence_field(&object, "before")?,
            limit,
        })
    }
}

/// Whether `room` is a room name: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn is_room_name(room: &str) -> bool {
    (1..=MAX_ROOM_BYTES).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A required `room`.
fn room_field(object: &Map<String, Value>) -> Result<String, ProtocolError> {
    let room = string_field(object, "room")?;
    if !is_room_name(room) {
        return Err(invalid_room());
    }
    Ok(room.to_owned())
}

/// An optional `room` (absent or `null`: none).
fn optional_room(object: &Map<String, Value>) -> Result<Option<String>, ProtocolError> {
    match object.get("room") {
        None | Some(Value::Null) => Ok(None),
        Some(_) => room_field(object).map(Some),
    }
}

fn invalid_room() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::InvalidField,
        format!("`room` must be 1 to {MAX_ROOM_BYTES} characters of A-Z, a-z, 0-9, _ . -"),
    )
}

/// An optional whole number (a `seq`, a limit): absent or `null` is none; anything else that is
/// not a non-negative integer is `invalid_field`.
fn sequence_field(object: &Map<String, Value>, field: &str) -> Result<Option<u64>, ProtocolError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => whole_number(value).map(Some).ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::InvalidField,
                format!("`{field}` must be a whole number, 0 or more"),
            )
        }),
    }
}

/// A whole number 0 or more: an integer, or a float with no fraction that is exactly one (`1.0`,
/// `2e1`, `-0`, as some JSON writers spell integers), up to 2^53.
fn whole_number(value: &Value) -> Option<u64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    value.as_u64().or_else(|| {
        let float = value.as_f64()?;
        (float.fract() == 0.0 && (-0.0..=EXACT).contains(&float)).then_some(float as u64)
    })
}

/// `{"action":"chat","connection":"<id>","message":"..."}` or
/// `{"action":"chat","user":"<sub>","message":"..."}`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatRequest {
    pub to: ChatTarget,
    pub message: String,
}

/// Whom a chat is for: one connection, or every live connection of a signed-in user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTarget {
    Connection(String),
    User(String),
}

impl BroadcastRequest {
    pub fn parse(body: &str) -> Result<Self, ProtocolError> {
        let object = parse_object(body)?;
        Ok(BroadcastRequest {
            message: message_field(&object)?,
            room: optional_room(&object)?,
        })
    }
}

impl ChatRequest {
    pub fn parse(body: &str) -> Result<Self, ProtocolError> {
        let object = parse_object(body)?;
        let named = |field| !matches!(object.get(field), None | Some(Value::Null));
        let to = match (named("connection"), named("user")) {
            (true, true) => {
                return Err(ProtocolError::new(
                    ErrorCode::InvalidField,
                    "give `connection` or `user`, not both",
                ));
            }
            (false, false) => {
                return Err(ProtocolError::new(
                    ErrorCode::MissingField,
                    "`connection` (a connection id) or `user` (a user's id) is required",
                ));
            }
            (true, false) => {
                let connection = string_field(&object, "connection")?;
                if !is_plausible_connection_id(connection) {
                    return Err(ProtocolError::new(
                        ErrorCode::InvalidField,
                        "`connection` must be a connection id as listed by {\"action\":\"list\"}",
                    ));
                }
                ChatTarget::Connection(connection.to_owned())
            }
            (false, true) => {
                let user = string_field(&object, "user")?;
                if user.len() > MAX_USER_BYTES {
                    return Err(ProtocolError::new(
                        ErrorCode::InvalidField,
                        format!(
                            "`user` must be a user's id, at most {MAX_USER_BYTES} bytes, as listed by {{\"action\":\"list\"}}"
                        ),
                    ));
                }
                ChatTarget::User(user.to_owned())
            }
        };
        Ok(ChatRequest {
            to,
            message: message_field(&object)?,
        })
    }
}

/// What `$default` answers: `invalid_json` when the frame is not JSON, `unknown_action` otherwise.
pub fn default_route_error(frame: &[u8], binary: bool) -> ProtocolError {
    let hint = "send a JSON object with \"action\" set to \"broadcast\", \"list\", \"chat\", \"join\", \"leave\" or \"history\"";
    match serde_json::from_slice::<Value>(frame) {
        Err(_) if binary => ProtocolError::new(
            ErrorCode::InvalidJson,
            format!("binary frames are not accepted: {hint} as a text frame"),
        ),
        Err(error) => ProtocolError::new(
            ErrorCode::InvalidJson,
            format!("{}: {hint}", not_json(&error)),
        ),
        Ok(_) if binary => ProtocolError::new(
            ErrorCode::UnknownAction,
            format!("binary frames are not routed: {hint} as a text frame"),
        ),
        Ok(Value::Object(object)) => match object.get("action") {
            None | Some(Value::Null) => {
                ProtocolError::new(ErrorCode::UnknownAction, format!("no \"action\": {hint}"))
            }
            Some(Value::String(action)) => ProtocolError::new(
                ErrorCode::UnknownAction,
                format!(
                    "unknown action {}: {hint}",
                    Value::String(truncate(action, 64))
                ),
            ),
            Some(_) => ProtocolError::new(
                ErrorCode::UnknownAction,
                format!("\"action\" must be a string: {hint}"),
            ),
        },
        Ok(_) => ProtocolError::new(
            ErrorCode::UnknownAction,
            format!("the frame is JSON but not an object: {hint}"),
        ),
    }
}

/// Validates the optional display name from the connect query string (`?name=alice`).
pub fn validate_name(name: Option<&str>) -> Result<Option<String>, ProtocolError> {
    // `?name=` with nothing after it is no name, as the parameter is optional
    let Some(name) = name.filter(|name| !name.is_empty()) else {
        return Ok(None);
    };
    let valid = (1..=MAX_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(Some(name.to_owned()))
    } else {
        Err(ProtocolError::new(
            ErrorCode::InvalidField,
            format!("`name` must be 1 to {MAX_NAME_BYTES} characters of A-Z, a-z, 0-9, _ . -"),
        ))
    }
}

fn is_plausible_connection_id(id: &str) -> bool {
    id.len() <= MAX_CONNECTION_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'+' | b'/'))
}

fn parse_object(body: &str) -> Result<Map<String, Value>, ProtocolError> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ProtocolError::new(
            ErrorCode::InvalidJson,
            "the frame must be a JSON object",
        )),
        Err(error) => Err(ProtocolError::new(ErrorCode::InvalidJson, not_json(&error))),
    }
}

/// Why serde_json refused a frame. Two refusals are of valid JSON past the parser's limits, and
/// say so: nesting deeper than 127 levels, and numbers beyond a 64-bit float (about 1.8e308).
fn not_json(error: &serde_json::Error) -> String {
    let detail = error.to_string();
    if detail.starts_with("recursion limit exceeded") {
        format!(
            "the frame nests arrays or objects deeper than {MAX_JSON_DEPTH} levels, more than webchat reads ({detail})"
        )
    } else if detail.starts_with("number out of range") {
        format!("the frame holds a number beyond what webchat reads, a 64-bit float ({detail})")
    } else {
        format!("the frame is not valid JSON ({detail})")
    }
}

/// The deepest nesting of arrays and objects a frame may have: serde_json refuses its
/// recursion limit (128) itself, so 127 is the deepest that parses.
pub const MAX_JSON_DEPTH: usize = 127;

/// A required, non-empty string field. Absent and `null` are "missing"; anything else that is not
/// a non-empty string is "invalid".
fn string_field<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, ProtocolError> {
    match object.get(field) {
        None | Some(Value::Null) => Err(ProtocolError::new(
            ErrorCode::MissingField,
            format!("`{field}` is required"),
        )),
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        Some(Value::String(_)) => Err(ProtocolError::new(
            ErrorCode::InvalidField,
            format!("`{field}` must not be empty"),
        )),
        Some(_) => Err(ProtocolError::new(
            ErrorCode::InvalidField,
            format!("`{field}` must be a string"),
        )),
    }
}

fn message_field(object: &Map<String, Value>) -> Result<String, ProtocolError> {
    let message = string_field(object, "message")?;
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "`message` is {} bytes of UTF-8; the limit is {MAX_MESSAGE_BYTES}",
                message.len()
            ),
        ));
    }
    Ok(message.to_owned())
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// A message said by one connection: the body of `broadcast` and `chat` frames.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Said<'a> {
    pub from: &'a str,
    /// A chat's target connection (the sender's copy says whom it reached); none in a broadcast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a str>,
    /// A chat's target user, for a chat to a user (every one of their connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_user: Option<&'a str>,
    /// The sender's user (its token's `sub`); `null` without sign-in.
    pub user: Option<&'a str>,
    pub name: Option<&'a str>,
    pub message: &'a str,
    /// RFC 3339
    pub sent_at: &'a str,
}

/// A message said in a room: its `broadcast` frame (with `"type":"broadcast"`), and one entry of a
/// `history` frame, as the room's history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomMessage {
    pub room: String,
    /// The room's message number: increasing, the same for every member.
    pub seq: u64,
    pub from: String,
    pub user: Option<String>,
    pub name: Option<String>,
    pub message: String,
    /// RFC 3339
    pub sent_at: String,
}

/// A presence frame's `event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceEvent {
    Joined,
    Left,
}

/// One row of a `connections` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionEntry {
    pub connection_id: String,
    /// Its user (the token's `sub`); `null` without sign-in.
    #[serde(default)]
    pub user: Option<String>,
    pub name: Option<String>,
    /// RFC 3339
    pub connected_at: String,
}

/// Every frame the server sends: a JSON object with a `type`.
#[derive(Clone, Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage<'a> {
    Welcome {
        connection_id: &'a str,
        /// The connection's user (the token's `sub`); `null` without sign-in.
        user: Option<&'a str>,
        /// The connection's display name (the token's, else `?name=`); `null` without one.
        name: Option<&'a str>,
        message: &'a str,
    },
    Broadcast(Said<'a>),
    Chat(Said<'a>),
    Connections {
        connections: &'a [ConnectionEntry],
    },
    /// A room's message, to its members.
    #[serde(rename = "broadcast")]
    RoomBroadcast(&'a RoomMessage),
    /// A room's live members (`list` with a room).
    #[serde(rename = "connections")]
    RoomConnections {
        room: &'a str,
        connections: &'a [ConnectionEntry],
    },
    Joined {
        room: &'a str,
        /// The room's latest `seq`, 0 if none.
        seq: u64,
        /// Whether the room sends presence frames (not past its presence limit).
        presence: bool,
    },
    Left {
        room: &'a str,
    },
    History {
        room: &'a str,
        /// Oldest first, each exactly its `broadcast` frame.
        #[serde(serialize_with = "as_broadcasts")]
        messages: &'a [RoomMessage],
        /// The `before` that fetches the page older than this one; `None` when there is none.
        next: Option<u64>,
    },
    Presence {
        room: &'a str,
        event: PresenceEvent,
        connection_id: &'a str,
        user: Option<&'a str>,
        name: Option<&'a str>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        /// `rate_limited` only; absent otherwise.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// A history's messages as the room's `broadcast` frames were (`"type":"broadcast"` included),
/// so a client handles a message the same way live or from history.
fn as_broadcasts<S: serde::Serializer>(
    messages: &&[RoomMessage],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(messages.iter().map(ServerMessage::RoomBroadcast))
}

impl ServerMessage<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// The welcome text for a new connection.
pub fn welcome_message(connection_id: &str) -> String {
    format!("Welcome! - connected on {connection_id}")
}

/// The detail of the welcome event (source [`EVENT_SOURCE`], detail-type [`WELCOME_DETAIL_TYPE`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WelcomeDetail {
    pub connection_id: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

const CONNECTIONS_PREFIX: &str = r#"{"type":"connections","connections":["#;
const CONNECTIONS_SUFFIX: &str = "]}";

/// A `history` frame of `messages` (oldest first) within one `@connections` payload
/// ([`MAX_PAYLOAD_BYTES`]): the oldest are left out until it fits, and `next` then points at them
/// (it is the oldest sent's `seq` whenever older ones remain: `more`, or left out). Returns the
/// frame and how many messages it holds.
pub fn history_frame(room: &str, messages: &[RoomMessage], more: bool) -> (String, usize) {
    let sizes: Vec<usize> = messages
        .iter()
        .map(|message| ServerMessage::RoomBroadcast(message).to_json().len())
        .collect();
    // the envelope at its longest: `next` as the largest seq
    let envelope = ServerMessage::History {
        room,
        messages: &[],
        next: Some(u64::MAX),
    }
    .to_json()
    .len();
    let mut total = envelope + sizes.iter().sum::<usize>() + sizes.len().saturating_sub(1);
    let mut first = 0;
    while total > MAX_PAYLOAD_BYTES && first < messages.len() {
        total -= sizes[first] + usize::from(first + 1 < messages.len());
        first += 1;
    }
    let kept = &messages[first..];
    let next = (more || first > 0)
        .then(|| kept.first().map(|oldest| oldest.seq))
        .flatten();
    let frame = ServerMessage::History {
        room,
        messages: kept,
        next,
    }
    .to_json();
    (frame, kept.len())
}

/// Packs connection entries into `connections` frames of at most `max_bytes` each, as they arrive
/// from a paginated scan, so a long list never needs to be held whole.
#[derive(Debug)]
pub struct ConnectionsPacker {
    max_bytes: usize,
    prefix: String,
    current: String,
    entries_in_current: usize,
    frames_emitted: usize,
}

impl ConnectionsPacker {
    pub fn new(max_bytes: usize) -> Self {
        ConnectionsPacker {
            max_bytes,
            prefix: CONNECTIONS_PREFIX.into(),
            current: String::from(CONNECTIONS_PREFIX),
            entries_in_current: 0,
            frames_emitted: 0,
        }
    }

    /// Frames of a room's members: `{"type":"connections","room":"<room>","connections":[...]}`.
    pub fn for_room(max_bytes: usize, room: &str) -> Self {
        let room = serde_json::to_string(room).expect("strings always serialize");
        let prefix = format!(r#"{{"type":"connections","room":{room},"connections":["#);
        ConnectionsPacker {
            max_bytes,
            current: prefix.clone(),
            prefix,
            entries_in_current: 0,
            frames_emitted: 0,
        }
    }

    /// Adds an entry; returns a full frame when the entry did not fit in the current one.
    pub fn push(&mut self, entry: &ConnectionEntry) -> Option<String> {
        let json = serde_json::to_string(entry).expect("entries always serialize");
        let separator = usize::from(self.entries_in_current > 0);
        let fits = self.current.len() + separator + json.len() + CONNECTIONS_SUFFIX.len()
            <= self.max_bytes;
        let full = if fits || self.entries_in_current == 0 {
            None
        } else {
            Some(self.take_frame())
        };
        if self.entries_in_current > 0 {
            self.current.push(',');
        }
        self.current.push_str(&json);
        self.entries_in_current += 1;
        full
    }

    /// The last frame: what is left, or an empty list if nothing was ever emitted.
    pub fn finish(mut self) -> Option<String> {
        (self.entries_in_current > 0 || self.frames_emitted == 0).then(|| self.take_frame())
    }

    fn take_frame(&mut self) -> String {
        let mut frame = std::mem::replace(&mut self.current, self.prefix.clone());
        frame.push_str(CONNECTIONS_SUFFIX);
        self.entries_in_current = 0;
        self.frames_emitted += 1;
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code_of(result: Result<impl std::fmt::Debug, ProtocolError>) -> ErrorCode {
        result.expect_err("expected a protocol error").code
    }

    #[test]
    fn route_selection_follows_the_action_field() {
        assert_eq!(
            select_route(r#"{"action":"broadcast"}"#),
            RouteKey::Broadcast
        );
        assert_eq!(select_route(r#"{"action":"list","x":1}"#), RouteKey::List);
        assert_eq!(select_route(r#"{"action":"chat"}"#), RouteKey::Chat);
        for other in [
            r#"{"action":"$connect"}"#,
            r#"{"action":"nope"}"#,
            r#"{"action":7}"#,
            r#"{"message":"hi"}"#,
            r#"[{"action":"list"}]"#,
            "list",
            "",
        ] {
            assert_eq!(select_route(other), RouteKey::Default, "{other}");
        }
    }

    #[test]
    fn the_largest_delivered_frame_fits_api_gateways_message_quota() {
        let frame = |name: Option<&str>, message: &str| {
            ServerMessage::Broadcast(Said {
                from: "L0SM9cOFvHcCIhw=",
                to: None,
                to_user: None,
                user: None,
                name,
                message,
                sent_at: "2026-11-28T08:00:00.000Z",
            })
            .to_json()
            .len()
        };
        // The figures docs/protocol.md gives, for a sender without a name.
        assert_eq!(frame(None, &"\"".repeat(MAX_MESSAGE_BYTES)), 32_887);
        assert_eq!(frame(None, &"\u{1}".repeat(MAX_MESSAGE_BYTES)), 98_423);
        let longest = "n".repeat(MAX_NAME_BYTES);
        let controls = frame(Some(&longest), &"\u{1}".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(controls, 6 * MAX_MESSAGE_BYTES + frame(Some(&longest), ""));
        assert!(controls <= MAX_PAYLOAD_BYTES, "{controls}");
        // a signed-in sender: the longest user id and token name, each all escapes, in a chat
        // to the longest user id
        let user = "\u{1}".repeat(MAX_USER_BYTES);
        let name = "\u{1}".repeat(crate::auth::MAX_TOKEN_NAME_CHARS);
        let signed_in = ServerMessage::Chat(Said {
            from: "L0SM9cOFvHcCIhw=",
            to: None,
            to_user: Some(&user),
            user: Some(&user),
            name: Some(&name),
            message: &"\u{1}".repeat(MAX_MESSAGE_BYTES),
            sent_at: "2026-11-28T08:00:00.000Z",
        })
        .to_json()
        .len();
        assert!(signed_in <= MAX_PAYLOAD_BYTES, "{signed_in}");
    }

    #[test]
    fn valid_json_past_the_parsers_limits_says_which_limit() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let error = default_route_error(deep.as_bytes(), false);
        assert_eq!(error.code, ErrorCode::InvalidJson);
        assert!(
            error.message.contains("deeper than 127 levels"),
            "{}",
            error.message
        );
        // the limit exactly: 127 levels parse (the object itself is the first), 128 do not
        let nested = |levels: usize| {
            format!(
                r#"{{"action":"list","x":{}1{}}}"#,
                r#"{"a":"#.repeat(levels - 1),
                "}".repeat(levels - 1)
            )
        };
        assert!(ListRequest::parse(&nested(MAX_JSON_DEPTH)).is_ok());
        let error = ListRequest::parse(&nested(MAX_JSON_DEPTH + 1)).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidJson);
        let huge = format!(
            r#"{{"action":"broadcast","message":"hi","n":1{}}}"#,
            "0".repeat(400)
        );
        let error = BroadcastRequest::parse(&huge).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidJson);
        assert!(
            error.message.contains("a 64-bit float"),
            "{}",
            error.message
        );
    }

    #[test]
    fn default_route_says_invalid_json_only_for_frames_that_are_not_json() {
        let cases: [(&[u8], bool, ErrorCode); 5] = [
            (b"hello", false, ErrorCode::InvalidJson),
            (b"{\"action\":", false, ErrorCode::InvalidJson),
            (b"[1,2]", false, ErrorCode::UnknownAction),
            (b"{}", false, ErrorCode::UnknownAction),
            (&[0xff, 0x00], true, ErrorCode::InvalidJson),
        ];
        for (frame, binary, code) in cases {
            assert_eq!(default_route_error(frame, binary).code, code, "{frame:?}");
        }
        let unknown = default_route_error(br#"{"action":"dance"}"#, false);
        assert_eq!(unknown.code, ErrorCode::UnknownAction);
        assert!(unknown.message.contains("\"dance\""), "{}", unknown.message);
    }

    #[test]
    fn broadcast_requires_a_non_empty_string_message_within_the_limit() {
        let ok = BroadcastRequest::parse(r#"{"action":"broadcast","message":"Anybody home?"}"#);
        assert_eq!(ok.unwrap().message, "Anybody home?");
        assert_eq!(
            code_of(BroadcastRequest::parse(r#"{"action":"broadcast"}"#)),
            ErrorCode::MissingField
        );
        assert_eq!(
            code_of(BroadcastRequest::parse(
                r#"{"action":"broadcast","message":null}"#
            )),
            ErrorCode::MissingField
        );
        assert_eq!(
            code_of(BroadcastRequest::parse(
                r#"{"action":"broadcast","message":""}"#
            )),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code_of(BroadcastRequest::parse(
                r#"{"action":"broadcast","message":["a"]}"#
            )),
            ErrorCode::InvalidField
        );
        let exactly = "é".repeat(MAX_MESSAGE_BYTES / 2);
        let body = json!({"action":"broadcast","message": exactly}).to_string();
        assert!(BroadcastRequest::parse(&body).is_ok());
        let over = format!("{exactly}x");
        let body = json!({"action":"broadcast","message": over}).to_string();
        assert_eq!(
            code_of(BroadcastRequest::parse(&body)),
            ErrorCode::MessageTooLarge
        );
    }

    #[test]
    fn chat_needs_a_plausible_connection_id_and_a_message() {
        let ok = ChatRequest::parse(
            r#"{"action":"chat","connection":"L0SM9cOFvHcCIhw=","message":"Yo!"}"#,
        )
        .unwrap();
        assert_eq!(ok.to, ChatTarget::Connection("L0SM9cOFvHcCIhw=".into()));
        assert_eq!(
            code_of(ChatRequest::parse(r#"{"action":"chat","message":"Yo!"}"#)),
            ErrorCode::MissingField
        );
        let to_user = ChatRequest::parse(r#"{"action":"chat","user":"u-1","message":"Yo!"}"#);
        assert_eq!(to_user.unwrap().to, ChatTarget::User("u-1".into()));
        assert_eq!(
            code_of(ChatRequest::parse(
                r#"{"action":"chat","connection":"L0SM9cOFvHcCIhw=","user":"u-1","message":"Yo!"}"#
            )),
            ErrorCode::InvalidField,
            "both"
        );
        assert_eq!(
            code_of(ChatRequest::parse(
                r#"{"action":"chat","connection":null,"user":null,"message":"Yo!"}"#
            )),
            ErrorCode::MissingField,
            "neither"
        );
        for bad in [
            r#""""#,
            "7",
            &format!("{:?}", "u".repeat(MAX_USER_BYTES + 1)),
        ] {
            let body = format!(r#"{{"action":"chat","user":{bad},"message":"Yo!"}}"#);
            assert_eq!(
                code_of(ChatRequest::parse(&body)),
                ErrorCode::InvalidField,
                "{bad}"
            );
        }
        assert_eq!(
            code_of(ChatRequest::parse(
                r#"{"action":"chat","connection":"a b","message":"Yo!"}"#
            )),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code_of(ChatRequest::parse(
                r#"{"action":"chat","connection":42,"message":"Yo!"}"#
            )),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code_of(ChatRequest::parse(
                r#"{"action":"chat","connection":"abc"}"#
            )),
            ErrorCode::MissingField
        );
    }

    #[test]
    fn room_requests_name_a_plain_room_and_whole_numbers() {
        let join = JoinRequest::parse(r#"{"action":"join","room":"general.1_a-b"}"#).unwrap();
        assert_eq!((join.room.as_str(), join.since), ("general.1_a-b", None));
        let since = JoinRequest::parse(r#"{"action":"join","room":"r","since":41}"#).unwrap();
        assert_eq!(since.since, Some(41));
        for bad in [
            r#"{"action":"join","room":""}"#,
            r#"{"action":"join","room":"a b"}"#,
            r#"{"action":"join","room":7}"#,
            r#"{"action":"join","room":"r","since":-1}"#,
            r#"{"action":"join","room":"r","since":1.5}"#,
            r#"{"action":"join","room":"r","since":"3"}"#,
        ] {
            assert_eq!(
                code_of(JoinRequest::parse(bad)),
                ErrorCode::InvalidField,
                "{bad}"
            );
        }
        let long = format!(r#"{{"action":"join","room":"{}"}}"#, "r".repeat(65));
        assert_eq!(code_of(JoinRequest::parse(&long)), ErrorCode::InvalidField);
        let longest = format!(r#"{{"action":"join","room":"{}"}}"#, "r".repeat(64));
        assert!(JoinRequest::parse(&longest).is_ok());
        assert_eq!(
            code_of(JoinRequest::parse(r#"{"action":"join"}"#)),
            ErrorCode::MissingField
        );
        assert_eq!(
            LeaveRequest::parse(r#"{"action":"leave","room":"r"}"#)
                .unwrap()
                .room,
            "r"
        );
        let history = HistoryRequest::parse(r#"{"action":"history","room":"r"}"#).unwrap();
        assert_eq!(
            (history.before, history.limit),
            (None, DEFAULT_HISTORY_LIMIT)
        );
        let page =
            HistoryRequest::parse(r#"{"action":"history","room":"r","before":9,"limit":100}"#)
                .unwrap();
        assert_eq!((page.before, page.limit), (Some(9), 100));
        for limit in ["0", "101", "-5", "2.5", "\"10\""] {
            let body = format!(r#"{{"action":"history","room":"r","limit":{limit}}}"#);
            assert_eq!(
                code_of(HistoryRequest::parse(&body)),
                ErrorCode::InvalidField,
                "{limit}"
            );
        }
        // whole numbers as some JSON writers spell them; a fraction or a negative is not one
        for (body, since) in [
            (r#"{"action":"join","room":"r","since":1.0}"#, 1),
            (r#"{"action":"join","room":"r","since":2e1}"#, 20),
            (r#"{"action":"join","room":"r","since":-0}"#, 0),
        ] {
            assert_eq!(
                JoinRequest::parse(body).unwrap().since,
                Some(since),
                "{body}"
            );
        }
        for body in [
            r#"{"action":"join","room":"r","since":1.5}"#,
            r#"{"action":"join","room":"r","since":-1.0}"#,
            r#"{"action":"join","room":"r","since":1e300}"#,
        ] {
            assert_eq!(
                code_of(JoinRequest::parse(body)),
                ErrorCode::InvalidField,
                "{body}"
            );
        }
        // every bad limit says what a good one is
        for limit in ["-1", "1.5", "\"5\"", "[]", "0", "101"] {
            let body = format!(r#"{{"action":"history","room":"r","limit":{limit}}}"#);
            let error = HistoryRequest::parse(&body).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidField, "{body}");
            assert!(
                error.message.contains("from 1 to 100"),
                "{body}: {}",
                error.message
            );
        }
        // the room is checked first: without one, that is what is wrong
        assert_eq!(
            code_of(HistoryRequest::parse(r#"{"action":"history","limit":0}"#)),
            ErrorCode::MissingField
        );
        // room is optional for broadcast and list, checked when given
        let everyone = BroadcastRequest::parse(r#"{"action":"broadcast","message":"m"}"#).unwrap();
        assert_eq!(everyone.room, None);
        let room = BroadcastRequest::parse(r#"{"action":"broadcast","room":"r","message":"m"}"#);
        assert_eq!(room.unwrap().room.as_deref(), Some("r"));
        assert_eq!(
            code_of(BroadcastRequest::parse(
                r#"{"action":"broadcast","room":"no room","message":"m"}"#
            )),
            ErrorCode::InvalidField
        );
        assert_eq!(
            ListRequest::parse(r#"{"action":"list"}"#).unwrap().room,
            None
        );
        assert_eq!(
            ListRequest::parse(r#"{"action":"list","room":null}"#)
                .unwrap()
                .room,
            None
        );
    }

    fn room_message(seq: u64, text: &str) -> RoomMessage {
        RoomMessage {
            room: "r".into(),
            seq,
            from: "abc=".into(),
            user: None,
            name: Some("ada".into()),
            message: text.into(),
            sent_at: "2026-12-06T08:00:00.000Z".into(),
        }
    }

    #[test]
    fn a_history_page_fits_one_payload_leaving_out_its_oldest_and_saying_so() {
        let small: Vec<RoomMessage> = (1..=3).map(|seq| room_message(seq, "hi")).collect();
        let (frame, kept) = history_frame("r", &small, false);
        let value: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!((kept, &value["next"]), (3, &Value::Null));
        assert_eq!(value["messages"][0]["seq"], 1);
        let (frame, _) = history_frame("r", &small, true);
        let value: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            value["next"], 1,
            "older ones remain: next is the oldest sent"
        );
        // a hundred messages of the largest size cannot fit: the newest that do are sent
        let large = "é".repeat(MAX_MESSAGE_BYTES / 2);
        let big: Vec<RoomMessage> = (1..=100).map(|seq| room_message(seq, &large)).collect();
        let (frame, kept) = history_frame("r", &big, false);
        assert!(frame.len() <= MAX_PAYLOAD_BYTES, "{}", frame.len());
        let value: Value = serde_json::from_str(&frame).unwrap();
        let seqs: Vec<u64> = value["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs.len(), kept);
        assert_eq!(seqs.last(), Some(&100), "the newest are kept");
        assert_eq!(value["next"], seqs[0], "next points at what was left out");
        // one more would not have fitted
        let (with_one_more, _) = history_frame("r", &big[100 - kept - 1..], false);
        assert!(with_one_more.len() <= MAX_PAYLOAD_BYTES);
        let one_more: Value = serde_json::from_str(&with_one_more).unwrap();
        assert_eq!(one_more["messages"].as_array().unwrap().len(), kept);
        let (empty, kept) = history_frame("r", &[], true);
        assert_eq!(kept, 0);
        assert_eq!(
            serde_json::from_str::<Value>(&empty).unwrap(),
            json!({"type":"history","room":"r","messages":[],"next":null})
        );
    }

    #[test]
    fn a_rooms_member_list_names_its_room_in_every_frame() {
        let mut packer = ConnectionsPacker::for_room(400, "r.1");
        let entry = |i: usize| ConnectionEntry {
            connection_id: format!("c{i:014}="),
            user: None,
            name: Some(format!("n{i}")),
            connected_at: "2026-12-06T08:00:00.000Z".into(),
        };
        let mut frames: Vec<String> = (0..10).filter_map(|i| packer.push(&entry(i))).collect();
        frames.extend(packer.finish());
        assert!(frames.len() > 1);
        let mut listed = 0;
        for frame in &frames {
            assert!(frame.len() <= 400);
            let value: Value = serde_json::from_str(frame).unwrap();
            assert_eq!(
                (&value["type"], &value["room"]),
                (&json!("connections"), &json!("r.1"))
            );
            listed += value["connections"].as_array().unwrap().len();
        }
        assert_eq!(listed, 10);
        let empty = ConnectionsPacker::for_room(400, "r").finish().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&empty).unwrap(),
            json!({"type":"connections","room":"r","connections":[]})
        );
    }

    #[test]
    fn a_rate_limited_error_says_when_to_retry_and_others_do_not() {
        let limited =
            ProtocolError::rate_limited("slow down", std::time::Duration::from_micros(1_500));
        assert_eq!(
            serde_json::from_str::<Value>(&limited.to_frame()).unwrap(),
            json!({"type":"error","code":"rate_limited","message":"slow down","retryAfterMs":2})
        );
        let forbidden = ProtocolError::new(ErrorCode::Forbidden, "no");
        assert_eq!(
            serde_json::from_str::<Value>(&forbidden.to_frame()).unwrap(),
            json!({"type":"error","code":"forbidden","message":"no"})
        );
    }

    #[test]
    fn room_frames_have_the_contracted_shape() {
        let said = RoomMessage {
            room: "r".into(),
            seq: 7,
            from: "abc=".into(),
            user: None,
            name: Some("ada".into()),
            message: "hi".into(),
            sent_at: "2026-12-06T08:00:00.000Z".into(),
        };
        let json = |m: ServerMessage| serde_json::from_str::<Value>(&m.to_json()).unwrap();
        assert_eq!(
            json(ServerMessage::RoomBroadcast(&said)),
            json!({"type":"broadcast","room":"r","seq":7,"from":"abc=","user":null,"name":"ada","message":"hi","sentAt":"2026-12-06T08:00:00.000Z"})
        );
        assert_eq!(
            json(ServerMessage::Joined {
                room: "r",
                seq: 0,
                presence: false
            }),
            json!({"type":"joined","room":"r","seq":0,"presence":false})
        );
        assert_eq!(
            json(ServerMessage::Left { room: "r" }),
            json!({"type":"left","room":"r"})
        );
        let history = json(ServerMessage::History {
            room: "r",
            messages: std::slice::from_ref(&said),
            next: None,
        });
        assert_eq!(history["type"], "history");
        assert_eq!(history["next"], Value::Null);
        assert_eq!(
            history["messages"][0],
            json(ServerMessage::RoomBroadcast(&said)),
            "each entry is the room's broadcast frame"
        );
        assert_eq!(
            json(ServerMessage::Presence {
                room: "r",
                event: PresenceEvent::Joined,
                connection_id: "abc=",
                user: Some("u"),
                name: None
            }),
            json!({"type":"presence","room":"r","event":"joined","connectionId":"abc=","user":"u","name":null})
        );
        assert_eq!(
            json(ServerMessage::RoomConnections {
                room: "r",
                connections: &[]
            }),
            json!({"type":"connections","room":"r","connections":[]})
        );
        for code in [ErrorCode::TooManyRooms, ErrorCode::NotAMember] {
            assert_eq!(json!(code), json!(code.to_string()));
        }
        assert_eq!(json!(ErrorCode::TooManyRooms), "too_many_rooms");
        assert_eq!(json!(ErrorCode::NotAMember), "not_a_member");
    }

    #[test]
    fn names_are_short_and_plain() {
        assert_eq!(validate_name(None), Ok(None));
        assert_eq!(
            validate_name(Some("")),
            Ok(None),
            "an empty name is no name"
        );
        assert_eq!(
            validate_name(Some("alice.B-2_")),
            Ok(Some("alice.B-2_".into()))
        );
        assert!(validate_name(Some(&"a".repeat(32))).is_ok());
        for bad in ["a b", "<script>", "ünïcode", &"a".repeat(33)] {
            assert!(validate_name(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_messages_have_the_contracted_shape() {
        let welcome = ServerMessage::Welcome {
            connection_id: "abc=",
            user: None,
            name: None,
            message: &welcome_message("abc="),
        };
        assert_eq!(
            serde_json::from_str::<Value>(&welcome.to_json()).unwrap(),
            json!({"type":"welcome","connectionId":"abc=","user":null,"name":null,"message":"Welcome! - connected on abc="})
        );
        let signed_in = ServerMessage::Welcome {
            connection_id: "abc=",
            user: Some("u-1"),
            name: Some("Ada Lovelace"),
            message: &welcome_message("abc="),
        };
        assert_eq!(
            serde_json::from_str::<Value>(&signed_in.to_json()).unwrap(),
            json!({"type":"welcome","connectionId":"abc=","user":"u-1","name":"Ada Lovelace","message":"Welcome! - connected on abc="})
        );
        let said = Said {
            from: "abc=",
            to: Some("def="),
            to_user: None,
            user: None,
            name: None,
            message: "<b>\"hi\"</b> ✓",
            sent_at: "2026-11-28T07:00:00.000Z",
        };
        assert_eq!(
            serde_json::from_str::<Value>(&ServerMessage::Chat(said).to_json()).unwrap(),
            json!({"type":"chat","from":"abc=","to":"def=","user":null,"name":null,"message":"<b>\"hi\"</b> ✓","sentAt":"2026-11-28T07:00:00.000Z"})
        );
        let to_person = Said {
            from: "abc=",
            to: None,
            to_user: Some("u-2"),
            user: Some("u-1"),
            name: Some("Ada"),
            message: "hi",
            sent_at: "2026-11-28T07:00:00.000Z",
        };
        assert_eq!(
            serde_json::from_str::<Value>(&ServerMessage::Chat(to_person).to_json()).unwrap(),
            json!({"type":"chat","from":"abc=","toUser":"u-2","user":"u-1","name":"Ada","message":"hi","sentAt":"2026-11-28T07:00:00.000Z"})
        );
        for code in [
            ErrorCode::InvalidJson,
            ErrorCode::UnknownAction,
            ErrorCode::MissingField,
            ErrorCode::InvalidField,
            ErrorCode::MessageTooLarge,
            ErrorCode::ConnectionNotFound,
            ErrorCode::UserNotFound,
            ErrorCode::TokenExpired,
            ErrorCode::DeliveryIncomplete,
            ErrorCode::Internal,
        ] {
            assert_eq!(
                json!(code),
                json!(code.to_string()),
                "logs spell codes as frames do"
            );
        }
        let error = ProtocolError::new(ErrorCode::ConnectionNotFound, "gone").to_frame();
        assert_eq!(
            serde_json::from_str::<Value>(&error).unwrap(),
            json!({"type":"error","code":"connection_not_found","message":"gone"})
        );
    }

    #[test]
    fn long_connection_lists_are_split_into_frames_that_each_fit() {
        let entries: Vec<ConnectionEntry> = (0..2000)
            .map(|i| ConnectionEntry {
                connection_id: format!("id{i:013}="),
                user: Some(format!("{i:08}-0000-4000-8000-000000000000")),
                name: Some(format!("user-{i:027}")),
                connected_at: "2026-11-28T07:00:00.000Z".into(),
            })
            .collect();
        let mut packer = ConnectionsPacker::new(MAX_FRAME_BYTES);
        let mut frames: Vec<String> = entries.iter().filter_map(|e| packer.push(e)).collect();
        frames.extend(packer.finish());
        assert!(frames.len() > 1);
        let mut seen = Vec::new();
        for frame in &frames {
            assert!(frame.len() <= MAX_FRAME_BYTES, "{}", frame.len());
            let value: Value = serde_json::from_str(frame).unwrap();
            assert_eq!(value["type"], "connections");
            let list: Vec<ConnectionEntry> =
                serde_json::from_value(value["connections"].clone()).unwrap();
            seen.extend(list);
        }
        assert_eq!(seen, entries);
    }

    #[test]
    fn an_empty_connection_list_is_still_one_frame() {
        let frames: Vec<String> = ConnectionsPacker::new(MAX_FRAME_BYTES)
            .finish()
            .into_iter()
            .collect();
        assert_eq!(
            frames,
            vec![r#"{"type":"connections","connections":[]}"#.to_string()]
        );
    }

    mod never_panics {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn on_any_text(text in any::<String>()) {
                let _ = select_route(&text);
                let _ = BroadcastRequest::parse(&text);
                let _ = ChatRequest::parse(&text);
                let _ = JoinRequest::parse(&text);
                let _ = LeaveRequest::parse(&text);
                let _ = ListRequest::parse(&text);
                let _ = HistoryRequest::parse(&text);
                let _ = default_route_error(text.as_bytes(), false);
                let _ = validate_name(Some(&text));
            }

            #[test]
            fn on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = default_route_error(&bytes, true);
            }

            #[test]
            fn on_json_shaped_requests(
                action in prop_oneof![Just("broadcast".to_string()), Just("chat".to_string()), Just("list".to_string()), ".*"],
                connection in proptest::option::of(".{0,200}"),
                message in proptest::option::of(".{0,300}"),
            ) {
                let body = serde_json::json!({"action": action, "connection": connection, "message": message}).to_string();
                let _ = select_route(&body);
                let _ = BroadcastRequest::parse(&body);
                let _ = ChatRequest::parse(&body);
                let _ = JoinRequest::parse(&body);
                let _ = LeaveRequest::parse(&body);
                let _ = ListRequest::parse(&body);
                let _ = HistoryRequest::parse(&body);
            }
        }
    }
}
