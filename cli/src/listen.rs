//! `listen`: print the events the server sends, one line each.

use std::io::Write;
use std::time::Instant;

use vuer_client::ServerEvent;

use crate::cli::{Common, ListenArgs};
use crate::connect;
use crate::error::CliError;
use crate::inbound::{self, Limits, Sink};
use crate::output::Printer;

/// Runs `listen`. Ctrl-C, `--count` and `--timeout` (without `--count`)
/// end it normally; so does a closed stdout (e.g. `| head -1`).
pub async fn run(common: &Common, args: ListenArgs) -> Result<(), CliError> {
    let mut client = connect::connect(common, inbound::tune).await?;
    let printer = Printer::new(args.print);
    let limits = Limits {
        count: args.count,
        timeout: args.timeout,
    };
    let mut sink = Stdout {
        printer,
        out: std::io::stdout(),
    };
    let result = inbound::read(
        &mut client,
        args.etype.as_deref(),
        limits,
        Instant::now(),
        &mut sink,
    )
    .await;
    let result = match result {
        Err(CliError::Runtime(m)) if m == BROKEN_PIPE => Ok(0),
        other => other,
    };
    let closed = connect::close(&client).await;
    result?;
    closed
}

struct Stdout {
    printer: Printer,
    out: std::io::Stdout,
}

impl Sink for Stdout {
    fn event(&mut self, ev: &ServerEvent, _t: f64) -> Result<(), CliError> {
        writeln!(self.out.lock(), "{}", self.printer.line(ev)).map_err(stdout_error)
    }

    fn idle(&mut self) -> Result<(), CliError> {
        self.out.lock().flush().map_err(stdout_error)
    }
}

const BROKEN_PIPE: &str = "stdout closed";

fn stdout_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::Runtime(BROKEN_PIPE.into())
    } else {
        CliError::io("cannot write to stdout", e)
    }
}
