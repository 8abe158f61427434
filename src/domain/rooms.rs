//! Rooms: `join` (with its catch-up), `leave`, `history`, a room's `broadcast` and `list`, the
//! presence frames of a small room, and leaving every room when a connection ends.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::delivery::{Ended, Sweep, paginate};
use super::guard::Admitted;
use super::{Chat, Deadline, RouteError, Sender, Summary, text};
use crate::ports::{
    Appended, ConnectionApi, ConnectionStore, EventBus, Joined, MEMBERSHIP_SHARDS, Member, Outcome,
    RoomStore, SeqRange, StoreError, rfc3339,
};
use crate::protocol::{
    ConnectionEntry, ConnectionsPacker, HistoryRequest, JoinRequest, LeaveRequest, MAX_FRAME_BYTES,
    MAX_HISTORY_LIMIT, MAX_ROOMS_PER_CONNECTION, PresenceEvent, RoomMessage, ServerMessage,
    history_frame,
};

/// A catch-up's `history` frame holds at most this many of the missed messages (the newest).
pub const CATCH_UP_LIMIT: u32 = MAX_HISTORY_LIMIT;

const DAY_SECONDS: i64 = 24 * 60 * 60;

impl<S: ConnectionStore, A: ConnectionApi, B: EventBus, R: RoomStore> Chat<S, A, B, R> {
    /// `join`: the sender becomes a member of the room (again: harmless) and is told the room's
    /// latest `seq`; with `since`, the messages after it follow as a `history` frame; the room's
    /// other members are told (in a room within the presence limit).
    pub async fn join<'s>(
        &self,
        sender: impl Into<Sender<'s>>,
        body: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let sender = sender.into().connection_id;
        let Some(request) = self
            .parsed(sender, JoinRequest::parse(body), deadline)
            .await?
        else {
            return Ok(());
        };
        let room = request.room.as_str();
        self.or_tell_internal(sender, deadline, async {
            let now = self.clock.now();
            // the member carries what a fan-out and presence need: the connection's record
            let Some(record) = self.store.get(sender, now.timestamp()).await? else {
                tracing::warn!(
                    connection_id = sender,
                    room,
                    "join from a connection with no record"
                );
                return self.reply(sender, text::internal(), deadline).await;
            };
            let member = Member {
                connection_id: record.connection_id,
                connected_at: record.connected_at,
                user: record.user,
                name: record.name,
                expires_at: record.expires_at,
            };
            let joined = self
                .rooms
                .join(room, member.clone(), MAX_ROOMS_PER_CONNECTION)
                .await?;
            let (new, meta) = match joined {
                Joined::Member { new, room } => (new, room),
                Joined::TooManyRooms => {
                    let told = text::too_many_rooms(room, MAX_ROOMS_PER_CONNECTION);
                    return self.tell(sender, told, deadline).await;
                }
                Joined::NoConnection => {
                    tracing::warn!(
                        connection_id = sender,
                        room,
                        "join from a connection that ended"
                    );
                    return self.reply(sender, text::internal(), deadline).await;
                }
            };
            let presence = self.has_presence(meta.members);
            let frame = ServerMessage::Joined {
                room,
                seq: meta.seq,
                presence,
            };
            self.reply(sender, frame.to_json(), deadline).await?;
            if let Some(since) = request.since {
                self.catch_up(sender, room, since, meta.seq, now, deadline)
                    .await?;
            }
            tracing::debug!(
                connection_id = sender,
                room,
                new,
                members = meta.members,
                "joined"
            );
            if new
                && presence
                && self
                    .afford_presence(sender, meta.members.saturating_sub(1))
                    .await
            {
                self.presence(room, PresenceEvent::Joined, &member, now, Some(deadline))
                    .await;
            }
            Ok(())
        })
        .await
    }

    /// The `history` frame of a `join` with `since`: the messages after `since` (the newest
    /// [`CATCH_UP_LIMIT`], `next` pointing at the rest), none if `since` is the room's latest.
    async fn catch_up(
        &self,
        sender: &str,
        room: &str,
        since: u64,
        latest: u64,
        now: DateTime<Utc>,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let (missed, more) = if since >= latest {
            (Vec::new(), false)
        } else {
            // only what was missed is read: the newest of the messages after `since`
            let page = self
                .rooms
                .history(
                    room,
                    SeqRange::after(since),
                    CATCH_UP_LIMIT,
                    now.timestamp(),
                )
                .await?;
            (page.messages, page.more)
        };
        let (frame, sent) = history_frame(room, &missed, more);
        self.report(Summary::History {
            room: room.to_owned(),
            messages: sent,
            catch_up: true,
        });
        self.reply(sender, frame, deadline).await
    }

    /// `leave`: the sender is a member no more; the room's other members are told (in a room
    /// within the presence limit).
    pub async fn leave<'s>(
        &self,
        sender: impl Into<Sender<'s>>,
        body: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let sender = sender.into().connection_id;
        let Some(request) = self
            .parsed(sender, LeaveRequest::parse(body), deadline)
            .await?
        else {
            return Ok(());
        };
        let room = request.room.as_str();
        self.or_tell_internal(sender, deadline, async {
            let Some(departed) = self.rooms.leave(room, sender).await? else {
                return self.tell(sender, text::not_a_member(room), deadline).await;
            };
            let frame = ServerMessage::Left { room }.to_json();
            self.reply(sender, frame, deadline).await?;
            tracing::debug!(connection_id = sender, room, "left");
            // the room as it was, with the sender in it
            if self.has_presence(departed.room.members + 1)
                && self.afford_presence(sender, departed.room.members).await
            {
                let now = self.clock.now();
                self.presence(
                    room,
                    PresenceEvent::Left,
                    &departed.member,
                    now,
                    Some(deadline),
                )
                .await;
            }
            Ok(())
        })
        .await
    }

    /// `history`: a page of the room's messages, for a member.
    pub async fn history<'s>(
        &self,
        sender: impl Into<Sender<'s>>,
        body: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let sender = sender.into().connection_id;
        let Some(request) = self
            .parsed(sender, HistoryRequest::parse(body), deadline)
            .await?
        else {
            return Ok(());
        };
        let room = request.room.as_str();
        self.or_tell_internal(sender, deadline, async {
            let now = self.clock.now().timestamp();
            if self.rooms.member(room, sender, now).await?.is_none() {
                return self.tell(sender, text::not_a_member(room), deadline).await;
            }
            let page = self
                .rooms
                .history(room, SeqRange::before(request.before), request.limit, now)
                .await?;
            let (frame, sent) = history_frame(room, &page.messages, page.more);
            self.report(Summary::History {
                room: room.to_owned(),
                messages: sent,
                catch_up: false,
            });
            self.reply(sender, frame, deadline).await
        })
        .await
    }

    /// A `broadcast` to a room: numbered by the room's counter and kept in its history, then
    /// delivered to every live member, the sender included; by this function for a room of at
    /// most `shard_size` members (or without a shard queue), else as one job per membership
    /// shard for the workers.
    pub(super) async fn room_broadcast(
        &self,
        caller: Sender<'_>,
        room: &str,
        message: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let sender = caller.connection_id;
        // a member, and (with a delivery budget) the room's size, charged before it is said
        let checked = self
            .or_tell_internal(sender, deadline, async {
                let live_at = self.clock.now().timestamp();
                let member = self.rooms.member(room, sender, live_at);
                if self.settings.limits.deliveries.is_none() {
                    return Ok(member.await?.map(|member| (member, None)));
                }
                let (member, meta) = futures_util::try_join!(member, self.rooms.meta(room))?;
                Ok(member.map(|member| (member, Some(meta.members))))
            })
            .await?;
        let Some((member, audience)) = checked else {
            return self.tell(sender, text::not_a_member(room), deadline).await;
        };
        if let Some(audience) = audience
            && self.afford(sender, audience.max(1), deadline).await? == Admitted::No
        {
            return Ok(());
        }
        let Appended {
            message,
            room: meta,
        } = self
            .or_tell_internal(sender, deadline, async {
                let now = self.clock.now();
                // the token's names if signed in (no read), else the member's as it joined
                let (user, name) = match caller.identity {
                    Some(identity) => (Some(identity.user.clone()), Some(identity.name.clone())),
                    None => (member.user, member.name),
                };
                let said = RoomMessage {
                    room: room.to_owned(),
                    seq: 0,
                    from: sender.to_owned(),
                    user,
                    name,
                    message: message.to_owned(),
                    sent_at: rfc3339(now),
                };
                let expires_at =
                    now.timestamp() + i64::from(self.settings.history_days) * DAY_SECONDS;
                Ok(self.rooms.append(said, expires_at).await?)
            })
            .await?;
        let frame = ServerMessage::RoomBroadcast(&message).to_json();
        if let Some(queue) = &self.shards
            && meta.members > u64::from(self.settings.shard_size)
        {
            return self
                .shard_out(
                    queue.as_ref(),
                    sender,
                    frame,
                    Some(room),
                    meta.members,
                    deadline,
                )
                .await;
        }
        let sweep = Sweep {
            room: Some(room.to_owned()),
            ..Sweep::whole(None)
        };
        self.deliver_inline(sender, Some(room), frame, sweep, deadline)
            .await
    }

    /// `list` with a room: its live members. Anyone may ask, as anyone may join (rooms are
    /// public; `list` without a room lists everyone).
    pub(super) async fn room_list(
        &self,
        sender: &str,
        room: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        let cut_off = self.work_cut_off(deadline);
        self.or_tell_internal(sender, deadline, async {
            let now = self.clock.now().timestamp();
            let entries = self
                .room_members(room, now)
                .map_ok(|member| ConnectionEntry {
                    connected_at: rfc3339(member.connected_at.time()),
                    connection_id: member.connection_id,
                    user: member.user,
                    name: member.name,
                });
            let packer = ConnectionsPacker::for_room(MAX_FRAME_BYTES, room);
            self.send_list(sender, entries, packer, cut_off).await
        })
        .await
    }

    /// Leaves every room in `rooms` for a connection that ended (`$disconnect`, a prune, a
    /// cleanup), telling each small room's other members. A room that cannot be left is logged:
    /// its membership expires with the connection, and a delivery to it prunes it.
    pub(crate) async fn leave_rooms(
        &self,
        connection_id: &str,
        rooms: &[String],
        now: DateTime<Utc>,
        deadline: Option<Deadline>,
    ) {
        let leaving = rooms.iter().map(|room| async move {
            match self.rooms.drop_member(room, connection_id).await {
                Ok(Some(departed)) if self.has_presence(departed.room.members + 1) => {
                    self.presence(room, PresenceEvent::Left, &departed.member, now, deadline)
                        .await;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    connection_id,
                    room,
                    %error,
                    "could not leave a room; the membership expires with the connection"
                ),
            }
        });
        join_all(leaving).await;
    }

    /// Whether a room of `members` sends presence frames.
    fn has_presence(&self, members: u64) -> bool {
        members <= self.settings.presence_limit
    }

    /// Tells the room's other live members that `member` joined or left. Best effort: a member
    /// that is gone (410) is left for the room's next delivery to prune, and a failure is counted.
    async fn presence(
        &self,
        room: &str,
        event: PresenceEvent,
        member: &Member,
        now: DateTime<Utc>,
        deadline: Option<Deadline>,
    ) {
        let frame = Bytes::from(
            ServerMessage::Presence {
                room,
                event,
                connection_id: &member.connection_id,
                user: member.user.as_deref(),
                name: member.name.as_deref(),
            }
            .to_json(),
        );
        let subject = member.connection_id.as_str();
        let others = self
            .room_members(room, now.timestamp())
            .try_filter(|other| std::future::ready(other.connection_id != subject));
        let stop = deadline.and_then(|deadline| self.stop_starting(deadline));
        let cut_off = deadline.and_then(|deadline| self.work_cut_off(deadline));
        let (mut delivered, mut failed) = (0usize, 0usize);
        let frame = &frame;
        let ended = self
            .concurrently(
                others,
                stop,
                None,
                |other| async move { self.post_to(&other.connection_id, frame, cut_off).await },
                |posted| match posted {
                    Ok(Outcome::Done(())) => delivered += 1,
                    Ok(Outcome::Gone) => {}
                    Err(_) => failed += 1,
                },
            )
            .await;
        if let Ended::Failed(error) = ended {
            tracing::warn!(room, %error, "presence: the room's members could not be read");
        }
        self.report(Summary::Presence {
            room: room.to_owned(),
            delivered,
            failed,
        });
    }

    /// The live members of `room`: its membership shards read at once, each page after page.
    pub(crate) fn room_members(
        &self,
        room: &str,
        live_at: i64,
    ) -> BoxStream<'_, Result<Member, StoreError>> {
        let shards = (0..MEMBERSHIP_SHARDS)
            .map(|shard| self.membership_shard(room.to_owned(), shard, None, live_at));
        stream::select_all(shards).boxed()
    }

    /// The live members of one membership shard of `room`, after `resume`.
    pub(crate) fn membership_shard(
        &self,
        room: String,
        shard: u32,
        resume: Option<String>,
        live_at: i64,
    ) -> BoxStream<'_, Result<Member, StoreError>> {
        paginate(move |cursor| {
            let room = room.clone();
            let cursor = cursor.or_else(|| resume.clone());
            async move { self.rooms.members(&room, shard, cursor, live_at).await }
        })
        .boxed()
    }
}
