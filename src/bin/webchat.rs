//! `webchat`: the terminal client.

use std::time::Duration;

use clap::{Parser, Subcommand};
use webchat::client;

/// The webchat terminal client.
#[derive(Debug, Parser)]
#[command(name = "webchat", version)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Connect to a webchat stage and chat: type lines to send them, see frames as they arrive.
    ///
    /// A line of text is broadcast. Shortcuts: /list, /broadcast <text>, /chat <connection id>
    /// <text>, /help, /quit; a line that starts with { is sent as it is (raw JSON). At the end of
    /// the input (a pipe, Ctrl-D) the session waits --linger for answers, then closes. When the
    /// server closes the connection, the client exits: status 0 for a normal close (1000), 1
    /// otherwise.
    ///
    /// For a stage with sign-in (JWT auth, or webchat-local --dev-issuer / --jwt-issuer), --token
    /// (or WEBCHAT_TOKEN) gives the token: it goes in Sec-WebSocket-Protocol after webchat.v1, as
    /// a browser sends it. /to <user id> <text> then messages a person on every connection of
    /// theirs. For a stage with IAM auth on $connect, --iam signs the connect request with SigV4
    /// from the standard AWS credential chain (environment, --profile / AWS_PROFILE, SSO cache,
    /// instance role). --print-url prints the URL for wscat instead of connecting (signed, or with
    /// ?token=).
    #[command(verbatim_doc_comment)]
    Connect {
        /// The stage's URL: ws://127.0.0.1:3001 for webchat-local (http:// and a bare host:port
        /// work too), wss://abc123.execute-api.eu-west-1.amazonaws.com/stage for a deployed one.
        url: String,
        /// Sign the connect request with SigV4 (for stages with iamAuth).
        #[arg(long)]
        iam: bool,
        /// AWS profile for --iam (default: the standard chain's).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Region for --iam (default: from the URL's host).
        #[arg(long)]
        region: Option<String>,
        /// Display name: 1 to 32 of A-Z a-z 0-9 _ . - (a stage with sign-in takes the token's).
        #[arg(long)]
        name: Option<String>,
        /// A sign-in token (a JWT of the stage's issuer). webchat-local --dev-issuer mints one:
        /// curl -s 'http://127.0.0.1:3001/dev/token?name=you'
        #[arg(
            long,
            env = "WEBCHAT_TOKEN",
            hide_env_values = true,
            conflicts_with = "iam"
        )]
        token: Option<String>,
        /// Print the (signed) URL and exit, e.g. for wscat -c.
        #[arg(long)]
        print_url: bool,
        /// How long to wait for answers after the end of the input.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        linger: Duration,
    },
}

/// Exits as soon as the session ends (0, or 1 for a close other than 1000 and for a failure).
fn main() {
    webchat::tool::exit_with("webchat", async {
        Ok(match run(Cli::parse().command).await? {
            client::Ended::Quit | client::Ended::Closed(1000) => 0,
            client::Ended::Closed(_) | client::Ended::Lost => 1,
        })
    })
}

async fn run(command: Commands) -> anyhow::Result<client::Ended> {
    let Commands::Connect {
        url,
        iam,
        profile,
        region,
        name,
        token,
        print_url,
        linger,
    } = command;
    let token = token
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty());
    let mut url = client::websocket_url(&url).map_err(|error| anyhow::anyhow!(error))?;
    if let Some(name) = name.as_deref().filter(|name| !name.is_empty()) {
        webchat::protocol::validate_name(Some(name))
            .map_err(|error| anyhow::anyhow!("--name {name:?}: {}", error.message))?;
        url = client::with_name(&url, name);
    }
    if iam {
        url = client::sign_with_default_credentials(&url, profile.as_deref(), region.as_deref())
            .await?;
    }
    if print_url {
        match &token {
            Some(token) => println!("{}", client::with_parameter(&url, "token", token)),
            None => println!("{url}"),
        }
        return Ok(client::Ended::Quit);
    }
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    client::session(&url, token.as_deref(), stdin, tokio::io::stdout(), linger).await
}
