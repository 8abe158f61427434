//! `webchat-local`: the whole chat on one port, as API Gateway would serve it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use webchat::domain::limits::LimitSettings;
use webchat::local::{Auth, Config, Gateway, Limits};
use webchat::telemetry::{self, Export, LogFormat, Options};

/// Runs webchat locally: the same route handlers the Lambda functions run, behind an emulation of
/// API Gateway's WebSocket API, with in-memory stores (connections, and rooms with their history).
///
/// On one port it serves:
///   - the chat page on a plain GET / (open the http:// URL it prints in two tabs and chat);
///   - websocket upgrades on `/` and on `/{stage}` (a deployed URL's shape); the query string
///     goes to $connect, e.g. `?name=alice`; a refused connect gets its reason as the body;
///   - the management API of API Gateway's callback URL: POST, GET and DELETE on
///     `/@connections/{id}` and `/{stage}/@connections/{id}`;
///   - API Gateway's limits: 32 KB frames and 128 KB messages (over them the socket closes with
///     1009), 10 min idle and 2 h maximum per connection (closed with 1001), `$disconnect` on
///     every close;
///   - the welcome path: $connect publishes an event that is handed to `post`, and `cleanup`
///     runs on a timer;
///   - against hostile clients: RFC 6455 close codes (1007, 1002), a cap on what a client may
///     be owed (frames and pongs), a header timeout, a connection bound at which half-sent
///     requests give way, and management requests from web pages (Origin) refused.
///
/// Try it: `npx wscat -c ws://127.0.0.1:3001` then send {"action":"broadcast","message":"hi"},
/// {"action":"list"} or {"action":"chat","connection":"<id>","message":"yo"}; rooms with
/// {"action":"join","room":"rust"} (add "since":<seq> after a reconnect to catch up),
/// {"action":"broadcast","room":"rust","message":"hi"}, {"action":"history","room":"rust"} and
/// {"action":"leave","room":"rust"}.
///
/// Sign-in, as the stack's `authorize` function does it: with --dev-issuer, webchat-local is its
/// own OpenID issuer (GET /dev/token?name=ada mints a one-hour token, for this machine only);
/// with --jwt-issuer and --jwt-audience, tokens of that issuer (Cognito, or any OIDC provider).
/// A connect then needs a token, as `?token=` or after `webchat.v1` in Sec-WebSocket-Protocol;
/// without one it gets 401. Names come from the token; chat a person with
/// {"action":"chat","user":"<their user id>","message":"hi"}.
///
/// Per-client limits, as the stack's defaults: 10 frames a second per connection (bursts of
/// 20), 20 per signed-in user, 10000 deliveries a minute per connection (a broadcast costs its
/// audience), 10 connections per user; a connection with 100 frames refused in a minute is
/// closed (1008). --no-limits turns them off.
///
/// Every event runs in a span as a Lambda invocation would, and log lines carry its trace_id;
/// with --otlp-endpoint the spans are exported (OTLP/HTTP), and a connect and the post of its
/// welcome are one trace.
///
/// Logs go to stderr; the level comes from --log-level, RUST_LOG or LOG_LEVEL. At info: one line
/// for every error a client is sent and every close the server makes, with its code. Ctrl-C (or
/// SIGTERM) closes every connection (1001, running $disconnect) and exits within about 3 s.
#[derive(Debug, Parser)]
#[command(name = "webchat-local", version, verbatim_doc_comment)]
struct Args {
    /// Where to listen: an address (127.0.0.1:3001), a host and port (localhost:3001), or a port
    /// alone (3001, on 127.0.0.1). Port 0 picks a free port; the URL printed says which.
    #[arg(long, default_value = "127.0.0.1:3001", value_parser = parse_listen)]
    listen: SocketAddr,

    /// Stage name, as in the events and in `/{stage}/@connections/{id}`.
    #[arg(long, default_value = "local")]
    stage: String,

    /// Largest frame a client may send, in bytes (API Gateway: 32 KB; at least 1024).
    #[arg(long, default_value_t = Limits::default().max_frame_bytes, value_parser = at_least_1_kib)]
    max_frame_bytes: usize,

    /// Largest message a client may send and largest @connections body, in bytes (API Gateway:
    /// 128 KB; at least 1024).
    #[arg(long, default_value_t = Limits::default().max_message_bytes, value_parser = at_least_1_kib)]
    max_message_bytes: usize,

    /// Close a connection whose client sent nothing for this long (API Gateway: 10 min).
    #[arg(long, default_value = "10m", value_parser = more_than_zero)]
    idle_timeout: Duration,

    /// Close every connection after this long (API Gateway: 2 h).
    #[arg(long, default_value = "2h", value_parser = more_than_zero)]
    max_connection_duration: Duration,

    /// Each event's time limit, like the functions' timeout in AWS (the stack's default 10 s):
    /// a broadcast stops starting posts 3 s before it and tells the sender what was missed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    function_timeout: Duration,

    /// Bytes a client may be owed (frames queued for it, pongs to its pings) before it counts
    /// as not reading and is dropped.
    #[arg(long, default_value_t = Config::default().max_outbound_bytes)]
    max_outbound_bytes: usize,

    /// Close a connection whose request headers have not all arrived after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,

    /// Connections held at once; more are closed as they arrive. Default: the open-file limit
    /// less 32, at most 10000.
    #[arg(long)]
    max_connections: Option<usize>,

    /// Connections a Scan page of the store examines. A broadcast to more than one page is
    /// sharded: split into scan segments, one job each on the shard queue, for `fanout` workers.
    #[arg(long, default_value_t = Config::default().scan_page_size)]
    scan_page_size: usize,

    /// `fanout` invocations at once (the stack's event source mapping concurrency).
    #[arg(long, default_value_t = webchat::local::QueueSettings::default().workers)]
    fanout_workers: usize,

    /// `@connections` posts a second each fan-out may start (the stack's budget divided by the
    /// workers); 0 unpaced.
    #[arg(long, default_value_t = 0)]
    post_rate: u32,

    /// Days a room's messages are kept (the stack's webchat:historyDays), 1 to 365.
    #[arg(long, default_value_t = webchat::domain::Settings::default().history_days,
          value_parser = clap::value_parser!(u32).range(1..=365))]
    history_days: u32,

    /// Rooms of at most this many members send presence frames (the stack's
    /// webchat:presenceLimit), 0 (none) to 10000.
    #[arg(long, default_value_t = webchat::domain::Settings::default().presence_limit,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    presence_limit: u64,

    /// Frames a second each connection may send (the stack's webchat:frameRate); over it a
    /// frame is answered rate_limited with retryAfterMs and dropped. 0: no limit.
    #[arg(long, default_value_t = LimitSettings::default().frame_rate,
          value_parser = clap::value_parser!(u32).range(0..=1_000))]
    frame_rate: u32,

    /// Frames a connection may send at once (the stack's webchat:frameBurst).
    #[arg(long, default_value_t = LimitSettings::default().frame_burst,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    frame_burst: u32,

    /// Frames a second each signed-in user may send across their connections, bursts of twice
    /// that (the stack's webchat:userFrameRate). 0: no limit.
    #[arg(long, default_value_t = LimitSettings::default().user_frame_rate,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    user_frame_rate: u32,

    /// Deliveries a minute each connection's broadcasts may address, also its burst (the
    /// stack's webchat:deliveryBudget): a broadcast costs its audience. 0: no limit.
    #[arg(long, default_value_t = LimitSettings::default().delivery_budget,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    delivery_budget: u32,

    /// Connections each signed-in user may hold; the next connect gets 429 (the stack's
    /// webchat:connectionsPerUser). 0: no limit.
    #[arg(long, default_value_t = LimitSettings::default().connections_per_user,
          value_parser = clap::value_parser!(u32).range(0..=1_000))]
    connections_per_user: u32,

    /// Refuse every broadcast to everyone (forbidden): rooms only (the stack's
    /// webchat:everyoneBroadcast false).
    #[arg(long)]
    no_everyone_broadcast: bool,

    /// Every per-client limit off: for benchmarks and tests that are not about limits.
    #[arg(long, conflicts_with_all = ["frame_rate", "frame_burst", "user_frame_rate",
          "delivery_budget", "connections_per_user", "no_everyone_broadcast"])]
    no_limits: bool,

    /// How often `cleanup` runs (0 never): it removes records of connections that are gone.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    cleanup_interval: Duration,

    /// Sign-in with tokens of this OpenID issuer (its iss; https://, or http:// on localhost):
    /// its keys come from <URL>/.well-known/openid-configuration. Needs --jwt-audience.
    #[arg(long, value_name = "URL", requires = "jwt_audience", value_parser = parse_issuer)]
    jwt_issuer: Option<webchat::auth::jwks::IssuerUrl>,

    /// The audience tokens must be for: their aud, or a Cognito access token's client_id.
    #[arg(long, value_name = "AUD", requires = "jwt_issuer")]
    jwt_audience: Option<String>,

    /// Sign-in with webchat-local as its own issuer: a key made at start, discovery and JWKS on
    /// this port, and GET /dev/token?name=NAME (from this machine only) for a one-hour token.
    #[arg(long, conflicts_with_all = ["jwt_issuer", "jwt_audience"])]
    dev_issuer: bool,

    /// Log level (error, warn, info, debug, trace, off) or filter (e.g. webchat=debug,info);
    /// overrides RUST_LOG and LOG_LEVEL.
    #[arg(long, value_parser = parse_log_level)]
    log_level: Option<String>,

    /// Log lines as `text` (for a terminal) or `json` (as the Lambda functions write them).
    #[arg(long, value_enum, default_value = "text")]
    log_format: Format,

    /// Export spans over OTLP/HTTP to this collector, e.g. http://localhost:4318 (an ADOT or
    /// OpenTelemetry collector, or Jaeger). Without it, spans only give log lines their trace id.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// `--listen`: an address, a host and port, or a port alone (on 127.0.0.1).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let usage =
        "give an address (127.0.0.1:3001), a host and port (localhost:3001) or a port (3001)";
    let addresses: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|error| format!("{text:?} is not an address to listen on ({error}); {usage}"))?
        .collect();
    // localhost may name ::1 and 127.0.0.1: IPv4 first, as the printed URL and wscat expect
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("{text:?} names no address; {usage}"))
}

/// `--jwt-issuer`: an issuer keys can be fetched from safely.
fn parse_issuer(text: &str) -> Result<webchat::auth::jwks::IssuerUrl, String> {
    webchat::auth::jwks::IssuerUrl::parse(text)
}

/// A size that can hold a chat frame at all.
fn at_least_1_kib(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of bytes"))?;
    if bytes < 1024 {
        return Err(format!(
            "{bytes} bytes cannot hold a chat frame: give at least 1024"
        ));
    }
    Ok(bytes)
}

/// A duration for a limit that closes connections: zero would close each one at once.
fn more_than_zero(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if duration.is_zero() {
        return Err("0 would close every connection at once: give a duration such as 10m".into());
    }
    Ok(duration)
}

/// `--log-level`: a level, or a filter of `target=level` directives. A bare word that is not a
/// level would silently be read as a module name and turn every other line off.
fn parse_log_level(text: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{level:?} is not a log level: use one of {} (or a filter such as webchat=debug,info)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(text.to_owned())
}

/// A user's mistake is one line on stderr and exit status 1, never a backtrace.
fn main() {
    webchat::tool::exit_with("webchat-local", async {
        run(Args::parse()).await.map(|()| 0)
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let log_filter = match &args.log_level {
        Some(level) => level.clone(),
        None => match ["RUST_LOG", "LOG_LEVEL"]
            .into_iter()
            .find_map(|name| std::env::var(name).ok().map(|value| (name, value)))
        {
            // checked as --log-level is: a bare word that is no level would turn logging off
            Some((name, value)) => parse_log_level(&value)
                .map_err(|error| anyhow::anyhow!("{name}={value}: {error}"))?,
            None => "info".into(),
        },
    };
    let telemetry = telemetry::init(Options {
        service_name: "webchat-local".into(),
        log_filter,
        log_format: match args.log_format {
            Format::Text => LogFormat::Text,
            Format::Json => LogFormat::Json,
        },
        export: args
            .otlp_endpoint
            .clone()
            .map_or(Export::Disabled, Export::Endpoint),
    });
    let config = Config {
        stage: args.stage,
        limits: Limits {
            max_frame_bytes: args.max_frame_bytes,
            max_message_bytes: args.max_message_bytes,
            idle_timeout: args.idle_timeout,
            max_duration: args.max_connection_duration,
        },
        cleanup_interval: Some(args.cleanup_interval).filter(|interval| !interval.is_zero()),
        function_timeout: Some(args.function_timeout).filter(|timeout| !timeout.is_zero()),
        max_outbound_bytes: args.max_outbound_bytes,
        header_timeout: args.header_timeout,
        max_connections: args.max_connections,
        scan_page_size: args.scan_page_size.max(1),
        queue: webchat::local::QueueSettings {
            workers: args.fanout_workers.max(1),
            visibility_timeout: webchat::local::QueueSettings::visibility_for(
                Some(args.function_timeout).filter(|timeout| !timeout.is_zero()),
            ),
            ..Default::default()
        },
        settings: webchat::domain::Settings {
            post_rate: Some(args.post_rate).filter(|rate| *rate > 0),
            history_days: args.history_days,
            presence_limit: args.presence_limit,
            limits: if args.no_limits {
                webchat::domain::limits::Limits::off()
            } else {
                LimitSettings {
                    frame_rate: args.frame_rate,
                    frame_burst: args.frame_burst,
                    user_frame_rate: args.user_frame_rate,
                    delivery_budget: args.delivery_budget,
                    connections_per_user: args.connections_per_user,
                    everyone_broadcast: !args.no_everyone_broadcast,
                }
                .into()
            },
            ..Default::default()
        },
        auth: match (args.jwt_issuer, args.jwt_audience, args.dev_issuer) {
            (Some(issuer), Some(audience), _) => Some(Auth::Issuer { issuer, audience }),
            (_, _, true) => Some(Auth::Dev),
            _ => None,
        },
        ..Config::default()
    };
    // A client must be able to be owed at least one message of the largest size.
    let least = args.max_message_bytes.saturating_add(1024);
    if args.max_outbound_bytes < least {
        anyhow::bail!(
            "--max-outbound-bytes {} is too small: it must hold the largest message a client can \
             be sent (--max-message-bytes, plus 1 KiB), so at least {least}",
            args.max_outbound_bytes
        );
    }
    if !args.listen.ip().is_loopback() {
        let warning = format!(
            "WARNING: listening on {}, not a loopback address. Anyone who can reach this port can \
             post frames to any client and close any connection through the management API \
             (/@connections), which, as in AWS, has no authentication here. Listen on \
             127.0.0.1 unless this network is yours alone.",
            args.listen
        );
        eprintln!("{warning}");
        tracing::warn!("{warning}");
    }
    let stage = config.stage.clone();
    let gateway = match Gateway::bind(args.listen, config).await {
        Ok(gateway) => gateway,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {}: the address is in use (another webchat-local, or another \
             server, holds it). Stop that one, or listen elsewhere: --listen {} (or --listen 0 \
             for a free port)",
            args.listen,
            SocketAddr::new(args.listen.ip(), args.listen.port().wrapping_add(1).max(1)),
        ),
        Err(error) => anyhow::bail!("cannot listen on {}: {error}", args.listen),
    };
    let http = format!("http://{}", gateway.local_addr());
    println!("webchat-local is serving stage {stage:?}");
    println!("  chat:         {}", gateway.url());
    println!("  chat page:    {http}/");
    println!("  @connections: {http}/@connections/{{connectionId}}");
    match (gateway.dev_issuer(), gateway.sign_in()) {
        (Some(_), _) => {
            let token = format!("$(curl -s '{http}/dev/token?name=ada')");
            println!(
                "Sign-in: webchat-local is its own issuer (--dev-issuer); a connect needs a token"
            );
            println!("  a token:      curl -s '{http}/dev/token?name=ada'");
            println!("  chat page:    {http}/ (sign in with a name; two tabs, two people)");
            println!(
                "Connect with: npx wscat -c \"{}/?token={token}\"",
                gateway.url()
            );
        }
        (None, Some((issuer, audience))) => {
            println!("Sign-in: tokens of {issuer} for {audience}; a connect needs one");
            println!("  chat page:    {http}/ (paste a token, or add #token=<token> to the URL)");
            println!(
                "Connect with: npx wscat -c \"{}/?token=<token>\"",
                gateway.url()
            );
        }
        (None, None) => println!("Connect with: npx wscat -c {}", gateway.url()),
    }
    gateway.serve(shutdown_signal()).await?;
    telemetry.flush();
    Ok(())
}

/// Ctrl-C, or SIGTERM as sent by `kill`, systemd and container runtimes.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
