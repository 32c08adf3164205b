//! `vuer-client`: a command-line tool for Vuer servers, built on the
//! `vuer_client` crate's public API only.
//!
//! ```text
//! vuer-client send SET_POSITION '[0, 0.5, 0]'        one event
//! vuer-client listen --etype UPSERT --json           the server's events
//! vuer-client stream --keys 2 --rate 60 --duration 5 synthetic poses
//! vuer-client record session.jsonl                   record the server's events
//! vuer-client replay session.jsonl --speed 2         send them again
//! vuer-client serve --port 8012                      an in-process server
//! vuer-client bench --duration 5                     throughput, CPU, latency
//! ```
//!
//! Every command takes `--uri` (default: `VUER_CLIENT_URI`, else
//! `ws://localhost:8012`), `--insecure`, `-v`. Exit codes are listed in
//! `vuer-client --help` (see [`error::CliError::exit_code`]).
//!
//! Modules, one job each: [`cli`] (syntax), [`error`] (errors and exit
//! codes), [`json`] (JSON ↔ msgpack values), [`jsonl`] (the event file
//! format), [`connect`] (building the client), [`inbound`] (reading server
//! events), [`output`] (printing them), [`signal`] (Ctrl-C), [`report`]
//! (summaries), [`cpu`] (per-thread CPU time), and one module per command.

mod bench;
mod cli;
mod connect;
mod cpu;
mod error;
mod inbound;
mod json;
mod jsonl;
mod listen;
mod output;
mod record;
mod replay;
mod report;
mod send;
mod serve;
mod signal;
mod stream;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors
            // print to stderr and exit 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    init_tracing(cli.common.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, CliError::Interrupted) {
                // An error can carry the server's words (a close reason).
                let text = e.to_string();
                output::err(format_args!(
                    "vuer-client: {}\n",
                    output::escape_controls(&text)
                ));
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let Cli { common, command } = cli;
    let c = &common;
    match command {
        // bench builds its own runtimes (client and server apart, to
        // measure the client's CPU alone).
        Command::Bench(a) => bench::run(c, a),
        Command::Send(a) => on_runtime(send::run(c, a)),
        Command::Listen(a) => on_runtime(listen::run(c, a)),
        Command::Stream(a) => on_runtime(stream::run(c, a)),
        Command::Record(a) => on_runtime(record::run(c, a)),
        Command::Replay(a) => on_runtime(replay::run(c, a)),
        Command::Serve(a) => on_runtime(serve::run(a)),
    }
}

/// Runs a command on a multi-threaded tokio runtime (what most
/// applications use).
fn on_runtime(
    command: impl std::future::Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::io("cannot start the tokio runtime", e))?;
    let result = rt.block_on(command);
    // Tasks still running (e.g. a stdin reader blocked in a read) must not
    // keep the process alive.
    rt.shutdown_background();
    result
}

/// `-v` info, `-vv` debug, `-vvv` trace, on stderr; `RUST_LOG` (when set)
/// chooses the filter instead. Without `-v`, nothing is logged.
fn init_tracing(verbose: u8) {
    if verbose == 0 {
        return;
    }
    let level = match verbose {
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
