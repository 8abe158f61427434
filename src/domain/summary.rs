//! What a broadcast, a shard job and a cleanup did, as one value each. Its log line and its
//! metrics are both written from that value ([`Summary::log`], [`Summary::metrics`]), so a metric
//! cannot drift from the log, and nothing reads log fields back.

use std::time::Duration;

use crate::ports::Segment;

/// What became of the connections a delivery addressed: every connection its scan found is in
/// exactly one of the first five counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deliveries {
    pub delivered: usize,
    /// Answered 410 and were removed from the store.
    pub pruned: usize,
    /// Answered 410 but connected less than [`super::CONNECT_WINDOW`] ago: still connecting, kept.
    pub connecting: usize,
    /// Failed for another reason (throttled past the budget, a 5xx, cut off by the deadline,
    /// a failed prune).
    pub failed: usize,
    /// Found by the scan but not posted to: the deadline came first.
    pub not_attempted: usize,
    /// 429 answers (each retried within the budget, or counted in `failed`).
    pub throttled: usize,
    /// Whether the scan was read to its end. If not (the deadline, or a Scan that failed after
    /// its retries), connections beyond the last page read were not counted at all.
    pub complete: bool,
}

impl Deliveries {
    /// Whether some live connection may have missed the message.
    pub fn is_incomplete(&self) -> bool {
        self.failed > 0 || self.not_attempted > 0 || !self.complete
    }
}

/// A broadcast delivered by the function that received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineBroadcast {
    pub sender: String,
    /// The room it was said in; `None`: to everyone.
    pub room: Option<String>,
    pub deliveries: Deliveries,
    pub took: Duration,
    /// The Scan's error, if one failed after its retries.
    pub error: Option<String>,
}

/// A broadcast split into shard jobs for the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardedBroadcast {
    pub sender: String,
    /// The room it was said in (one job per membership shard); `None`: to everyone.
    pub room: Option<String>,
    pub broadcast: String,
    pub segments: u32,
    /// The table's size estimate the segments were sized for (a room's member count).
    pub estimate: u64,
}

/// One shard job: what it settled. The connections it handed on to its continuation (not
/// attempted, or cut off in flight) are the continuation's to count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardDelivery {
    pub sender: String,
    pub broadcast: String,
    pub segment: Segment,
    pub part: u32,
    pub deliveries: Deliveries,
    pub took: Duration,
    /// Whether the rest of the segment was handed on as a new job.
    pub continued: bool,
    /// Connections handed on to that job.
    pub handed_on: usize,
    /// The Scan's error, if one failed after its retries.
    pub error: Option<String>,
}

/// What a cleanup run found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Records looked at.
    pub checked: usize,
    /// Removed because they were past `expiresAt`.
    pub expired: usize,
    /// Removed because `@connections` said 410 (newcomers still connecting are kept).
    pub gone: usize,
    /// Could not be checked or removed this time; the next run tries again.
    pub failed: usize,
    /// Whether every record was looked at; if not (the deadline came first, or a Scan failed),
    /// the next run goes on.
    pub complete: bool,
}

/// One summary: what the routes report, once each, through [`super::Chat::report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Summary {
    Inline(InlineBroadcast),
    Sharded(ShardedBroadcast),
    Shard(ShardDelivery),
    Cleanup {
        report: CleanupReport,
        took: Duration,
    },
    /// A page of a room's history sent: asked for (`history`), or a catch-up after a `join`.
    History {
        room: String,
        messages: usize,
        catch_up: bool,
    },
    /// Presence frames sent to a room's other members when one joined or left.
    Presence {
        room: String,
        delivered: usize,
        failed: usize,
    },
    /// A limit refused something of a connection's (issue 23).
    Refused {
        connection_id: String,
        refusal: Refusal,
    },
}

/// What a limit refused, and why: each is a metric of its own, so the dashboard shows refusals
/// by reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A frame over its connection's frame budget (`RefusedFrames`).
    Frames,
    /// A frame over its user's frame budget, across their connections (`RefusedUserFrames`).
    UserFrames,
    /// A broadcast to `audience` connections that did not fit what was left of the delivery
    /// budget (`RefusedBroadcasts`, and `RefusedDeliveries` by its audience).
    Deliveries { audience: u64 },
    /// A broadcast larger than the whole delivery budget, or to everyone where that is turned
    /// off (`ForbiddenBroadcasts`).
    Forbidden { audience: u64 },
    /// A connect past the user's connections (`RefusedConnects`).
    Connects,
    /// The connection closed for refusals sustained past its limit (`ClosedConnections`).
    Closed,
}

impl Refusal {
    /// Its name in the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Frames => "frames",
            Refusal::UserFrames => "user_frames",
            Refusal::Deliveries { .. } => "deliveries",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::Connects => "connects",
            Refusal::Closed => "closed",
        }
    }
}

/// A metric's unit, as CloudWatch names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    pub fn as_cloudwatch(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One value of a summary as a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub value: u64,
    pub unit: Unit,
}

const fn count(name: &'static str, value: usize) -> Metric {
    Metric {
        name,
        value: value as u64,
        unit: Unit::Count,
    }
}

fn millis(name: &'static str, took: Duration) -> Metric {
    Metric {
        name,
        value: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        unit: Unit::Milliseconds,
    }
}

fn deliveries(counts: &Deliveries, took: Duration) -> [Metric; 7] {
    [
        count("Delivered", counts.delivered),
        count("Pruned", counts.pruned),
        count("Connecting", counts.connecting),
        count("Failed", counts.failed),
        count("NotAttempted", counts.not_attempted),
        count("Throttled", counts.throttled),
        millis("FanOutDuration", took),
    ]
}

/// The log line of a delivery: its kind, its counts and duration, then the fields and message
/// given.
macro_rules! log_deliveries {
    ($level:ident, $kind:literal, $counts:expr, $took:expr, $($rest:tt)*) => {
        tracing::$level!(
            kind = $kind,
            delivered = $counts.delivered,
            pruned = $counts.pruned,
            connecting = $counts.connecting,
            failed = $counts.failed,
            not_attempted = $counts.not_attempted,
            throttled = $counts.throttled,
            duration_ms = u64::try_from($took.as_millis()).unwrap_or(u64::MAX),
            $($rest)*
        )
    };
}

impl Summary {
    /// What it is, as the log line's and the metrics' `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Summary::Inline(_) => "inline",
            Summary::Sharded(_) => "sharded",
            Summary::Shard(_) => "shard",
            Summary::Cleanup { .. } => "cleanup",
            Summary::History { .. } => "history",
            Summary::Presence { .. } => "presence",
            Summary::Refused { .. } => "refused",
        }
    }

    /// The broadcast it belongs to, if it is a part of a sharded one.
    pub fn broadcast(&self) -> Option<&str> {
        match self {
            Summary::Sharded(sharded) => Some(&sharded.broadcast),
            Summary::Shard(shard) => Some(&shard.broadcast),
            Summary::Inline(_)
            | Summary::Cleanup { .. }
            | Summary::History { .. }
            | Summary::Presence { .. }
            | Summary::Refused { .. } => None,
        }
    }

    /// Its values as metrics: one event count (`Broadcasts` to everyone, `RoomMessages`,
    /// `ShardJobs`, `Cleanups`, `HistoryReads`, `PresenceEvents`), then its counts and duration.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut metrics = Vec::with_capacity(9);
        let said = |room: &Option<String>| match room {
            Some(_) => count("RoomMessages", 1),
            None => count("Broadcasts", 1),
        };
        match self {
            Summary::Inline(inline) => {
                metrics.push(said(&inline.room));
                metrics.extend(deliveries(&inline.deliveries, inline.took));
            }
            Summary::Sharded(sharded) => {
                metrics.push(said(&sharded.room));
                metrics.push(count("ShardedBroadcasts", 1));
            }
            Summary::Shard(shard) => {
                metrics.push(count("ShardJobs", 1));
                metrics.extend(deliveries(&shard.deliveries, shard.took));
            }
            Summary::Cleanup { report, took } => metrics.extend([
                count("Cleanups", 1),
                count("CleanupChecked", report.checked),
                count("CleanupExpired", report.expired),
                count("CleanupGone", report.gone),
                count("CleanupFailed", report.failed),
                millis("CleanupDuration", *took),
            ]),
            Summary::History { messages, .. } => metrics.extend([
                count("HistoryReads", 1),
                count("HistoryMessages", *messages),
            ]),
            Summary::Presence {
                delivered, failed, ..
            } => metrics.extend([
                count("PresenceEvents", 1),
                count("PresenceFrames", *delivered),
                count("PresenceFailed", *failed),
            ]),
            Summary::Refused { refusal, .. } => {
                // every refusal also counts in one total, by function: what the alarm on
                // sustained refusals sums (within CloudWatch's 10 metrics an alarm may read)
                if *refusal != Refusal::Closed {
                    metrics.push(count("Refusals", 1));
                }
                match *refusal {
                    Refusal::Frames => metrics.push(count("RefusedFrames", 1)),
                    Refusal::UserFrames => metrics.push(count("RefusedUserFrames", 1)),
                    Refusal::Deliveries { audience } => metrics.extend([
                        count("RefusedBroadcasts", 1),
                        count(
                            "RefusedDeliveries",
                            usize::try_from(audience).unwrap_or(usize::MAX),
                        ),
                    ]),
                    Refusal::Forbidden { .. } => metrics.push(count("ForbiddenBroadcasts", 1)),
                    Refusal::Connects => metrics.push(count("RefusedConnects", 1)),
                    Refusal::Closed => metrics.push(count("ClosedConnections", 1)),
                }
            }
        }
        metrics
    }

    /// Writes its one log line: at `warn` when someone may have missed a message.
    pub fn log(&self) {
        match self {
            Summary::Inline(inline) => {
                // the same line at either level
                macro_rules! inline {
                    ($level:ident, $message:literal) => {
                        log_deliveries!(
                            $level,
                            "inline",
                            inline.deliveries,
                            inline.took,
                            connection_id = inline.sender,
                            room = inline.room.as_deref(),
                            complete = inline.deliveries.complete,
                            error = inline.error.as_deref(),
                            $message
                        )
                    };
                }
                // a broadcast that reached everyone is a frame that worked: not a line at info
                // (its counts are in the metrics)
                if inline.deliveries.is_incomplete() {
                    inline!(warn, "broadcast incomplete");
                } else {
                    inline!(debug, "broadcast");
                }
            }
            Summary::Sharded(sharded) => tracing::info!(
                kind = "sharded",
                connection_id = sharded.sender,
                room = sharded.room.as_deref(),
                broadcast = sharded.broadcast,
                segments = sharded.segments,
                estimate = sharded.estimate,
                "broadcast sharded"
            ),
            Summary::Shard(shard) => log_deliveries!(
                info,
                "shard",
                shard.deliveries,
                shard.took,
                connection_id = shard.sender,
                broadcast = shard.broadcast,
                segment = shard.segment.index,
                segments = shard.segment.total,
                part = shard.part,
                continued = shard.continued,
                handed_on = shard.handed_on,
                error = shard.error.as_deref(),
                "shard"
            ),
            Summary::Cleanup { report, took } => tracing::info!(
                kind = "cleanup",
                checked = report.checked,
                expired = report.expired,
                gone = report.gone,
                failed = report.failed,
                complete = report.complete,
                duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                "cleanup"
            ),
            Summary::History {
                room,
                messages,
                catch_up,
            } => tracing::debug!(kind = "history", room, messages, catch_up, "history"),
            Summary::Presence {
                room,
                delivered,
                failed,
            } => tracing::debug!(kind = "presence", room, delivered, failed, "presence"),
            Summary::Refused {
                connection_id,
                refusal,
            } => {
                let audience = match refusal {
                    Refusal::Deliveries { audience } | Refusal::Forbidden { audience } => {
                        Some(*audience)
                    }
                    _ => None,
                };
                tracing::info!(
                    kind = "refused",
                    connection_id,
                    reason = refusal.as_str(),
                    audience,
                    "refused"
                )
            }
        }
    }
}

/// A shard job's summary, for the tests of what is written from it.
#[cfg(test)]
pub(crate) fn example_shard() -> Summary {
    Summary::Shard(ShardDelivery {
        sender: "c=".into(),
        broadcast: "b1".into(),
        segment: Segment { index: 1, total: 4 },
        part: 0,
        deliveries: Deliveries {
            delivered: 7,
            pruned: 1,
            failed: 2,
            throttled: 3,
            complete: true,
            ..Deliveries::default()
        },
        took: Duration::from_millis(41),
        continued: false,
        handed_on: 0,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(summary: &Summary) -> Vec<&'static str> {
        summary.metrics().iter().map(|metric| metric.name).collect()
    }

    #[test]
    fn a_shard_job_counts_as_a_job_with_every_delivery_count_and_its_duration() {
        let summary = example_shard();
        assert_eq!(
            names(&summary),
            [
                "ShardJobs",
                "Delivered",
                "Pruned",
                "Connecting",
                "Failed",
                "NotAttempted",
                "Throttled",
                "FanOutDuration"
            ]
        );
        let metrics = summary.metrics();
        let value = |name| metrics.iter().find(|m| m.name == name).unwrap().value;
        assert_eq!(
            (
                value("Delivered"),
                value("Throttled"),
                value("FanOutDuration")
            ),
            (7, 3, 41)
        );
        assert_eq!(summary.kind(), "shard");
        assert_eq!(summary.broadcast(), Some("b1"));
    }

    #[test]
    fn a_sharded_broadcast_counts_as_a_broadcast_and_a_sharded_one_without_deliveries() {
        let mut sharded = ShardedBroadcast {
            sender: "c=".into(),
            room: None,
            broadcast: "b1".into(),
            segments: 4,
            estimate: 20_000,
        };
        let summary = Summary::Sharded(sharded.clone());
        assert_eq!(names(&summary), ["Broadcasts", "ShardedBroadcasts"]);
        sharded.room = Some("r".into());
        assert_eq!(
            names(&Summary::Sharded(sharded)),
            ["RoomMessages", "ShardedBroadcasts"]
        );
    }

    #[test]
    fn a_cleanup_counts_what_it_checked_and_removed() {
        let summary = Summary::Cleanup {
            report: CleanupReport {
                checked: 5,
                expired: 1,
                gone: 2,
                failed: 0,
                complete: true,
            },
            took: Duration::from_millis(12),
        };
        let metrics = summary.metrics();
        assert_eq!(
            metrics
                .iter()
                .map(|m| (m.name, m.value))
                .collect::<Vec<_>>(),
            [
                ("Cleanups", 1),
                ("CleanupChecked", 5),
                ("CleanupExpired", 1),
                ("CleanupGone", 2),
                ("CleanupFailed", 0),
                ("CleanupDuration", 12)
            ]
        );
        assert_eq!(metrics[5].unit, Unit::Milliseconds);
    }

    #[test]
    fn history_reads_and_presence_count_their_frames() {
        let history = Summary::History {
            room: "r".into(),
            messages: 12,
            catch_up: true,
        };
        let presence = Summary::Presence {
            room: "r".into(),
            delivered: 4,
            failed: 1,
        };
        let values = |summary: &Summary| {
            summary
                .metrics()
                .iter()
                .map(|m| (m.name, m.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            values(&history),
            [("HistoryReads", 1), ("HistoryMessages", 12)]
        );
        assert_eq!(
            values(&presence),
            [
                ("PresenceEvents", 1),
                ("PresenceFrames", 4),
                ("PresenceFailed", 1)
            ]
        );
        assert_eq!((history.kind(), presence.kind()), ("history", "presence"));
    }

    #[test]
    fn each_refusal_is_a_metric_by_its_reason() {
        let refused = |refusal| Summary::Refused {
            connection_id: "c=".into(),
            refusal,
        };
        let values = |summary: Summary| {
            assert_eq!(summary.kind(), "refused");
            assert_eq!(summary.broadcast(), None);
            summary
                .metrics()
                .iter()
                .map(|m| (m.name, m.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            values(refused(Refusal::Frames)),
            [("Refusals", 1), ("RefusedFrames", 1)]
        );
        assert_eq!(
            values(refused(Refusal::UserFrames)),
            [("Refusals", 1), ("RefusedUserFrames", 1)]
        );
        assert_eq!(
            values(refused(Refusal::Deliveries { audience: 300 })),
            [
                ("Refusals", 1),
                ("RefusedBroadcasts", 1),
                ("RefusedDeliveries", 300)
            ]
        );
        assert_eq!(
            values(refused(Refusal::Forbidden { audience: 12_000 })),
            [("Refusals", 1), ("ForbiddenBroadcasts", 1)]
        );
        assert_eq!(
            values(refused(Refusal::Connects)),
            [("Refusals", 1), ("RefusedConnects", 1)]
        );
        // closing follows a refusal already counted
        assert_eq!(values(refused(Refusal::Closed)), [("ClosedConnections", 1)]);
    }
}
