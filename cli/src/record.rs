//! `record`: the server's events as JSON lines (see [`crate::jsonl`]), each
//! with `t`, the seconds between the connection and its arrival, so that
//! `replay` can send them again with the same timing.

use std::time::Instant;

use vuer_client::ServerEvent;

use crate::cli::{Common, RecordArgs};
use crate::connect;
use crate::error::CliError;
use crate::inbound::{self, Limits, Sink};
use crate::jsonl::{Line, Writer};

/// Runs `record`. Ctrl-C, `--count` and `--timeout` (without `--count`)
/// end it normally; the file is complete up to the last event in any case.
pub async fn run(common: &Common, args: RecordArgs) -> Result<(), CliError> {
    let writer = Writer::create(&args.file)?;
    let mut client = connect::connect(common, inbound::tune).await?;
    let start = Instant::now();
    let limits = Limits {
        count: args.count,
        timeout: args.timeout,
    };
    let mut sink = Recorder {
        writer,
        undecodable: 0,
    };
    let result = inbound::read(&mut client, args.etype.as_deref(), limits, start, &mut sink).await;
    let flushed = sink.writer.flush();
    let closed = connect::close(&client).await;
    let n = result?;
    flushed?;
    if sink.undecodable > 0 {
        crate::output::err(format_args!(
            "vuer-client: {} events with undecodable data were not recorded\n",
            sink.undecodable
        ));
    }
    tracing::info!(events = n, "recorded");
    closed
}

struct Recorder {
    writer: Writer,
    undecodable: u64,
}

impl Sink for Recorder {
    fn event(&mut self, ev: &ServerEvent, t: f64) -> Result<(), CliError> {
        match Line::from_server(ev, t) {
            Ok(line) => self.writer.write(&line),
            Err(e) => {
                // Counted and reported at the end; the recording goes on.
                self.undecodable += 1;
                tracing::warn!("{e}; not recorded");
                Ok(())
            }
        }
    }

    fn idle(&mut self) -> Result<(), CliError> {
        self.writer.flush()
    }
}
