//! Per-client limits (issue 23): their arithmetic and settings; the routes check them in
//! [`super::guard`]. Every limit is a GCRA bucket (the generic cell rate algorithm, a token bucket kept as
//! one number): a bucket's state is its *theoretical arrival time* `tat`, the time at which it
//! would be full again, so taking from it is one comparison and one write, which a store can make
//! conditional (DynamoDB: an UpdateItem with a condition on `tat`), shared by every function
//! instance.
//!
//! A bucket of `rate` tokens a second holding at most `burst`: each token is `interval` = 1/rate;
//! taking `cost` tokens at `now` moves `tat` to `max(tat, now) + cost × interval`, and is allowed
//! if that is at most `burst × interval` ahead of `now`; else the caller may retry once it is.

use std::time::Duration;

/// A bucket's shape: one token every `interval`, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Microseconds a token takes to come back.
    pub interval_us: i64,
    pub burst: u64,
}

impl Rate {
    /// `per_second` tokens a second, `burst` at most at once.
    pub fn per_second(per_second: u32, burst: u32) -> Rate {
        Rate {
            interval_us: 1_000_000 / i64::from(per_second.max(1)),
            burst: u64::from(burst.max(1)),
        }
    }

    /// `per_minute` tokens a minute, all of them at once at most.
    pub fn per_minute(per_minute: u32) -> Rate {
        Rate {
            interval_us: (60_000_000 / i64::from(per_minute.max(1))).max(1),
            burst: u64::from(per_minute.max(1)),
        }
    }

    /// Whether `cost` can ever be taken: at most the whole burst.
    pub fn can_ever_take(self, cost: u64) -> bool {
        cost <= self.burst
    }
}

/// What taking from a bucket gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Allowed; the bucket's new `tat` (microseconds since the epoch).
    Allowed { tat: i64 },
    /// Refused: nothing was taken; the same cost would be allowed after this long.
    Refused { retry_after: Duration },
}

/// Takes `cost` tokens from a bucket of `rate` whose `tat` is `tat` (`None`: a full bucket), at
/// `now` (microseconds since the epoch).
pub fn take(tat: Option<i64>, now: i64, cost: u64, rate: Rate) -> Taken {
    // in 128 bits: no product of a cost, an interval and a time can overflow
    let interval = i128::from(rate.interval_us);
    let now_wide = i128::from(now);
    let tat = tat.map_or(now_wide, |tat| i128::from(tat).max(now_wide));
    let new_tat = tat + i128::from(cost) * interval;
    // the earliest time at which the bucket holds `cost` tokens
    let allowed_at = new_tat - i128::from(rate.burst) * interval;
    if allowed_at <= now_wide {
        Taken::Allowed {
            tat: i64::try_from(new_tat).unwrap_or(i64::MAX),
        }
    } else {
        let wait = u64::try_from(allowed_at - now_wide).unwrap_or(u64::MAX);
        Taken::Refused {
            retry_after: Duration::from_micros(wait),
        }
    }
}

/// The limits of issue 23, with its defaults. `None` for a limit: off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Frames a connection may send (10 a second, bursts of 20).
    pub frames: Option<Rate>,
    /// Frames a signed-in user may send across their connections (20 a second).
    pub user_frames: Option<Rate>,
    /// Deliveries a connection's broadcasts may address (10 000 a minute, its burst too): a
    /// broadcast costs its audience.
    pub deliveries: Option<Rate>,
    /// Connections one signed-in user may hold at once.
    pub connections_per_user: Option<u32>,
    /// Whether a client may broadcast to everyone.
    pub everyone_broadcast: bool,
    /// Refusals after which a connection is closed (the 100th within a minute).
    pub refusals_to_close: Option<Rate>,
}

impl Default for Limits {
    fn default() -> Self {
        LimitSettings::default().into()
    }
}

/// The limits as the stack's settings (and webchat-local's flags) state them: 0 turns a limit
/// off. A signed-in user's frames burst to twice their rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    /// Frames a second per connection (`webchat:frameRate`, `--frame-rate`).
    pub frame_rate: u32,
    /// Frames a connection may send at once (`webchat:frameBurst`, `--frame-burst`).
    pub frame_burst: u32,
    /// Frames a second per signed-in user (`webchat:userFrameRate`, `--user-frame-rate`).
    pub user_frame_rate: u32,
    /// Deliveries a minute per connection, also its burst (`webchat:deliveryBudget`,
    /// `--delivery-budget`).
    pub delivery_budget: u32,
    /// Connections per signed-in user (`webchat:connectionsPerUser`,
    /// `--connections-per-user`).
    pub connections_per_user: u32,
    /// Broadcasts to everyone allowed (`webchat:everyoneBroadcast`,
    /// `--no-everyone-broadcast`).
    pub everyone_broadcast: bool,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            frame_rate: 10,
            frame_burst: 20,
            user_frame_rate: 20,
            delivery_budget: 10_000,
            connections_per_user: 10,
            everyone_broadcast: true,
        }
    }
}

impl From<LimitSettings> for Limits {
    fn from(set: LimitSettings) -> Limits {
        let on = |value: u32| (value > 0).then_some(value);
        Limits {
            frames: on(set.frame_rate).map(|rate| Rate::per_second(rate, set.frame_burst)),
            user_frames: on(set.user_frame_rate)
                .map(|rate| Rate::per_second(rate, rate.saturating_mul(2))),
            deliveries: on(set.delivery_budget).map(Rate::per_minute),
            connections_per_user: on(set.connections_per_user),
            everyone_broadcast: set.everyone_broadcast,
            // a limit on: 100 refusals within a minute close the connection (a bucket of 99
            // refilling one every 6 s closes at the 100th in a burst, and by about the 110th in
            // any minute; a refusal now and then never adds up)
            refusals_to_close: (set.frame_rate > 0
                || set.user_frame_rate > 0
                || set.delivery_budget > 0
                || !set.everyone_broadcast)
                .then_some(Rate {
                    interval_us: 6_000_000,
                    burst: 99,
                }),
        }
    }
}

impl Limits {
    /// Every limit off (`--no-limits`: benchmarks, and tests that are not about limits).
    pub fn off() -> Limits {
        Limits {
            frames: None,
            user_frames: None,
            deliveries: None,
            connections_per_user: None,
            everyone_broadcast: true,
            refusals_to_close: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    /// Takes one token at each of `times` (µs), keeping the bucket's state; which were allowed.
    fn run(rate: Rate, times: impl IntoIterator<Item = i64>) -> Vec<bool> {
        let mut tat = None;
        times
            .into_iter()
            .map(|now| match take(tat, now, 1, rate) {
                Taken::Allowed { tat: new } => {
                    tat = Some(new);
                    true
                }
                Taken::Refused { .. } => false,
            })
            .collect()
    }

    #[test]
    fn a_full_bucket_gives_its_burst_at_once_then_its_rate() {
        let rate = Rate::per_second(10, 20);
        let at_once = run(rate, std::iter::repeat_n(0, 25));
        assert_eq!(at_once.iter().filter(|allowed| **allowed).count(), 20);
        // then 10 a second, sustained: 100 frames over 10 s, evenly, after the burst is spent
        let mut times: Vec<i64> = std::iter::repeat_n(0, 20).collect();
        times.extend((0..100).map(|i| i * SECOND / 10 + SECOND / 10));
        let allowed = run(rate, times).iter().filter(|a| **a).count();
        assert_eq!(allowed, 120);
        // and a flood of 1 000 a second for 10 s gets the burst plus 10 a second
        let flood: Vec<i64> = (0..10_000).map(|i| i * SECOND / 1000).collect();
        let allowed = run(rate, flood).iter().filter(|a| **a).count();
        assert!((119..=121).contains(&allowed), "{allowed}");
    }

    #[test]
    fn a_refusal_says_when_the_same_cost_would_be_allowed_and_takes_nothing() {
        let rate = Rate::per_minute(10_000);
        let Taken::Allowed { tat } = take(None, 0, 10_000, rate) else {
            panic!("a full bucket gives its whole burst");
        };
        let Taken::Refused { retry_after } = take(Some(tat), 0, 600, rate) else {
            panic!("an empty bucket refuses");
        };
        // 600 deliveries of 10 000 a minute come back in 3.6 s
        assert_eq!(retry_after, Duration::from_millis(3_600));
        assert!(matches!(
            take(Some(tat), 3_600_000, 600, rate),
            Taken::Allowed { .. }
        ));
        assert!(rate.can_ever_take(10_000));
        assert!(!rate.can_ever_take(10_001));
    }

    #[test]
    fn an_idle_bucket_refills_to_its_burst_and_no_more() {
        let rate = Rate::per_second(10, 20);
        let Taken::Allowed { tat } = take(None, 0, 20, rate) else {
            panic!("the burst");
        };
        // an hour later the bucket holds its burst, not 36 000
        let later = 3_600 * SECOND;
        assert!(matches!(
            take(Some(tat), later, 20, rate),
            Taken::Allowed { .. }
        ));
        assert!(matches!(
            take(Some(tat), later, 21, rate),
            Taken::Refused { .. }
        ));
    }

    #[test]
    fn absurd_costs_and_times_saturate_instead_of_overflowing() {
        let rate = Rate::per_minute(1);
        assert!(matches!(
            take(Some(i64::MAX - 1), i64::MAX, u64::MAX, rate),
            Taken::Refused { .. }
        ));
        assert!(matches!(take(None, 0, 0, rate), Taken::Allowed { .. }));
    }

    #[test]
    fn the_defaults_are_the_issues_and_zero_turns_a_limit_off() {
        let limits = Limits::default();
        assert_eq!(limits.frames, Some(Rate::per_second(10, 20)));
        assert_eq!(limits.user_frames, Some(Rate::per_second(20, 40)));
        assert_eq!(limits.deliveries, Some(Rate::per_minute(10_000)));
        assert_eq!(limits.connections_per_user, Some(10));
        assert!(limits.everyone_broadcast);
        assert_eq!(
            limits.refusals_to_close,
            Some(Rate {
                interval_us: 6_000_000,
                burst: 99
            })
        );
        let off: Limits = LimitSettings {
            frame_rate: 0,
            user_frame_rate: 0,
            delivery_budget: 0,
            connections_per_user: 0,
            ..LimitSettings::default()
        }
        .into();
        assert_eq!(off, Limits::off());
    }
}
