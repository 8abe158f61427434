//! What the integration-test binaries share (each `tests/` binary is its own crate and includes
//! this with `#[path]`): how long a test waits for something that should happen, how it waits
//! for a condition, and how it starts `webchat-local` on a free port.
#![allow(dead_code)] // each test binary uses its own part of it

use std::future::Future;
use std::time::Duration;

/// How long a test waits for something that should happen (a frame, an answer, a process's
/// exit) before it fails. Only failing tests wait this long; silence is checked with its own,
/// shorter, wait.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often [`poll_until`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// A multi-threaded runtime with every driver: what a bench's `main` runs its work on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Polls `check` until it gives a value; fails the test, naming `what`, after [`PATIENCE`].
pub async fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`poll_until`] for a check that is itself asynchronous (an HTTP request, a list).
pub async fn poll_until_async<T, F, Fut>(what: &str, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// `webchat-local` as its own process, listening on a free port (killed when dropped).
#[cfg(feature = "local")]
pub struct LocalProcess {
    pub child: tokio::process::Child,
    /// The `ws://` URL it printed.
    pub url: String,
}

/// `command` with its stderr written to a new file at `log`.
#[cfg(feature = "local")]
fn logging_to(
    mut command: tokio::process::Command,
    log: &std::path::Path,
) -> tokio::process::Command {
    command.stderr(std::fs::File::create(log).expect("a log file for webchat-local"));
    command
}

#[cfg(feature = "local")]
impl LocalProcess {
    /// Starts the binary with `args` (and `--listen 127.0.0.1:0` unless they listen), `envs` added to its
    /// environment; returns once it has printed its URL. Its stderr is dropped; its stdout is
    /// read to the end in the background.
    pub async fn start(args: &[&str], envs: &[(&str, &str)]) -> LocalProcess {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_webchat-local"));
        command.envs(envs.iter().copied());
        command.stderr(std::process::Stdio::null());
        LocalProcess::spawn(command, args).await
    }

    /// [`LocalProcess::start`] with its stderr (its log) written to `log`.
    pub async fn start_logged(args: &[&str], log: &std::path::Path) -> LocalProcess {
        let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_webchat-local"));
        LocalProcess::spawn(logging_to(command, log), args).await
    }

    /// [`LocalProcess::start_logged`] with at most `files` open files (RLIMIT_NOFILE, soft and
    /// hard, as `ulimit -n` sets it in the shell that then becomes the server: the same pid).
    pub async fn start_with_open_files(
        args: &[&str],
        files: u64,
        log: &std::path::Path,
    ) -> LocalProcess {
        let mut command = tokio::process::Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit -n {files} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_webchat-local"),
        ]);
        LocalProcess::spawn(logging_to(command, log), args).await
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        let host = self.url.trim_start_matches("ws://");
        let host = host.split('/').next().unwrap_or_default();
        host.parse().expect("a socket address in its URL")
    }

    async fn spawn(mut command: tokio::process::Command, args: &[&str]) -> LocalProcess {
        use tokio::io::{AsyncBufReadExt, BufReader};
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start webchat-local");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let url = tokio::time::timeout(PATIENCE, async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("webchat-local printed its URL");
                if let Some(at) = line.find("ws://") {
                    break line[at..].split_whitespace().next().unwrap().to_owned();
                }
            }
        })
        .await
        .expect("webchat-local started in time");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        LocalProcess { child, url }
    }
}
