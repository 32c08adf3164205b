//! `replay`: send the events of a JSON-lines file (see [`crate::jsonl`]) at
//! their recorded times: the line with `t` is sent `t / speed` seconds after
//! the replay started. Lines are read as they are due, so a replay can be
//! as long as the file; a bad line stops it there (exit code 5).

use std::time::{Duration, Instant};

use crate::cli::{Common, ReplayArgs};
use crate::connect;
use crate::error::CliError;
use crate::json::Floats;
use crate::jsonl::Reader;
use crate::signal::Interrupt;
use crate::stream::{finish, publish};

/// Runs `replay`.
pub async fn run(common: &Common, args: ReplayArgs) -> Result<(), CliError> {
    let floats = Floats::from_flag(args.f64);
    let default_reliable = !args.keyed;
    let mut reader = Reader::open(&args.file).await?;
    let client = connect::connect(common, |b| b).await?;
    let mut interrupt = Interrupt::install();
    let start = Instant::now();
    let produce = async {
        let t0 = tokio::time::Instant::from_std(start);
        while let Some((line_no, line)) = reader.next().await? {
            let Some(t) = line.t else {
                return Err(reader.error(
                    line_no,
                    "missing \"t\" (replay sends each line at its recorded time)",
                ));
            };
            tokio::time::sleep_until(t0 + Duration::from_secs_f64(t / args.speed)).await;
            let reliable = line.reliable.unwrap_or(default_reliable);
            let ev = line
                .to_event(floats, default_reliable)
                .map_err(|e| reader.error(line_no, e))?;
            publish(&client, &ev, reliable).await?;
        }
        Ok(())
    };
    let produced = tokio::select! {
        r = produce => r,
        _ = interrupt.wait() => Err(CliError::Interrupted),
    };
    finish(
        &client,
        "replay",
        produced,
        start,
        args.json,
        &mut interrupt,
    )
    .await
}
