//! How the command-line tools (`webchat-local`, `webchat`) end: a mistake is one line on stderr
//! and a failure status, never a backtrace, whatever `RUST_BACKTRACE` says.

use std::future::Future;

/// Runs `work` on a multi-threaded runtime and exits the process with the status it gives; an
/// error is printed as `name: error: cause`, with status 1. The process exits at once, without
/// waiting for blocking threads (a read of the standard input would otherwise hold it until one
/// more line is typed).
pub fn exit_with(name: &str, work: impl Future<Output = anyhow::Result<i32>>) -> ! {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start: {error}");
            std::process::exit(1)
        }
    };
    let code = runtime.block_on(work).unwrap_or_else(|error| {
        eprintln!("{name}: {error:#}");
        1
    });
    // Not `drop(runtime)`: that would wait for the blocking threads.
    std::process::exit(code)
}
