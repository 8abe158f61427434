//! Sharded broadcasts: a broadcast larger than one Scan page is split into parallel-scan
//! segments, one job each on the shard queue; a worker delivers a job from its cursor, hands the
//! rest of its segment on when it must stop early, and the sender is told what could not be
//! delivered.

use bytes::Bytes;

use super::deadline::until;
use super::delivery::{Rest, Sweep, Swept};
use super::summary::{Deliveries, ShardDelivery, ShardedBroadcast, Summary};
use super::{Chat, Deadline, RouteError, Settings, text};
use crate::ports::{
    ConnectionApi, ConnectionStore, EventBus, MEMBERSHIP_SHARDS, QueueError, RoomStore, Segment,
    ShardJob, ShardQueue,
};

/// Why a sharded broadcast or a shard job failed: the queue port, or the job itself (the queue
/// retries a failed job, and sets it aside after its retries).
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The shard queue refused the jobs.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Nothing was delivered past the job's own cursor before its deadline: handing the same job
    /// on could loop without end.
    #[error("the shard made no progress before its deadline")]
    NoProgress,
    /// The segment goes on, but this `Chat` has no queue to hand the rest to.
    #[error("no shard queue to continue the segment")]
    NoQueue,
}

/// What one shard job did: its deliveries, and what is left of its segment if it stopped before
/// the end (handed on as the next job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardReport {
    pub deliveries: Deliveries,
    pub rest: Rest,
}

impl<S: ConnectionStore, A: ConnectionApi, B: EventBus, R: RoomStore> Chat<S, A, B, R> {
    /// A broadcast larger than one Scan page: one job per scan segment, as many segments as the
    /// table's estimated size needs ([`segments_for`]; the caller read the `estimate`, to
    /// charge the sender's delivery budget), for the workers. A room's (`estimate`: its member
    /// count): one job per membership shard. If the jobs cannot be queued the sender is
    /// told `internal` (some segments may have been queued: a retry can deliver twice to those).
    pub(super) async fn shard_out(
        &self,
        queue: &dyn ShardQueue,
        sender: &str,
        frame: String,
        room: Option<&str>,
        estimate: u64,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        self.or_tell_internal(sender, deadline, async {
            let segments = match room {
                Some(_) => MEMBERSHIP_SHARDS,
                None => segments_for(estimate, &self.settings),
            };
            let room = room.map(str::to_owned);
            let broadcast = format!("{:016x}", fastrand::u64(..));
            let frame: std::sync::Arc<str> = frame.into();
            let jobs = (0..segments)
                .map(|index| ShardJob {
                    broadcast: broadcast.clone(),
                    room: room.clone(),
                    sender: sender.to_owned(),
                    frame: frame.clone(),
                    segment: Segment {
                        index,
                        total: segments,
                    },
                    cursor: None,
                    part: 0,
                })
                .collect();
            queue.enqueue(jobs).await?;
            self.report(Summary::Sharded(ShardedBroadcast {
                sender: sender.to_owned(),
                room,
                broadcast,
                segments,
                estimate,
            }));
            Ok(())
        })
        .await
    }

    /// A worker's job: deliver one shard of a broadcast. A job that stops early (its post limit,
    /// the deadline, or a Scan that failed after its retries) hands the rest of its segment on as
    /// the next job, which reads it again from there. A job that delivered nothing past its own
    /// cursor, or whose continuation cannot be queued, fails: the queue retries it from its
    /// cursor (what it delivered may be delivered twice) and sets it aside after its retries
    /// ([`Chat::shard_abandoned`] tells the sender then). If some connection could not be
    /// reached, the sender is told `delivery_incomplete`.
    ///
    /// The report (and the summary line, hence the metrics) counts what this job settled: the
    /// connections it handed on (not attempted, or cut off in flight) are the continuation's.
    pub async fn shard(
        &self,
        job: ShardJob,
        deadline: Deadline,
    ) -> Result<ShardReport, RouteError> {
        let sweep = Sweep {
            room: job.room.clone(),
            segment: job.segment,
            cursor: job.cursor.clone(),
            first: None,
            limit: Some(self.settings.shard_posts.max(1)),
        };
        let data = Bytes::copy_from_slice(job.frame.as_bytes());
        let Swept {
            mut summary,
            cut_off,
            took,
            error,
            rest,
        } = self.deliver(data, sweep, deadline).await;
        let progressed = match &rest {
            Rest::Nothing => true,
            Rest::After { cursor } => *cursor != job.cursor,
        };
        let handed_on = match &rest {
            Rest::After { .. } if progressed => {
                let handed_on = summary.not_attempted + cut_off;
                summary.failed -= cut_off;
                summary.not_attempted = 0;
                handed_on
            }
            _ => 0,
        };
        self.report(Summary::Shard(ShardDelivery {
            sender: job.sender.clone(),
            broadcast: job.broadcast.clone(),
            segment: job.segment,
            part: job.part,
            deliveries: summary,
            took,
            continued: rest != Rest::Nothing,
            handed_on,
            error: error.as_ref().map(ToString::to_string),
        }));
        match (&rest, error) {
            // Nothing finished past the job's own cursor (a Scan that failed at once, or the
            // first post still in flight at the deadline): handing the same job on could loop
            // without end, so fail it and let the queue's retries and dead-letter queue bound it.
            (Rest::After { .. }, error) if !progressed => {
                return Err(error.map_or(ShardError::NoProgress.into(), RouteError::from));
            }
            (Rest::Nothing, Some(error)) => return Err(error.into()),
            (Rest::After { .. }, Some(error)) => tracing::warn!(
                connection_id = job.sender,
                broadcast = job.broadcast,
                %error,
                "the segment's Scan failed; its continuation reads it again from where delivery stopped"
            ),
            (_, None) => {}
        }
        if let Rest::After { cursor } = &rest {
            let queue = self.shards.as_ref().ok_or(ShardError::NoQueue)?;
            let next = ShardJob {
                cursor: cursor.clone(),
                part: job.part + 1,
                ..job.clone()
            };
            until(self.cut_off(deadline), queue.enqueue(vec![next])).await??;
        }
        // The connections handed on are the continuation's: only the others that failed are
        // missed.
        if summary.failed > 0 {
            let missed = Deliveries {
                not_attempted: 0,
                complete: true,
                ..summary
            };
            let told = text::delivery_incomplete(&missed, false);
            if let Err(error) = self.reply(&job.sender, told, deadline).await {
                tracing::warn!(connection_id = job.sender, %error, "could not tell the sender");
            }
        }
        Ok(ShardReport {
            deliveries: summary,
            rest,
        })
    }

    /// A shard job that failed its last attempt (`attempts`: the queue sets it aside in its
    /// dead-letter queue now): its sender is told `delivery_incomplete`, as the sender of an
    /// inline broadcast that could not be read to its end would be.
    pub async fn shard_abandoned(&self, job: &ShardJob, attempts: u32, deadline: Deadline) {
        let told = text::shard_abandoned(job, attempts);
        tracing::error!(
            connection_id = job.sender,
            broadcast = job.broadcast,
            segment = job.segment.index,
            part = job.part,
            attempts,
            "shard job abandoned to the dead-letter queue"
        );
        if let Err(error) = self.reply(&job.sender, told, deadline).await {
            tracing::warn!(connection_id = job.sender, %error, "could not tell the sender");
        }
    }
}

/// How many segments a sharded broadcast gets for about `estimate` connections: one per
/// `shard_size`, at least `min_segments` and two (it is sharded because it is larger than a
/// page), at most `max_segments`.
pub(crate) fn segments_for(estimate: u64, settings: &Settings) -> u32 {
    let size = u64::from(settings.shard_size.max(1));
    let wanted = estimate.div_ceil(size).min(u64::from(u32::MAX)) as u32;
    let most = settings.max_segments.max(2);
    wanted.clamp(settings.min_segments.clamp(2, most), most)
}
