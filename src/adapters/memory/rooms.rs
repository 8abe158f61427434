//! Rooms in memory, keyed as the DynamoDB store keys them: members under `(room, shard)`, each
//! connection's rooms, a counter per room, messages under `(room, seq)` with their expiry.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::lock;
use crate::ports::{
    Appended, Departed, HistoryPage, Joined, Member, Page, RoomMeta, RoomStore, SeqRange,
    StoreError, membership_shard,
};
use crate::protocol::RoomMessage;

#[derive(Debug, Default)]
struct Rooms {
    /// `(room, shard)` → members by connection id.
    members: BTreeMap<(String, u32), BTreeMap<String, Member>>,
    /// connection id → its rooms.
    rooms_of: HashMap<String, Vec<String>>,
    /// room → members counted by joins and leaves.
    counts: HashMap<String, u64>,
    /// room → its latest `seq`.
    seqs: HashMap<String, u64>,
    /// `(room, seq)` → the message and its expiry.
    messages: BTreeMap<(String, u64), (RoomMessage, i64)>,
}

impl Rooms {
    fn meta(&self, room: &str) -> RoomMeta {
        RoomMeta {
            seq: self.seqs.get(room).copied().unwrap_or_default(),
            members: self.counts.get(room).copied().unwrap_or_default(),
        }
    }
}

/// Rooms in memory, paginated like DynamoDB Queries (`page_size` members a page).
#[derive(Debug)]
pub struct MemoryRoomStore {
    rooms: Mutex<Rooms>,
    page_size: usize,
}

impl Default for MemoryRoomStore {
    fn default() -> Self {
        MemoryRoomStore::new(1000)
    }
}

impl MemoryRoomStore {
    pub fn new(page_size: usize) -> Self {
        MemoryRoomStore {
            rooms: Mutex::new(Rooms::default()),
            page_size: page_size.max(1),
        }
    }

    /// Takes the connection out of `room` and the room out of its rooms.
    fn remove(&self, room: &str, connection_id: &str) -> Result<Option<Departed>, StoreError> {
        let mut rooms = lock(&self.rooms);
        let shard = membership_shard(connection_id);
        let removed = rooms
            .members
            .get_mut(&(room.to_owned(), shard))
            .and_then(|members| members.remove(connection_id));
        if let Some(theirs) = rooms.rooms_of.get_mut(connection_id) {
            theirs.retain(|r| r != room);
            if theirs.is_empty() {
                rooms.rooms_of.remove(connection_id);
            }
        }
        let Some(member) = removed else {
            return Ok(None);
        };
        if let Some(count) = rooms.counts.get_mut(room) {
            *count = count.saturating_sub(1);
        }
        Ok(Some(Departed {
            member,
            room: rooms.meta(room),
        }))
    }
}

impl RoomStore for MemoryRoomStore {
    async fn join(
        &self,
        room: &str,
        member: Member,
        max_rooms: usize,
    ) -> Result<Joined, StoreError> {
        let mut rooms = lock(&self.rooms);
        let theirs = rooms
            .rooms_of
            .entry(member.connection_id.clone())
            .or_default();
        let new = !theirs.iter().any(|r| r == room);
        if new && theirs.len() >= max_rooms {
            return Ok(Joined::TooManyRooms);
        }
        if new {
            theirs.push(room.to_owned());
            *rooms.counts.entry(room.to_owned()).or_default() += 1;
        }
        let shard = membership_shard(&member.connection_id);
        rooms
            .members
            .entry((room.to_owned(), shard))
            .or_default()
            .insert(member.connection_id.clone(), member);
        Ok(Joined::Member {
            new,
            room: rooms.meta(room),
        })
    }

    async fn leave(&self, room: &str, connection_id: &str) -> Result<Option<Departed>, StoreError> {
        self.remove(room, connection_id)
    }

    async fn drop_member(
        &self,
        room: &str,
        connection_id: &str,
    ) -> Result<Option<Departed>, StoreError> {
        self.remove(room, connection_id)
    }

    async fn rooms_of(&self, connection_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(lock(&self.rooms)
            .rooms_of
            .get(connection_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn member(
        &self,
        room: &str,
        connection_id: &str,
        live_at: i64,
    ) -> Result<Option<Member>, StoreError> {
        let shard = membership_shard(connection_id);
        Ok(lock(&self.rooms)
            .members
            .get(&(room.to_owned(), shard))
            .and_then(|members| members.get(connection_id))
            .filter(|member| live_at < member.expires_at)
            .cloned())
    }

    async fn members(
        &self,
        room: &str,
        shard: u32,
        cursor: Option<String>,
        live_at: i64,
    ) -> Result<Page<Member>, StoreError> {
        let rooms = lock(&self.rooms);
        let Some(members) = rooms.members.get(&(room.to_owned(), shard)) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let after = |id: &String| cursor.as_ref().is_none_or(|cursor| id > cursor);
        // a page examines `page_size` members, and returns the live ones (a Query's Limit
        // counts items before its filter)
        let examined: Vec<&Member> = members
            .iter()
            .filter(|(id, _)| after(id))
            .take(self.page_size)
            .map(|(_, member)| member)
            .collect();
        let more = members.keys().filter(|id| after(id)).count() > examined.len();
        let next = more
            .then(|| examined.last().map(|m| m.connection_id.clone()))
            .flatten();
        Ok(Page {
            items: examined
                .into_iter()
                .filter(|member| live_at < member.expires_at)
                .cloned()
                .collect(),
            next,
        })
    }

    async fn meta(&self, room: &str) -> Result<RoomMeta, StoreError> {
        Ok(lock(&self.rooms).meta(room))
    }

    async fn append(
        &self,
        mut message: RoomMessage,
        expires_at: i64,
    ) -> Result<Appended, StoreError> {
        let mut rooms = lock(&self.rooms);
        let seq = rooms.seqs.entry(message.room.clone()).or_default();
        *seq += 1;
        message.seq = *seq;
        rooms.messages.insert(
            (message.room.clone(), message.seq),
            (message.clone(), expires_at),
        );
        let room = rooms.meta(&message.room);
        Ok(Appended { message, room })
    }

    async fn history(
        &self,
        room: &str,
        range: SeqRange,
        limit: u32,
        live_at: i64,
    ) -> Result<HistoryPage, StoreError> {
        let rooms = lock(&self.rooms);
        let Some((first, last)) = range.bounds() else {
            return Ok(HistoryPage::default());
        };
        let range = (room.to_owned(), first)..=(room.to_owned(), last);
        // newest first, as a Query with ScanIndexForward=false reads them
        let mut live = rooms
            .messages
            .range(range)
            .rev()
            .filter(|(_, (_, expires_at))| live_at < *expires_at)
            .map(|(_, (message, _))| message.clone());
        let mut messages: Vec<RoomMessage> = live.by_ref().take(limit as usize).collect();
        let more = live.next().is_some();
        messages.reverse();
        Ok(HistoryPage { messages, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{ConnectedAt, MEMBERSHIP_SHARDS};

    fn member(id: &str) -> Member {
        Member {
            connection_id: id.into(),
            connected_at: ConnectedAt::stored(Some("2026-12-06T08:00:00.000Z".into())),
            user: None,
            name: Some(format!("n-{id}")),
            expires_at: 10_000,
        }
    }

    fn said(room: &str, text: &str) -> RoomMessage {
        RoomMessage {
            room: room.into(),
            seq: 0,
            from: "a=".into(),
            user: None,
            name: None,
            message: text.into(),
            sent_at: "2026-12-06T08:00:00.000Z".into(),
        }
    }

    #[tokio::test]
    async fn joining_again_is_harmless_and_a_connection_has_at_most_its_rooms() {
        let store = MemoryRoomStore::default();
        assert_eq!(
            store.join("r", member("a="), 2).await.unwrap(),
            Joined::Member {
                new: true,
                room: RoomMeta { seq: 0, members: 1 }
            }
        );
        assert_eq!(
            store.join("r", member("a="), 2).await.unwrap(),
            Joined::Member {
                new: false,
                room: RoomMeta { seq: 0, members: 1 }
            }
        );
        store.join("s", member("a="), 2).await.unwrap();
        assert_eq!(
            store.join("t", member("a="), 2).await.unwrap(),
            Joined::TooManyRooms
        );
        assert_eq!(store.rooms_of("a=").await.unwrap(), ["r", "s"]);
        assert_eq!(
            store.member("r", "a=", 0).await.unwrap(),
            Some(member("a="))
        );
        assert_eq!(store.member("t", "a=", 0).await.unwrap(), None);
        assert_eq!(
            store.member("r", "a=", 10_000).await.unwrap(),
            None,
            "expired"
        );
        assert_eq!(
            store.leave("r", "a=").await.unwrap(),
            Some(Departed {
                member: member("a="),
                room: RoomMeta::default()
            })
        );
        assert_eq!(
            store.leave("r", "a=").await.unwrap(),
            None,
            "not a member any more"
        );
        assert_eq!(store.meta("r").await.unwrap().members, 0);
        assert_eq!(store.rooms_of("a=").await.unwrap(), ["s"]);
    }

    #[tokio::test]
    async fn members_are_read_shard_by_shard_page_by_page_each_once() {
        let store = MemoryRoomStore::new(3);
        for i in 0..100 {
            store
                .join("big", member(&format!("c{i:03}=")), 20)
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        for shard in 0..MEMBERSHIP_SHARDS {
            let mut cursor = None;
            loop {
                let page = store.members("big", shard, cursor, 0).await.unwrap();
                assert!(page.items.len() <= 3);
                for member in &page.items {
                    assert_eq!(membership_shard(&member.connection_id), shard);
                }
                seen.extend(page.items.into_iter().map(|m| m.connection_id));
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        seen.sort();
        assert_eq!(seen.len(), 100);
        seen.dedup();
        assert_eq!(seen.len(), 100, "each member once");
        assert_eq!(store.meta("big").await.unwrap().members, 100);
    }

    #[tokio::test]
    async fn messages_are_numbered_in_order_and_read_back_a_page_at_a_time_oldest_first() {
        let store = MemoryRoomStore::default();
        assert_eq!(store.meta("r").await.unwrap().seq, 0);
        for i in 1..=7 {
            let kept = store
                .append(said("r", &format!("m{i}")), 5_000)
                .await
                .unwrap();
            assert_eq!((kept.message.seq, kept.room.seq), (i, i));
        }
        store
            .append(said("other", "elsewhere"), 5_000)
            .await
            .unwrap();
        assert_eq!(store.meta("r").await.unwrap().seq, 7);
        let newest = store
            .history("r", SeqRange::before(None), 3, 0)
            .await
            .unwrap();
        let seqs = |page: &HistoryPage| page.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&newest), [5, 6, 7]);
        assert!(newest.more);
        let older = store
            .history("r", SeqRange::before(Some(5)), 3, 0)
            .await
            .unwrap();
        assert_eq!(seqs(&older), [2, 3, 4]);
        let oldest = store
            .history("r", SeqRange::before(Some(2)), 3, 0)
            .await
            .unwrap();
        assert_eq!(seqs(&oldest), [1]);
        assert!(!oldest.more);
        // after a seq: the newest of those, and whether older ones after it remain
        let missed = store.history("r", SeqRange::after(3), 2, 0).await.unwrap();
        assert_eq!((seqs(&missed), missed.more), (vec![6, 7], true));
        let all_missed = store.history("r", SeqRange::after(3), 10, 0).await.unwrap();
        assert_eq!(
            (seqs(&all_missed), all_missed.more),
            (vec![4, 5, 6, 7], false)
        );
        let between = SeqRange {
            after: Some(2),
            before: Some(5),
        };
        let page = store.history("r", between, 10, 0).await.unwrap();
        assert_eq!(seqs(&page), [3, 4]);
        let empty = SeqRange {
            after: Some(4),
            before: Some(5),
        };
        assert!(
            store
                .history("r", empty, 10, 0)
                .await
                .unwrap()
                .messages
                .is_empty()
        );
        // expired messages are not read
        assert!(
            store
                .history("r", SeqRange::before(None), 100, 5_000)
                .await
                .unwrap()
                .messages
                .is_empty()
        );
    }
}
