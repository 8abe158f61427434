//! Configuration of the Lambda functions, from the environment, validated once at init.
//!
//! A missing or invalid variable is an init error that names the variable and says what it should
//! hold, so a misconfigured stack fails at deployment's first cold start, not at the first chat.
//! Endpoints of emulators are not configured here: the AWS SDK reads the standard
//! `AWS_ENDPOINT_URL_<SERVICE>` variables itself.

use std::time::Duration;

use crate::domain::{Backoff, Settings};

/// The environment variables the functions read. The Pulumi program sets them from the same list.
pub mod vars {
    /// The DynamoDB table of connections.
    pub const CONNECTIONS_TABLE: &str = "CONNECTIONS_TABLE";
    /// The DynamoDB table of rooms: members, counters and history (`pk`, `sk`).
    pub const ROOMS_TABLE: &str = "ROOMS_TABLE";
    /// The EventBridge bus the welcome event goes to.
    pub const EVENT_BUS_NAME: &str = "EVENT_BUS_NAME";
    /// `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`: API Gateway's management
    /// endpoint (`@connections`).
    pub const WEBSOCKET_API_ENDPOINT: &str = "WEBSOCKET_API_ENDPOINT";
    /// `error`, `warn`, `info`, `debug` or `trace` (or a `tracing` filter). Optional: Lambda's
    /// `AWS_LAMBDA_LOG_LEVEL`, else `info` (`RUST_LOG` overrides it).
    pub const LOG_LEVEL: &str = "LOG_LEVEL";
    /// `@connections` calls a fan-out keeps in flight. Optional.
    pub const FANOUT_CONCURRENCY: &str = "FANOUT_CONCURRENCY";
    /// Calls in all for a throttled `@connections` call (the retry budget). Optional.
    pub const RETRY_ATTEMPTS: &str = "RETRY_ATTEMPTS";
    /// Items a DynamoDB Scan page may examine; unset, DynamoDB's 1 MB pages. A broadcast whose
    /// audience is larger than one page is sharded (with a shard queue). Optional.
    pub const SCAN_PAGE_SIZE: &str = "SCAN_PAGE_SIZE";
    /// The SQS queue URL of shard jobs (`broadcast` sends to it, `fanout` continues to it).
    /// Optional: without it every broadcast is delivered inline.
    pub const SHARD_QUEUE_URL: &str = "SHARD_QUEUE_URL";
    /// `@connections` posts a second one invocation may start (its share of the stack's
    /// budget). Optional: unpaced.
    pub const POST_RATE: &str = "POST_RATE";
    /// The CloudWatch namespace of the fan-out metrics (EMF lines on stdout). Optional: none.
    pub const METRICS_NAMESPACE: &str = "METRICS_NAMESPACE";
    /// Worker invocations the shard queue runs at once: a sharded broadcast gets at least this
    /// many segments. Optional: 2.
    pub const FANOUT_WORKERS: &str = "FANOUT_WORKERS";
    /// Receives of a shard job before the queue sets it aside (its redrive policy's
    /// `maxReceiveCount`): `fanout` tells the sender when a job fails on this one. Optional: 3.
    pub const SHARD_ATTEMPTS: &str = "SHARD_ATTEMPTS";
    /// Days a room's messages are kept. Optional: 7.
    pub const HISTORY_DAYS: &str = "HISTORY_DAYS";
    /// Rooms of at most this many members send presence frames. Optional: 100.
    pub const PRESENCE_LIMIT: &str = "PRESENCE_LIMIT";
    /// Frames a second per connection; 0: no frame limit. Optional: 10.
    pub const FRAME_RATE: &str = "FRAME_RATE";
    /// Frames a connection may send at once. Optional: 20.
    pub const FRAME_BURST: &str = "FRAME_BURST";
    /// Frames a second per signed-in user, across their connections (bursts of twice that);
    /// 0: none. Optional: 20.
    pub const USER_FRAME_RATE: &str = "USER_FRAME_RATE";
    /// Deliveries a minute per connection (a broadcast costs its audience); 0: none.
    /// Optional: 10000.
    pub const DELIVERY_BUDGET: &str = "DELIVERY_BUDGET";
    /// Connections one signed-in user may hold; 0: any number. Optional: 10.
    pub const CONNECTIONS_PER_USER: &str = "CONNECTIONS_PER_USER";
    /// `true` or `false`: whether clients may broadcast to everyone. Optional: true.
    pub const EVERYONE_BROADCAST: &str = "EVERYONE_BROADCAST";

    /// The token issuer's URL, exactly as tokens' `iss` (the `authorize` function's; `https://`,
    /// or `http://` to loopback).
    pub const JWT_ISSUER: &str = "JWT_ISSUER";
    /// What tokens must be issued for: their `aud`, or a Cognito access token's `client_id`.
    pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";

    /// The `authorize` function's variables, required ones first.
    pub const AUTHORIZER: [&str; 3] = [JWT_ISSUER, JWT_AUDIENCE, LOG_LEVEL];

    /// Every variable of the other functions, required ones first.
    pub const ALL: [&str; 21] = [
        CONNECTIONS_TABLE,
        ROOMS_TABLE,
        EVENT_BUS_NAME,
        WEBSOCKET_API_ENDPOINT,
        LOG_LEVEL,
        FANOUT_CONCURRENCY,
        RETRY_ATTEMPTS,
        SCAN_PAGE_SIZE,
        SHARD_QUEUE_URL,
        POST_RATE,
        METRICS_NAMESPACE,
        FANOUT_WORKERS,
        SHARD_ATTEMPTS,
        HISTORY_DAYS,
        PRESENCE_LIMIT,
        FRAME_RATE,
        FRAME_BURST,
        USER_FRAME_RATE,
        DELIVERY_BUDGET,
        CONNECTIONS_PER_USER,
        EVERYONE_BROADCAST,
    ];
}

/// Everything a function needs to build its adapters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionConfig {
    pub connections_table: String,
    pub rooms_table: String,
    pub event_bus_name: String,
    pub websocket_api_endpoint: String,
    /// `LOG_LEVEL`; `None`: unset (Lambda's level, else `info`).
    pub log_level: Option<String>,
    pub scan_page_size: Option<i32>,
    /// Where shard jobs go; `None`: every broadcast inline.
    pub shard_queue_url: Option<String>,
    /// The CloudWatch namespace of the fan-out metrics; `None`: no metrics.
    pub metrics_namespace: Option<String>,
    pub settings: Settings,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set: it must hold {expected}")]
    Missing {
        name: &'static str,
        expected: &'static str,
    },
    #[error("{name} is {value:?}: it must hold {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// The `authorize` function's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizerConfig {
    pub issuer: crate::auth::jwks::IssuerUrl,
    pub audience: String,
    /// `LOG_LEVEL`; `None`: unset.
    pub log_level: Option<String>,
}

impl AuthorizerConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        const ISSUER: &str = "the token issuer's URL, as tokens' iss (https://, or http:// to localhost), e.g. https://cognito-idp.{region}.amazonaws.com/{pool-id}";
        let issuer = required(&lookup, vars::JWT_ISSUER, ISSUER)?;
        let issuer =
            crate::auth::jwks::IssuerUrl::parse(&issuer).map_err(|_| ConfigError::Invalid {
                name: vars::JWT_ISSUER,
                value: issuer.clone(),
                expected: ISSUER,
            })?;
        let audience = required(
            &lookup,
            vars::JWT_AUDIENCE,
            "the tokens' audience (aud, or a Cognito access token's client_id)",
        )?;
        Ok(AuthorizerConfig {
            issuer,
            audience,
            log_level: log_level(&lookup)?,
        })
    }
}

fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    expected: &'static str,
) -> Result<String, ConfigError> {
    lookup(name)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .ok_or(ConfigError::Missing { name, expected })
}

fn log_level(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<String>, ConfigError> {
    let level = lookup(vars::LOG_LEVEL).filter(|level| !level.trim().is_empty());
    if let Some(level) = &level
        && tracing_subscriber::EnvFilter::try_new(level).is_err()
    {
        return Err(ConfigError::Invalid {
            name: vars::LOG_LEVEL,
            value: level.clone(),
            expected: "a level (error, warn, info, debug, trace) or a tracing filter",
        });
    }
    Ok(level)
}

impl FunctionConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name, expected| required(&lookup, name, expected);
        let connections_table =
            required(vars::CONNECTIONS_TABLE, "the DynamoDB table of connections")?;
        let rooms_table = required(vars::ROOMS_TABLE, "the DynamoDB table of rooms")?;
        let event_bus_name = required(vars::EVENT_BUS_NAME, "the EventBridge bus name or ARN")?;
        const ENDPOINT: &str =
            "the management endpoint https://{api-id}.execute-api.{region}.amazonaws.com/{stage}";
        let endpoint = required(vars::WEBSOCKET_API_ENDPOINT, ENDPOINT)?;
        if !is_management_endpoint(&endpoint) {
            return Err(ConfigError::Invalid {
                name: vars::WEBSOCKET_API_ENDPOINT,
                value: endpoint,
                expected: ENDPOINT,
            });
        }
        let log_level = log_level(&lookup)?;

        let mut settings = Settings::default();
        if let Some(concurrency) = number(
            &lookup,
            vars::FANOUT_CONCURRENCY,
            1..=10_000,
            "a number from 1 to 10000",
        )? {
            settings.posts_in_flight = concurrency;
        }
        if let Some(attempts) = number(
            &lookup,
            vars::RETRY_ATTEMPTS,
            1..=20,
            "a number from 1 to 20",
        )? {
            settings.throttle_backoff = Backoff {
                attempts: attempts as u32,
                ..settings.throttle_backoff
            };
        }
        let scan_page_size = number(
            &lookup,
            vars::SCAN_PAGE_SIZE,
            1..=1_000_000,
            "a number from 1 to 1000000",
        )?
        .map(|size| size as i32);
        settings.post_rate = number(
            &lookup,
            vars::POST_RATE,
            1..=1_000_000,
            "a number of posts a second from 1 to 1000000",
        )?
        .map(|rate| rate as u32);
        if let Some(workers) = number(
            &lookup,
            vars::FANOUT_WORKERS,
            1..=1_000,
            "a number of workers from 1 to 1000",
        )? {
            settings.min_segments = workers as u32;
        }
        if let Some(attempts) = number(
            &lookup,
            vars::SHARD_ATTEMPTS,
            1..=1_000,
            "a number of receives from 1 to 1000 (the queue's maxReceiveCount)",
        )? {
            settings.shard_attempts = attempts as u32;
        }
        if let Some(days) = number(
            &lookup,
            vars::HISTORY_DAYS,
            1..=365,
            "a number of days from 1 to 365",
        )? {
            settings.history_days = days as u32;
        }
        if let Some(limit) = number(
            &lookup,
            vars::PRESENCE_LIMIT,
            0..=10_000,
            "a number of members from 0 (no presence frames) to 10000",
        )? {
            settings.presence_limit = limit as u64;
        }
        settings.limits = limit_settings(&lookup)?.into();
        let shard_queue_url = lookup(vars::SHARD_QUEUE_URL).filter(|url| !url.trim().is_empty());
        if let Some(url) = &shard_queue_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::Invalid {
                name: vars::SHARD_QUEUE_URL,
                value: url.clone(),
                expected: "an SQS queue URL https://sqs.{region}.amazonaws.com/{account}/{name}",
            });
        }
        let metrics_namespace =
            lookup(vars::METRICS_NAMESPACE).filter(|namespace| !namespace.trim().is_empty());
        Ok(FunctionConfig {
            shard_queue_url,
            metrics_namespace,
            connections_table,
            rooms_table,
            event_bus_name,
            websocket_api_endpoint: endpoint.trim_end_matches('/').to_owned(),
            log_level,
            scan_page_size,
            settings,
        })
    }
}

/// The per-client limits' variables (the stack's `webchat:frameRate` and the rest).
fn limit_settings(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<crate::domain::limits::LimitSettings, ConfigError> {
    let mut set = crate::domain::limits::LimitSettings::default();
    let limits = [
        (
            vars::FRAME_RATE,
            0..=1_000,
            "a number of frames a second from 0 (no limit) to 1000",
            &mut set.frame_rate,
        ),
        (
            vars::FRAME_BURST,
            1..=10_000,
            "a number of frames from 1 to 10000",
            &mut set.frame_burst,
        ),
        (
            vars::USER_FRAME_RATE,
            0..=10_000,
            "a number of frames a second from 0 (no limit) to 10000",
            &mut set.user_frame_rate,
        ),
        (
            vars::DELIVERY_BUDGET,
            0..=10_000_000,
            "a number of deliveries a minute from 0 (no limit) to 10000000",
            &mut set.delivery_budget,
        ),
        (
            vars::CONNECTIONS_PER_USER,
            0..=1_000,
            "a number of connections from 0 (no limit) to 1000",
            &mut set.connections_per_user,
        ),
    ];
    for (name, range, expected, field) in limits {
        if let Some(value) = number(lookup, name, range, expected)? {
            *field = value as u32;
        }
    }
    if let Some(value) = lookup(vars::EVERYONE_BROADCAST).filter(|value| !value.trim().is_empty()) {
        set.everyone_broadcast = match value.trim() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(ConfigError::Invalid {
                    name: vars::EVERYONE_BROADCAST,
                    value,
                    expected: "true or false",
                });
            }
        };
    }
    Ok(set)
}

fn number(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    range: std::ops::RangeInclusive<usize>,
    expected: &'static str,
) -> Result<Option<usize>, ConfigError> {
    let Some(value) = lookup(name).filter(|value| !value.trim().is_empty()) else {
        return Ok(None);
    };
    match value.trim().parse::<usize>() {
        Ok(number) if range.contains(&number) => Ok(Some(number)),
        _ => Err(ConfigError::Invalid {
            name,
            value,
            expected,
        }),
    }
}

/// An `http(s)://` URL with a host, no query, and a plain path (no `.`, `..` or empty segment):
/// what a post's request path and its signature are built from.
fn is_management_endpoint(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return false;
    };
    let path = uri.path().trim_end_matches('/');
    matches!(uri.scheme_str(), Some("https" | "http"))
        && uri.host().is_some_and(|host| !host.is_empty())
        && uri.query().is_none()
        && !path.contains("//")
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// How long a `@connections` call may take before it counts as failed: one slow connection must
/// not hold a fan-out slot for the SDK's default of no timeout at all.
pub const MANAGEMENT_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Calls in all for a DynamoDB request that is throttled or fails with a 5xx.
pub const DYNAMODB_ATTEMPTS: u32 = 6;
/// The first pause before retrying DynamoDB; it doubles (with jitter) up to the maximum.
pub const DYNAMODB_BACKOFF: Duration = Duration::from_millis(50);
pub const DYNAMODB_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long one DynamoDB attempt may take before it is abandoned and retried.
pub const DYNAMODB_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a DynamoDB call may take, retries included (the routes cut it shorter near the
/// invocation's deadline).
pub const DYNAMODB_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The retry quota of the DynamoDB client: a throttled retry costs 5, a timed-out one 10.
pub const DYNAMODB_RETRY_QUOTA: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<FunctionConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FunctionConfig::from_lookup(|name| map.get(name).cloned())
    }

    const COMPLETE: [(&str, &str); 4] = [
        ("CONNECTIONS_TABLE", "webchat-connections"),
        ("EVENT_BUS_NAME", "webchat"),
        (
            "WEBSOCKET_API_ENDPOINT",
            "https://abc.execute-api.eu-west-1.amazonaws.com/stage/",
        ),
        ("ROOMS_TABLE", "webchat-rooms"),
    ];

    #[test]
    fn the_authorizer_needs_an_issuer_it_can_trust_and_an_audience() {
        let config = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            AuthorizerConfig::from_lookup(|name| map.get(name).cloned())
        };
        let issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Ab";
        let good = config(&[("JWT_ISSUER", issuer), ("JWT_AUDIENCE", "client")]).unwrap();
        assert_eq!(good.issuer.as_str(), issuer);
        assert_eq!(good.audience, "client");
        assert!(matches!(
            config(&[("JWT_AUDIENCE", "client")]),
            Err(ConfigError::Missing {
                name: "JWT_ISSUER",
                ..
            })
        ));
        assert!(matches!(
            config(&[("JWT_ISSUER", issuer)]),
            Err(ConfigError::Missing {
                name: "JWT_AUDIENCE",
                ..
            })
        ));
        let plain = config(&[
            ("JWT_ISSUER", "http://idp.example.com"),
            ("JWT_AUDIENCE", "c"),
        ]);
        assert!(matches!(
            plain,
            Err(ConfigError::Invalid {
                name: "JWT_ISSUER",
                ..
            })
        ));
    }

    #[test]
    fn a_complete_environment_configures_everything_with_defaults() {
        let config = config(&COMPLETE).unwrap();
        assert_eq!(config.connections_table, "webchat-connections");
        assert_eq!(config.rooms_table, "webchat-rooms");
        assert_eq!(
            config.websocket_api_endpoint,
            "https://abc.execute-api.eu-west-1.amazonaws.com/stage"
        );
        assert_eq!(config.log_level, None);
        assert_eq!(config.settings, Settings::default());
        assert_eq!(config.scan_page_size, None);
    }

    #[test]
    fn each_missing_variable_is_named() {
        for missing in [
            "CONNECTIONS_TABLE",
            "ROOMS_TABLE",
            "EVENT_BUS_NAME",
            "WEBSOCKET_API_ENDPOINT",
        ] {
            let partial: Vec<(&str, &str)> = COMPLETE
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let error = config(&partial).unwrap_err();
            assert!(matches!(error, ConfigError::Missing { name, .. } if name == missing));
            assert!(error.to_string().starts_with(missing), "{error}");
        }
    }

    #[test]
    fn a_management_endpoint_is_an_absolute_url_with_a_plain_path() {
        for good in [
            "https://abc.execute-api.eu-west-1.amazonaws.com/stage",
            "https://abc.execute-api.eu-west-1.amazonaws.com/stage/",
            "http://127.0.0.1:4000/local",
            "https://chat.example.com",
        ] {
            assert!(is_management_endpoint(good), "{good}");
            let poster = crate::adapters::management::Poster::new(
                good,
                "eu-west-1",
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    crate::adapters::management::NoCredentials,
                ),
                MANAGEMENT_CALL_TIMEOUT,
            );
            assert!(poster.is_ok(), "{good}: {poster:?}");
        }
        for bad in [
            "wss://abc.execute-api.eu-west-1.amazonaws.com/stage",
            "https:///stage",
            "https://abc.example.com/a//b",
            "https://abc.example.com/stage/../other",
            "https://abc.example.com/./stage",
            "https://abc.example.com/stage?x=1",
            "not a url",
        ] {
            assert!(!is_management_endpoint(bad), "{bad}");
        }
    }

    #[test]
    fn invalid_values_are_named_with_what_was_expected() {
        let mut pairs = COMPLETE.to_vec();
        pairs[2] = (
            "WEBSOCKET_API_ENDPOINT",
            "wss://abc.execute-api.eu-west-1.amazonaws.com/stage",
        );
        assert!(
            config(&pairs)
                .unwrap_err()
                .to_string()
                .contains("https://{api-id}")
        );
        for (name, value) in [
            ("FANOUT_CONCURRENCY", "0"),
            ("FANOUT_CONCURRENCY", "lots"),
            ("RETRY_ATTEMPTS", "99"),
            ("LOG_LEVEL", "very[loud"),
            ("FANOUT_WORKERS", "0"),
            ("FANOUT_WORKERS", "1001"),
            ("SHARD_ATTEMPTS", "0"),
            ("HISTORY_DAYS", "0"),
            ("HISTORY_DAYS", "366"),
            ("PRESENCE_LIMIT", "-1"),
            ("PRESENCE_LIMIT", "10001"),
            ("FRAME_RATE", "1001"),
            ("FRAME_BURST", "0"),
            ("USER_FRAME_RATE", "x"),
            ("DELIVERY_BUDGET", "-5"),
            ("CONNECTIONS_PER_USER", "1001"),
            ("EVERYONE_BROADCAST", "yes"),
        ] {
            let mut pairs = COMPLETE.to_vec();
            pairs.push((name, value));
            let error = config(&pairs).unwrap_err();
            assert!(error.to_string().starts_with(name), "{error}");
        }
    }

    #[test]
    fn tunables_override_the_defaults() {
        let mut pairs = COMPLETE.to_vec();
        pairs.extend([
            ("FANOUT_CONCURRENCY", "512"),
            ("RETRY_ATTEMPTS", "3"),
            ("SCAN_PAGE_SIZE", "100"),
            ("LOG_LEVEL", "debug"),
            ("FANOUT_WORKERS", "16"),
            ("SHARD_ATTEMPTS", "5"),
            ("HISTORY_DAYS", "30"),
            ("PRESENCE_LIMIT", "0"),
            ("FRAME_RATE", "5"),
            ("FRAME_BURST", "7"),
            ("USER_FRAME_RATE", "0"),
            ("DELIVERY_BUDGET", "600"),
            ("CONNECTIONS_PER_USER", "3"),
            ("EVERYONE_BROADCAST", "false"),
        ]);
        let config = config(&pairs).unwrap();
        let limits = config.settings.limits;
        use crate::domain::limits::Rate;
        assert_eq!(limits.frames, Some(Rate::per_second(5, 7)));
        assert_eq!(limits.user_frames, None);
        assert_eq!(limits.deliveries, Some(Rate::per_minute(600)));
        assert_eq!(limits.connections_per_user, Some(3));
        assert!(!limits.everyone_broadcast);
        assert_eq!(config.settings.history_days, 30);
        assert_eq!(config.settings.presence_limit, 0);
        assert_eq!(config.settings.min_segments, 16);
        assert_eq!(config.settings.shard_attempts, 5);
        assert_eq!(config.settings.posts_in_flight, 512);
        assert_eq!(config.settings.throttle_backoff.attempts, 3);
        assert_eq!(config.scan_page_size, Some(100));
        assert_eq!(config.log_level.as_deref(), Some("debug"));
    }
}
