//! The hostile-client probe: the scenarios of `tests/gateway/hostile.rs` (written once, in
//! `tests/gateway/scenarios.rs`) against a release `webchat-local` process, each on a fresh
//! server, with the figures a test does not print: the server's memory and open files, how long
//! each thing took.
//!
//!     cargo bench --bench hostile -- [--clients N]      (scripts/probe-hostile runs this)
//!
//! `--clients` is how many clients the load scenario holds (default 1000). Each server gets
//! RLIMIT_NOFILE 4096 (the half-sent scenario 256, the load scenario N + 256) and
//! `--log-level warn`; every scenario has a time limit, so the probe never hangs. Prints a table
//! (scenario, what was done, what was observed, PASS/FAIL); exits 1 if any scenario failed or its
//! server died.

#[path = "../tests/gateway/scenarios.rs"]
mod scenarios;
#[path = "../tests/support/mod.rs"]
mod support;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use scenarios::{Report, Target};
use support::LocalProcess;

struct Args {
    clients: usize,
    /// Only the scenarios whose title contains this.
    only: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        clients: 1000,
        only: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--clients" => {
                args.clients = given
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--clients takes a number")
            }
            "--only" => args.only = Some(given.next().expect("--only takes a title's word")),
            "--bench" => {}
            "--help" | "-h" => {
                println!(
                    "cargo bench --bench hostile -- [--clients N] [--only WORD]   (default 1000 clients; only the scenarios whose title has WORD)"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (try --help)"),
        }
    }
    args
}

type Run = Box<dyn FnOnce(LocalProcess) -> Pin<Box<dyn Future<Output = Report>>>>;

/// One scenario: its title, its time limit, the open-file limit of its server, and how it runs.
struct Scenario {
    title: &'static str,
    limit: Duration,
    files: u64,
    /// The server's flags: `--no-limits` unless the scenario is about the limits (issue 23).
    args: &'static [&'static str],
    run: Run,
}

fn target(server: &LocalProcess) -> Target {
    Target {
        addr: server.addr(),
        pid: Some(server.pid()),
    }
}

/// A scenario that needs only the server's address and pid.
fn simple<F, Fut>(title: &'static str, limit: u64, scenario: F) -> Scenario
where
    F: FnOnce(Target) -> Fut + 'static,
    Fut: Future<Output = Report> + 'static,
{
    Scenario {
        title,
        limit: Duration::from_secs(limit),
        files: 4096,
        args: &["--no-limits"],
        run: Box::new(move |server| {
            Box::pin(async move {
                let report = scenario(target(&server)).await;
                died(server, report)
            })
        }),
    }
}

/// The report, failed if the server died during the scenario.
fn died(mut server: LocalProcess, mut report: Report) -> Report {
    if let Ok(Some(status)) = server.child.try_wait() {
        report.observed += &format!("\nthe server process DIED ({status})");
        report.ok = false;
    }
    report
}

fn scenarios(args: &Args) -> Vec<Scenario> {
    let clients = args.clients;
    vec![
        simple("bad inputs", 180, scenarios::bad_inputs),
        simple("RFC 6455 violations", 60, scenarios::rfc_6455),
        simple("broken upgrades", 30, scenarios::broken_upgrades),
        simple("repeated query key", 30, scenarios::repeated_query),
        simple("@connections from a page", 30, scenarios::forged_post),
        Scenario {
            files: 4096.max(clients as u64 + 256),
            ..simple("load", 150, move |target| scenarios::load(target, clients))
        },
        simple("ping flood", 60, |target| {
            scenarios::ping_flood(target, Duration::from_secs(3))
        }),
        Scenario {
            files: 256,
            // the server's header timeout is 10 s: every held request is closed well within 40 s
            ..simple("half-sent requests", 90, |target| async move {
                scenarios::half_sent_requests(target, 300, Duration::from_secs(40))
                    .await
                    .report
            })
        },
        Scenario {
            title: "SIGTERM with a stuck client",
            limit: Duration::from_secs(60),
            files: 4096,
            args: &["--no-limits"],
            run: Box::new(|mut server| {
                Box::pin(async move {
                    let at = target(&server);
                    let stop = async move {
                        let pid = server.pid().to_string();
                        let _ = std::process::Command::new("kill")
                            .args(["-TERM", &pid])
                            .status();
                        let _ = server.child.wait().await;
                    };
                    // the server's shutdown grace is 2 s
                    scenarios::shutdown_with_a_stuck_client(at, Duration::from_secs(3), stop).await
                })
            }),
        },
        Scenario {
            args: &[],
            ..simple("flood, with the default limits", 120, |target| {
                scenarios::flood(target, true, 200, 5)
            })
        },
        simple("flood, --no-limits", 120, |target| {
            scenarios::flood(target, false, 200, 5)
        }),
    ]
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".into())
}

/// Word-wraps `text` (its own lines kept) to `width` columns.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

fn print_table(rows: &[[String; 5]]) {
    const WIDTHS: [usize; 5] = [2, 14, 34, 58, 6];
    let line = |cells: &[String; 5]| {
        let columns: Vec<Vec<String>> = cells
            .iter()
            .zip(WIDTHS)
            .map(|(cell, width)| wrap(cell, width))
            .collect();
        let height = columns.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..height {
            let parts: Vec<String> = columns
                .iter()
                .zip(WIDTHS)
                .map(|(column, width)| {
                    format!("{:width$}", column.get(i).map_or("", String::as_str))
                })
                .collect();
            println!("{}", parts.join(" | ").trim_end());
        }
    };
    let header = [
        "#",
        "scenario",
        "what was done",
        "what was observed",
        "result",
    ];
    line(&header.map(str::to_owned));
    for row in rows {
        let rule: Vec<String> = WIDTHS.iter().map(|w| "-".repeat(*w)).collect();
        println!("{}", rule.join("-+-"));
        line(row);
    }
}

/// Raises this process's open-file limit to its hard limit (the load scenario holds a socket per
/// client); returns the hard limit, which no server's limit may exceed.
fn open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_max
}

fn main() {
    let args = args();
    let hard = open_files();
    let runtime = support::runtime();
    let binary = env!("CARGO_BIN_EXE_webchat-local");
    let logs = std::env::temp_dir().join(format!("probe-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&logs).expect("a directory for the servers' logs");
    println!(
        "probe-hostile: {binary}, {} clients, server logs in {}",
        args.clients,
        logs.display()
    );
    let mut all = scenarios(&args);
    if let Some(word) = &args.only {
        all.retain(|scenario| scenario.title.contains(word.as_str()));
    }
    let count = all.len();
    let started = Instant::now();
    let mut rows = Vec::new();
    for (number, scenario) in all.into_iter().enumerate() {
        let number = number + 1;
        eprint!("[{number}/{count}] {} ...", scenario.title);
        let began = Instant::now();
        let log = logs.join(format!("{number}.log"));
        let mut report = runtime.block_on(async {
            let files = scenario.files.min(hard);
            let server = LocalProcess::start_with_open_files(
                &[&["--log-level", "warn"], scenario.args].concat(),
                files,
                &log,
            )
            .await;
            let run = AssertUnwindSafe((scenario.run)(server)).catch_unwind();
            match tokio::time::timeout(scenario.limit, run).await {
                Ok(Ok(report)) => report,
                Ok(Err(panic)) => Report {
                    done: "-".into(),
                    observed: format!("the probe itself failed: {}", panic_message(&*panic)),
                    ok: false,
                },
                Err(_) => Report {
                    done: "-".into(),
                    observed: format!("timed out after {:?}", scenario.limit),
                    ok: false,
                },
            }
        });
        if !report.ok {
            report.observed += &format!("\nthe server's log: {}", log.display());
        }
        let verdict = if report.ok { "PASS" } else { "FAIL" };
        eprintln!(" {verdict} ({:.1} s)", began.elapsed().as_secs_f64());
        rows.push([
            number.to_string(),
            scenario.title.to_owned(),
            report.done,
            report.observed,
            verdict.to_owned(),
        ]);
    }
    println!();
    print_table(&rows);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|row| row[4] != "PASS")
        .map(|row| row[0].as_str())
        .collect();
    println!(
        "\n{} passed, {} failed{} in {:.0} s",
        rows.len() - failed.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        },
        started.elapsed().as_secs_f64()
    );
    // the servers are killed when dropped; the runtime goes before the exit
    drop(runtime);
    std::process::exit(i32::from(!failed.is_empty()));
}
