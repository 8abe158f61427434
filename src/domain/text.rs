//! What the routes tell clients in their own words: every `{"type":"error"}` frame the domain
//! writes, in one place (the codes are the protocol's; the wording is here).

use std::time::Duration;

use super::Deliveries;
use super::limits::Rate;
use crate::ports::ShardJob;
use crate::protocol::{ErrorCode, ProtocolError};

/// What the sender of a chat is told when its target has not finished connecting.
pub(crate) fn still_connecting(connection_id: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::ConnectionNotFound,
        format!("connection {connection_id} is still connecting: try again in a moment"),
    )
}

/// What the sender of a broadcast is told when some live connection may have missed it.
pub(crate) fn delivery_incomplete(summary: &Deliveries, scan_failed: bool) -> String {
    let mut missed = Vec::new();
    if summary.failed > 0 {
        missed.push(format!("{} could not be reached", summary.failed));
    }
    if summary.not_attempted > 0 {
        missed.push(format!(
            "{} were not attempted before the time limit",
            summary.not_attempted
        ));
    }
    if !summary.complete && scan_failed {
        missed.push("the list of connections could not be read to its end".into());
    } else if !summary.complete {
        missed.push("the time limit came before the rest of the connections were read".into());
    }
    ProtocolError::new(
        ErrorCode::DeliveryIncomplete,
        format!(
            "the broadcast reached {} connections, but {}; send it again to reach everyone (some may get it twice)",
            summary.delivered,
            missed.join(", and ")
        ),
    )
    .to_frame()
}

/// What the sender of a chat is told when its target is not connected. A target that does not
/// look like a connection id is most likely a name: say that `connection` takes an id.
pub(crate) fn not_found(connection_id: &str) -> ProtocolError {
    let message = if looks_like_a_connection_id(connection_id) {
        format!(
            "no connection {connection_id}: it may have disconnected; send {{\"action\":\"list\"}} to see who is here"
        )
    } else {
        format!(
            "no connection {connection_id:?}: \"connection\" takes a connection id (like \
             L0SM9cOFvHcCIhw=), not a name; send {{\"action\":\"list\"}} to see each name's id"
        )
    };
    ProtocolError::new(ErrorCode::ConnectionNotFound, message)
}

/// API Gateway's connection ids are 16 characters of URL-safe base64 ending in `=`.
fn looks_like_a_connection_id(text: &str) -> bool {
    text.len() == 16
        && text.ends_with('=')
        && text[..15]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// What the sender is told when the infrastructure failed (the detail stays in the logs).
pub(crate) fn internal() -> String {
    ProtocolError::new(
        ErrorCode::Internal,
        "something went wrong on our side; please try again",
    )
    .to_frame()
}

/// What the sender of a sharded broadcast is told when one of its jobs failed its last attempt.
pub(crate) fn shard_abandoned(job: &ShardJob, attempts: u32) -> String {
    ProtocolError::new(
        ErrorCode::DeliveryIncomplete,
        format!(
            "part of the broadcast (segment {} of {}) could not be delivered after {attempts} attempts; send it again to reach everyone (some may get it twice)",
            job.segment.index + 1,
            job.segment.total
        ),
    )
    .to_frame()
}

/// What the sender of a chat to a user is told when the user has no live connection.
pub(crate) fn user_not_found(user: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::UserNotFound,
        format!(
            "no live connection of user {user:?}: they may have signed out; send {{\"action\":\"list\"}} to see who is here"
        ),
    )
}

/// What the sender of a chat to a user is told when each of their connections is still
/// connecting.
pub(crate) fn user_still_connecting(user: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::UserNotFound,
        format!("user {user:?} is still connecting: try again in a moment"),
    )
}

/// What a connection whose token expired is told before it is closed.
pub(crate) fn token_expired() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::TokenExpired,
        "your sign-in has expired: sign in again and reconnect",
    )
}

/// What a connection is told when it speaks in, lists or reads a room it has not joined.
pub(crate) fn not_a_member(room: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NotAMember,
        format!(
            "you are not in room {room:?}: join it first with {{\"action\":\"join\",\"room\":\"{room}\"}}"
        ),
    )
}

/// What a connection in as many rooms as it may be is told when it joins one more.
pub(crate) fn too_many_rooms(room: &str, max: usize) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::TooManyRooms,
        format!(
            "you are in {max} rooms, the most one connection may be in: leave one before you join {room:?}"
        ),
    )
}

/// The close reason of a connection whose frames kept being refused (close code 1008).
pub(crate) const CLOSED_FOR_REFUSALS: &str = "too many refused frames";

/// Added to the refusal that closes its connection.
pub(crate) const CLOSING_FOR_REFUSALS: &str =
    "; 100 of this connection's frames were refused within a minute, so it is being closed";

/// A wait, as a person reads it: "250 ms", "3.6 s", "2 min".
fn wait_text(wait: Duration) -> String {
    // rounded up, as retryAfterMs is: waiting what it says always suffices
    let millis = wait.as_micros().div_ceil(1_000);
    if millis < 1_000 {
        format!("{} ms", millis.max(1))
    } else if millis < 120_000 {
        format!("{:.1} s", (millis as f64 / 100.0).ceil() / 10.0)
    } else {
        format!("{} min", millis.div_ceil(60_000))
    }
}

/// What a frame over a frame budget is answered: the connection's (or with `user`, the
/// signed-in user's across their connections), `rate` a second.
pub(crate) fn frame_refused(user: bool, rate: Rate, wait: Duration) -> ProtocolError {
    let per_second = 1_000_000 / rate.interval_us.max(1);
    let whose = if user {
        "your connections together"
    } else {
        "this connection"
    };
    let message = format!(
        "too many frames: {whose} may send {per_second} a second, {} at once; this one was dropped, send it again in {}",
        rate.burst,
        wait_text(wait)
    );
    ProtocolError::rate_limited(message, wait)
}

/// What a broadcast to everyone is answered where the stack turned that off.
pub(crate) fn everyone_broadcast_off() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Forbidden,
        "broadcasting to everyone is turned off here: join a room and broadcast there, \
         e.g. {\"action\":\"join\",\"room\":\"lobby\"}",
    )
}

/// What a broadcast larger than the whole delivery budget is answered.
pub(crate) fn broadcast_too_large(budget: u64, audience: u64) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Forbidden,
        format!(
            "a connection's broadcasts may reach at most {budget} a minute; this one would reach {audience}"
        ),
    )
}

/// What a broadcast that does not fit what is left of the delivery budget is answered.
pub(crate) fn deliveries_refused(budget: u64, audience: u64, wait: Duration) -> ProtocolError {
    ProtocolError::rate_limited(
        format!(
            "this broadcast would reach {audience} connections, more than is left of your {budget} \
             deliveries a minute; it was dropped, send it again in {}",
            wait_text(wait)
        ),
        wait,
    )
}

/// What the connect past a user's connections is answered (with 429).
pub(crate) fn too_many_connections(user: &str, max: usize, live: usize) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::TooManyConnections,
        format!(
            "user {user:?} already has {live} connections open, and may have at most {max}: close one before you connect again"
        ),
    )
}
