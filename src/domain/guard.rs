//! The per-client limits as the routes check them (issue 23): a frame's budgets before any work
//! is done for it, a broadcast's delivery budget by its audience before it is delivered or
//! queued, a user's connections at `$connect`, and closing a connection whose frames keep being
//! refused. The arithmetic is [`super::limits`]; the buckets are the [`LimitStore`]'s, shared by
//! every function instance.
//!
//! A bucket that cannot be read (DynamoDB failing after its retries) allows: a limit guards the
//! account's throttle and bill against one client, and refusing every client while the store is
//! down would be the outage it guards against. The failure is logged.
//!
//! [`LimitStore`]: crate::ports::LimitStore

use std::time::Duration;

use super::delivery::Gone;
use super::limits::{Rate, Taken};
use super::summary::{Refusal, Summary};
use super::{Chat, ConnectError, Deadline, RouteError, Sender, text};
use crate::ports::{ConnectionApi, ConnectionStore, EventBus, Outcome, RoomStore};

/// The longest a bucket's take may hold a frame: a DynamoDB that slow (its calls time out after
/// 5 s, a take makes up to six) would otherwise spend the function's time on a limit; past it
/// the frame is allowed, as when the store fails.
pub const TAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a frame or a broadcast may go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    Yes,
    /// Refused; the sender has been told why.
    No,
}

impl<S: ConnectionStore, A: ConnectionApi, B: EventBus, R: RoomStore> Chat<S, A, B, R> {
    /// Checks a frame of `sender` against its connection's frame budget and (signed in) its
    /// user's, before any work is done for it. A refused frame is answered `rate_limited` with
    /// `retryAfterMs` and dropped; a connection refused more often than `refusals_to_close`
    /// allows is closed (1008 where the gateway can say so).
    pub async fn admit(
        &self,
        sender: Sender<'_>,
        deadline: Deadline,
    ) -> Result<Admitted, RouteError> {
        let limits = self.settings.limits;
        let id = sender.connection_id;
        let now = self.clock.now().timestamp_micros();
        let mut refused = None;
        if let Some(rate) = limits.frames
            && let Some(wait) = self.spend(&format!("frames#{id}"), 1, rate, now).await
        {
            refused = Some((Refusal::Frames, wait, rate));
        }
        if refused.is_none()
            && let (Some(rate), Some(identity)) = (limits.user_frames, sender.identity)
            && let Some(wait) = self
                .spend(&format!("user#{}", identity.user), 1, rate, now)
                .await
        {
            refused = Some((Refusal::UserFrames, wait, rate));
        }
        let Some((refusal, wait, rate)) = refused else {
            return Ok(Admitted::Yes);
        };
        let told = text::frame_refused(refusal == Refusal::UserFrames, rate, wait);
        self.refuse(id, refusal, told, deadline).await?;
        Ok(Admitted::No)
    }

    /// Tells `id` what was refused (and reports it); every refusal, a frame's or a broadcast's,
    /// counts toward closing: a connection refused more often than `refusals_to_close` allows
    /// is told so in the same frame, then closed (1008 where the gateway can say so).
    async fn refuse(
        &self,
        id: &str,
        refusal: Refusal,
        mut told: crate::protocol::ProtocolError,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        self.report(Summary::Refused {
            connection_id: id.to_owned(),
            refusal,
        });
        let closing = match self.settings.limits.refusals_to_close {
            Some(refusals) => {
                let now = self.clock.now().timestamp_micros();
                self.spend(&format!("refusals#{id}"), 1, refusals, now)
                    .await
                    .is_some()
            }
            None => false,
        };
        if closing {
            told.message.push_str(text::CLOSING_FOR_REFUSALS);
        }
        self.tell(id, told, deadline).await?;
        if closing {
            self.close_for_refusals(id, deadline).await?;
        }
        Ok(())
    }

    /// Closes a connection whose frames kept being refused.
    async fn close_for_refusals(&self, id: &str, deadline: Deadline) -> Result<(), RouteError> {
        self.report(Summary::Refused {
            connection_id: id.to_owned(),
            refusal: Refusal::Closed,
        });
        let cut_off = self.cut_off(deadline);
        let closing = self.api.close_for_policy(id, text::CLOSED_FOR_REFUSALS);
        match super::deadline::until(cut_off, closing).await?? {
            Outcome::Done(()) => tracing::warn!(connection_id = id, "closed: frames kept refused"),
            Outcome::Gone => tracing::debug!(connection_id = id, "refused; already gone"),
        }
        Ok(())
    }

    /// A broadcast to everyone where the stack turned that off: `forbidden`.
    pub(super) async fn everyone_off(
        &self,
        sender: &str,
        deadline: Deadline,
    ) -> Result<(), RouteError> {
        self.refuse(
            sender,
            Refusal::Forbidden { audience: 0 },
            text::everyone_broadcast_off(),
            deadline,
        )
        .await
    }

    /// Charges a broadcast of `sender` to `audience` connections (a room's members, or
    /// everyone) to its delivery budget. Refused: `forbidden` for one larger than the whole
    /// budget, `rate_limited` for one that does not fit what is left.
    pub(super) async fn afford(
        &self,
        sender: &str,
        audience: u64,
        deadline: Deadline,
    ) -> Result<Admitted, RouteError> {
        let Some(rate) = self.settings.limits.deliveries else {
            return Ok(Admitted::Yes);
        };
        let (refusal, told) = if !rate.can_ever_take(audience) {
            (
                Refusal::Forbidden { audience },
                text::broadcast_too_large(rate.burst, audience),
            )
        } else {
            let now = self.clock.now().timestamp_micros();
            match self
                .spend(&format!("deliveries#{sender}"), audience, rate, now)
                .await
            {
                None => return Ok(Admitted::Yes),
                Some(wait) => (
                    Refusal::Deliveries { audience },
                    text::deliveries_refused(rate.burst, audience, wait),
                ),
            }
        };
        self.refuse(sender, refusal, told, deadline).await?;
        Ok(Admitted::No)
    }

    /// Whether `sender`'s join or leave may tell the room's `others`: their presence frames are
    /// deliveries it caused, charged to its delivery budget like a broadcast's (else joining and
    /// leaving a room of 100 ten times a second would post 1 000 frames a second, past any
    /// budget). Past the budget the join or leave still happens, untold.
    pub(super) async fn afford_presence(&self, sender: &str, others: u64) -> bool {
        let Some(rate) = self.settings.limits.deliveries else {
            return true;
        };
        if others == 0 {
            return true;
        }
        let now = self.clock.now().timestamp_micros();
        let refused = self
            .spend(&format!("deliveries#{sender}"), others, rate, now)
            .await;
        if refused.is_some() {
            tracing::info!(
                connection_id = sender,
                others,
                "presence past the delivery budget; not told"
            );
        }
        refused.is_none()
    }

    /// At `$connect` of a signed-in `user`: refuses a connection past `max` live ones. A
    /// record whose connection is gone (its `$disconnect` never arrived) does not count: only
    /// at the limit is each asked of `@connections` (GetConnection), and the gone are pruned.
    pub(super) async fn hold_connection(
        &self,
        user: &str,
        connection_id: &str,
        max: u32,
    ) -> Result<(), ConnectError> {
        let now = self.clock.now();
        let mut held = self
            .store
            .connections_of(user, now.timestamp())
            .await
            .map_err(RouteError::from)?;
        held.retain(|held| held.connection_id != connection_id);
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if held.len() < max {
            return self.connect_burst(user, connection_id, max, now).await;
        }
        // at the limit: each held connection asked at once (at most `max` GetConnection calls)
        let asked = held.iter().map(|recipient| async move {
            match self.api.describe(&recipient.connection_id).await {
                Ok(Outcome::Gone) => !matches!(
                    self.gone(recipient, now).await,
                    Ok(Gone::Pruned | Gone::Changed)
                ),
                // a connection that cannot be asked about counts: refusing errs on the safe side
                Ok(Outcome::Done(_)) | Err(_) => true,
            }
        });
        let live = futures_util::future::join_all(asked)
            .await
            .into_iter()
            .filter(|alive| *alive)
            .count();
        if live < max {
            return self.connect_burst(user, connection_id, max, now).await;
        }
        Err(self.too_many(user, connection_id, max, live))
    }

    /// The user index is eventually consistent: connects opened at once could all read fewer
    /// than `max` held. A bucket of twice `max` connects, refilling `max` a second, caps such a
    /// burst with a conditional write (strongly consistent) near twice the limit, and is only
    /// taken by a connect the count allowed, so a person who closes one and opens another is
    /// never refused by it.
    async fn connect_burst(
        &self,
        user: &str,
        connection_id: &str,
        max: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ConnectError> {
        let per_second = u32::try_from(max).unwrap_or(u32::MAX);
        let burst = Rate::per_second(per_second, per_second.saturating_mul(2));
        let key = format!("connects#{user}");
        match self.spend(&key, 1, burst, now.timestamp_micros()).await {
            None => Ok(()),
            Some(wait) => {
                tracing::info!(
                    connection_id,
                    user,
                    ?wait,
                    "connects at once past the limit"
                );
                Err(self.too_many(user, connection_id, max, max))
            }
        }
    }

    /// A connect refused at the user's limit, reported.
    fn too_many(&self, user: &str, connection_id: &str, max: usize, live: usize) -> ConnectError {
        self.report(Summary::Refused {
            connection_id: connection_id.to_owned(),
            refusal: Refusal::Connects,
        });
        ConnectError::TooMany(text::too_many_connections(user, max, live))
    }

    /// Takes `cost` from bucket `key`; how long until it would pass, if refused. A store that
    /// fails, or takes longer than [`TAKE_TIMEOUT`], allows (see the module's note).
    pub(super) async fn spend(
        &self,
        key: &str,
        cost: u64,
        rate: Rate,
        now: i64,
    ) -> Option<Duration> {
        let taken = tokio::time::timeout(TAKE_TIMEOUT, self.limits.take(key, cost, rate, now));
        match taken.await {
            Ok(Ok(Taken::Allowed { .. })) => None,
            Ok(Ok(Taken::Refused { retry_after })) => Some(retry_after),
            Ok(Err(error)) => {
                tracing::warn!(key, %error, "a limit's bucket could not be read; allowed");
                None
            }
            Err(_) => {
                tracing::warn!(key, "a limit's bucket took too long; allowed");
                None
            }
        }
    }
}
