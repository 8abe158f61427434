//! Rooms on DynamoDB. One table, `pk` and `sk`
//! both strings, TTL on `expiresAt`:
//!
//! | item | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | a member | `member#<room>#<shard>` | connection id | `connectedAt`, `expiresAt`, `userId`, `name` |
//! | a room | `room#<room>` | `#meta` | `seq` (the counter), `members` (the count) |
//! | a message | `history#<room>` | the `seq`, 20 digits | the frame's fields, `expiresAt` |
//!
//! A room's members are spread over [`MEMBERSHIP_SHARDS`] partition keys, so a large room is
//! never one hot partition, and each shard is read with a Query, never a filtered Scan. Each
//! connection's rooms are a string set `rooms` on its record in the connections table, so a
//! disconnect leaves them all without a scan, and the 20-room limit is the condition of the one
//! update that adds a room.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::adapters::dynamodb::attributes::{CONNECTED_AT, CONNECTION_ID, EXPIRES_AT, NAME, USER};
use crate::adapters::dynamodb::{condition_failed, store_error};
use crate::ports::{
    Appended, ConnectedAt, Departed, HistoryPage, Joined, MEMBERSHIP_SHARDS, Member, Page,
    RoomMeta, RoomStore, SeqRange, StoreError, membership_shard,
};
use crate::protocol::RoomMessage;
use crate::telemetry::{aws_span, call};

/// The rooms table's attribute names.
pub mod attributes {
    /// The partition key (a string).
    pub const PK: &str = "pk";
    /// The sort key (a string).
    pub const SK: &str = "sk";
    /// A room's message counter (a number), on its `#meta` item.
    pub const SEQ: &str = "seq";
    /// A room's member count (a number), on its `#meta` item.
    pub const MEMBERS: &str = "members";
    /// A connection's rooms (a string set), on its record in the connections table.
    pub const ROOMS: &str = "rooms";
}
use attributes::{MEMBERS, PK, ROOMS, SEQ, SK};

const META: &str = "#meta";

pub(crate) type Item = HashMap<String, AttributeValue>;

fn member_pk(room: &str, shard: u32) -> String {
    format!("member#{room}#{shard:02}")
}

fn room_pk(room: &str) -> String {
    format!("room#{room}")
}

fn history_pk(room: &str) -> String {
    format!("history#{room}")
}

/// A `seq` as a sort key: 20 digits, so that text order is number order.
fn seq_sk(seq: u64) -> String {
    format!("{seq:020}")
}

pub(crate) fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

pub(crate) fn n(number: impl ToString) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

pub(crate) fn number(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// The rooms store: the rooms table, and the connections table's `rooms` sets.
#[derive(Clone, Debug)]
pub struct DynamoRoomStore {
    client: Client,
    rooms_table: String,
    connections_table: String,
    page_size: Option<i32>,
}

impl DynamoRoomStore {
    pub fn new(
        client: Client,
        rooms_table: impl Into<String>,
        connections_table: impl Into<String>,
        page_size: Option<i32>,
    ) -> Self {
        DynamoRoomStore {
            client,
            rooms_table: rooms_table.into(),
            connections_table: connections_table.into(),
            page_size,
        }
    }

    /// Deletes the member item (the member it was, from the item as it was: no read before),
    /// takes one from the count, and with `forget_in_record` takes the room out of the
    /// connection's rooms.
    async fn remove(
        &self,
        room: &str,
        connection_id: &str,
        forget_in_record: bool,
    ) -> Result<Option<Departed>, StoreError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.rooms_table)
            .key(PK, s(member_pk(room, membership_shard(connection_id))))
            .key(SK, s(connection_id))
            .return_values(ReturnValue::AllOld)
            .send();
        let removed = call(aws_span("DynamoDB", "DeleteItem"), delete)
            .await
            .map_err(store_error)?
            .attributes
            .as_ref()
            .and_then(member_of);
        // the record may be gone already (a disconnect): then there is nothing to update
        if forget_in_record {
            let forget = self
                .client
                .update_item()
                .table_name(&self.connections_table)
                .key(CONNECTION_ID, s(connection_id))
                .update_expression("DELETE #rooms :rooms")
                .condition_expression("attribute_exists(#id)")
                .expression_attribute_names("#rooms", ROOMS)
                .expression_attribute_names("#id", CONNECTION_ID)
                .expression_attribute_values(":rooms", AttributeValue::Ss(vec![room.to_owned()]))
                .send();
            match call(aws_span("DynamoDB", "UpdateItem"), forget).await {
                Ok(_) => {}
                Err(error) if condition_failed(&error) => {}
                Err(error) => return Err(store_error(error)),
            }
        }
        let Some(member) = removed else {
            return Ok(None);
        };
        let room = self.count(room, MEMBERS, -1).await?;
        Ok(Some(Departed { member, room }))
    }

    /// The room's counters (one read of its `#meta` item).
    async fn read_meta(&self, room: &str) -> Result<RoomMeta, StoreError> {
        let get = self
            .client
            .get_item()
            .table_name(&self.rooms_table)
            .key(PK, s(room_pk(room)))
            .key(SK, s(META))
            .consistent_read(true)
            .send();
        let output = call(aws_span("DynamoDB", "GetItem"), get)
            .await
            .map_err(store_error)?;
        Ok(meta_of(output.item()))
    }

    /// Adds `by` to the room's counter `name` (an atomic ADD); the counters after it.
    async fn count(&self, room: &str, name: &str, by: i64) -> Result<RoomMeta, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.rooms_table)
            .key(PK, s(room_pk(room)))
            .key(SK, s(META))
            .update_expression("ADD #n :by")
            .expression_attribute_names("#n", name)
            .expression_attribute_values(":by", n(by))
            // both counters: the item is a few bytes, and the caller wants the other one too
            .return_values(ReturnValue::AllNew)
            .send();
        let output = call(aws_span("DynamoDB", "UpdateItem"), update)
            .await
            .map_err(store_error)?;
        Ok(meta_of(output.attributes()))
    }
}

/// The counters of a `#meta` item: 0 for one missing.
fn meta_of(item: Option<&Item>) -> RoomMeta {
    let counter = |name| {
        item.and_then(|item| number(item, name))
            .unwrap_or_default()
            .max(0) as u64
    };
    RoomMeta {
        seq: counter(SEQ),
        members: counter(MEMBERS),
    }
}

fn member_item(room: &str, member: &Member) -> Item {
    let mut item = HashMap::from([
        (
            PK.to_owned(),
            s(member_pk(room, membership_shard(&member.connection_id))),
        ),
        (SK.to_owned(), s(member.connection_id.clone())),
        (EXPIRES_AT.to_owned(), n(member.expires_at)),
    ]);
    if let Some(connected_at) = member.connected_at.text() {
        item.insert(CONNECTED_AT.to_owned(), s(connected_at));
    }
    if let Some(user) = &member.user {
        item.insert(USER.to_owned(), s(user.clone()));
    }
    if let Some(name) = &member.name {
        item.insert(NAME.to_owned(), s(name.clone()));
    }
    item
}

fn member_of(item: &Item) -> Option<Member> {
    Some(Member {
        connection_id: text(item, SK)?,
        connected_at: ConnectedAt::stored(text(item, CONNECTED_AT)),
        user: text(item, USER),
        name: text(item, NAME),
        expires_at: number(item, EXPIRES_AT)?,
    })
}

fn message_item(message: &RoomMessage, expires_at: i64) -> Item {
    let mut item = HashMap::from([
        (PK.to_owned(), s(history_pk(&message.room))),
        (SK.to_owned(), s(seq_sk(message.seq))),
        (SEQ.to_owned(), n(message.seq)),
        ("from".to_owned(), s(message.from.clone())),
        ("message".to_owned(), s(message.message.clone())),
        ("sentAt".to_owned(), s(message.sent_at.clone())),
        (EXPIRES_AT.to_owned(), n(expires_at)),
    ]);
    if let Some(user) = &message.user {
        item.insert(USER.to_owned(), s(user.clone()));
    }
    if let Some(name) = &message.name {
        item.insert(NAME.to_owned(), s(name.clone()));
    }
    item
}

fn message_of(room: &str, item: &Item) -> Option<RoomMessage> {
    Some(RoomMessage {
        room: room.to_owned(),
        seq: u64::try_from(number(item, SEQ)?).ok()?,
        from: text(item, "from")?,
        user: text(item, USER),
        name: text(item, NAME),
        message: text(item, "message")?,
        sent_at: text(item, "sentAt")?,
    })
}

impl RoomStore for DynamoRoomStore {
    async fn join(
        &self,
        room: &str,
        member: Member,
        max_rooms: usize,
    ) -> Result<Joined, StoreError> {
        // the connection's rooms gain this one, unless it is in `max_rooms` others already
        let add = self
            .client
            .update_item()
            .table_name(&self.connections_table)
            .key(CONNECTION_ID, s(member.connection_id.clone()))
            .update_expression("ADD #rooms :rooms")
            .condition_expression(
                "attribute_exists(#id) AND (attribute_not_exists(#rooms) OR size(#rooms) < :max OR contains(#rooms, :room))",
            )
            .expression_attribute_names("#rooms", ROOMS)
            .expression_attribute_names("#id", CONNECTION_ID)
            .expression_attribute_values(":rooms", AttributeValue::Ss(vec![room.to_owned()]))
            .expression_attribute_values(":room", s(room))
            .expression_attribute_values(":max", n(max_rooms))
            .send();
        match call(aws_span("DynamoDB", "UpdateItem"), add).await {
            Ok(_) => {}
            // which of the two conditions failed: the record, read again (a rare path)
            Err(error) if condition_failed(&error) => {
                let get = self
                    .client
                    .get_item()
                    .table_name(&self.connections_table)
                    .key(CONNECTION_ID, s(member.connection_id.clone()))
                    .projection_expression("#id")
                    .expression_attribute_names("#id", CONNECTION_ID)
                    .consistent_read(true)
                    .send();
                let record = call(aws_span("DynamoDB", "GetItem"), get)
                    .await
                    .map_err(store_error)?;
                return Ok(match record.item {
                    Some(_) => Joined::TooManyRooms,
                    None => Joined::NoConnection,
                });
            }
            Err(error) => return Err(store_error(error)),
        }
        // new if no member item was there: a join retried after a failure below counts once
        let put = self
            .client
            .put_item()
            .table_name(&self.rooms_table)
            .set_item(Some(member_item(room, &member)))
            .return_values(ReturnValue::AllOld)
            .send();
        let new = call(aws_span("DynamoDB", "PutItem"), put)
            .await
            .map_err(store_error)?
            .attributes
            .is_none_or(|item| item.is_empty());
        let room = if new {
            self.count(room, MEMBERS, 1).await?
        } else {
            self.read_meta(room).await?
        };
        Ok(Joined::Member { new, room })
    }

    async fn leave(&self, room: &str, connection_id: &str) -> Result<Option<Departed>, StoreError> {
        self.remove(room, connection_id, true).await
    }

    async fn drop_member(
        &self,
        room: &str,
        connection_id: &str,
    ) -> Result<Option<Departed>, StoreError> {
        self.remove(room, connection_id, false).await
    }

    async fn rooms_of(&self, connection_id: &str) -> Result<Vec<String>, StoreError> {
        let get = self
            .client
            .get_item()
            .table_name(&self.connections_table)
            .key(CONNECTION_ID, s(connection_id))
            .projection_expression("#rooms")
            .expression_attribute_names("#rooms", ROOMS)
            .consistent_read(true)
            .send();
        let output = call(aws_span("DynamoDB", "GetItem"), get)
            .await
            .map_err(store_error)?;
        let mut rooms = output
            .item()
            .and_then(|item| item.get(ROOMS))
            .and_then(|rooms| rooms.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        rooms.sort();
        Ok(rooms)
    }

    async fn member(
        &self,
        room: &str,
        connection_id: &str,
        live_at: i64,
    ) -> Result<Option<Member>, StoreError> {
        let get = self
            .client
            .get_item()
            .table_name(&self.rooms_table)
            .key(PK, s(member_pk(room, membership_shard(connection_id))))
            .key(SK, s(connection_id))
            .consistent_read(true)
            .send();
        let output = call(aws_span("DynamoDB", "GetItem"), get)
            .await
            .map_err(store_error)?;
        Ok(output
            .item()
            .and_then(member_of)
            .filter(|member| live_at < member.expires_at))
    }

    async fn members(
        &self,
        room: &str,
        shard: u32,
        cursor: Option<String>,
        live_at: i64,
    ) -> Result<Page<Member>, StoreError> {
        let pk = member_pk(room, shard.min(MEMBERSHIP_SHARDS - 1));
        let start = cursor
            .map(|id| HashMap::from([(PK.to_owned(), s(pk.clone())), (SK.to_owned(), s(id))]));
        let query = self
            .client
            .query()
            .table_name(&self.rooms_table)
            .key_condition_expression("#pk = :pk")
            .filter_expression("#expires > :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":now", n(live_at))
            // strongly consistent: a member who joined a moment ago is read (see `history`)
            .consistent_read(true)
            .set_limit(self.page_size)
            .set_exclusive_start_key(start)
            .send();
        let output = call(aws_span("DynamoDB", "Query"), query)
            .await
            .map_err(store_error)?;
        let next = output.last_evaluated_key().and_then(|key| text(key, SK));
        let items = output
            .items()
            .iter()
            .filter_map(member_of)
            .filter(|member| live_at < member.expires_at)
            .collect();
        Ok(Page { items, next })
    }

    async fn meta(&self, room: &str) -> Result<RoomMeta, StoreError> {
        self.read_meta(room).await
    }

    async fn append(
        &self,
        mut message: RoomMessage,
        expires_at: i64,
    ) -> Result<Appended, StoreError> {
        let room = self.count(&message.room, SEQ, 1).await?;
        message.seq = room.seq;
        let put = self
            .client
            .put_item()
            .table_name(&self.rooms_table)
            .set_item(Some(message_item(&message, expires_at)))
            .send();
        call(aws_span("DynamoDB", "PutItem"), put)
            .await
            .map_err(store_error)?;
        Ok(Appended { message, room })
    }

    async fn history(
        &self,
        room: &str,
        range: SeqRange,
        limit: u32,
        live_at: i64,
    ) -> Result<HistoryPage, StoreError> {
        let Some((first, last)) = range.bounds() else {
            return Ok(HistoryPage::default());
        };
        let wanted = limit as usize + 1; // one more says whether older ones remain
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.rooms_table)
                // 20 digits: text order is number order, so the range is the seqs'
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :first AND :last")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":first", s(seq_sk(first)))
                .expression_attribute_values(":last", s(seq_sk(last)))
                .expression_attribute_names("#expires", EXPIRES_AT)
                .expression_attribute_values(":pk", s(history_pk(room)))
                .expression_attribute_values(":now", n(live_at))
                .filter_expression("#expires > :now")
                // Strongly consistent, as the members' Query: a message numbered before a join's
                // counter read is either read here (its catch-up) or delivered live (the member
                // was written before its fan-out read the members), never neither.
                .consistent_read(true)
                .scan_index_forward(false)
                .limit((wanted - found.len()) as i32)
                .set_exclusive_start_key(start.take());
            let output = call(aws_span("DynamoDB", "Query"), query.send())
                .await
                .map_err(store_error)?;
            found.extend(
                output
                    .items()
                    .iter()
                    .filter_map(|item| message_of(room, item)),
            );
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() && found.len() < wanted => start = Some(key),
                _ => break,
            }
        }
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        found.reverse();
        Ok(HistoryPage {
            messages: found,
            more,
        })
    }
}
