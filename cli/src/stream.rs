//! `stream`: the Vuer docs' remote-control example, generalised.
//!
//! Synthetic mode publishes `--keys` pose streams at `--rate` Hz each: key
//! `k` follows the docs' sine path (`x = 2 sin(τ)`, `y = 0.5 + 0.3 sin(2τ)`,
//! `z = 0`, τ advancing 3 rad/s, i.e. 0.05 per frame at 60 Hz) shifted by
//! a phase of `2πk/keys`. Each event is a `DynEvent` with `.key(...)`, so
//! when the link is slower than the producer only the newest pose of each
//! key is sent (coalescing); `--reliable` delivers every one.
//!
//! `--from FILE|-` sends the events of a JSON-lines file (see
//! [`crate::jsonl`]) as they are read, optionally capped by `--rate`.

use std::time::{Duration, Instant};

use vuer_client::{DynEvent, PublishError, Value, VuerClient};

use crate::cli::{Common, StreamArgs};
use crate::connect;
use crate::error::CliError;
use crate::json::{self, Bin, Floats};
use crate::jsonl::{round_us, Line, Reader, Writer};
use crate::report;
use crate::signal::Interrupt;

/// Runs `stream`.
pub async fn run(common: &Common, args: StreamArgs) -> Result<(), CliError> {
    let floats = Floats::from_flag(args.f64);
    // Open files before connecting: a wrong path costs no connection.
    let mut reader = match &args.from {
        Some(p) => Some(Reader::open(p).await?),
        None => None,
    };
    let mut outbound = args.outbound.as_deref().map(Writer::create).transpose()?;
    let client = connect::connect(common, |b| b).await?;
    let mut interrupt = Interrupt::install();
    let start = Instant::now();
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::from_std(start) + Duration::from_secs_f64(d));
    let mut out = Outbound {
        writer: outbound.as_mut(),
        start,
    };
    let produced = {
        let produce = async {
            match reader.as_mut() {
                Some(r) => from_file(&client, &args, floats, r, &mut out).await,
                None => synthetic(&client, &args, floats, start, &mut out).await,
            }
        };
        tokio::select! {
            r = produce => r,
            _ = sleep_until(deadline) => Ok(()),
            _ = interrupt.wait() => Err(CliError::Interrupted),
        }
    };
    if let Some(w) = outbound.as_mut() {
        w.flush()?;
    }
    finish(
        &client,
        "stream",
        produced,
        start,
        args.json,
        &mut interrupt,
    )
    .await
}

/// The end of `stream` and `replay`: closes (delivering what is still
/// queued, within --close-timeout; Ctrl-C cuts it short), prints the
/// summary, and reports the first error: producing, closing, printing.
pub async fn finish(
    client: &VuerClient,
    command: &str,
    produced: Result<(), CliError>,
    start: Instant,
    json: bool,
    interrupt: &mut Interrupt,
) -> Result<(), CliError> {
    let elapsed = start.elapsed().as_secs_f64();
    let closed = tokio::select! {
        r = connect::close(client) => r,
        _ = interrupt.wait() => Err(CliError::Interrupted),
    };
    // After close: nothing is pending any more, every figure is final.
    let stats = client.stats();
    let printed = crate::output::out(&report::summary(command, &stats, elapsed, json));
    produced?;
    closed?;
    printed
}

/// Where `--outbound` writes the published events.
struct Outbound<'a> {
    writer: Option<&'a mut Writer>,
    start: Instant,
}

impl Outbound<'_> {
    fn write(&mut self, line: impl FnOnce(f64) -> Line) -> Result<(), CliError> {
        match &mut self.writer {
            Some(w) => w.write(&line(round_us(self.start.elapsed().as_secs_f64()))),
            None => Ok(()),
        }
    }
}

/// Queues one event: reliable ones wait for room; keyed ones never wait
/// unless the queue is full of distinct keys.
pub async fn publish(client: &VuerClient, ev: &DynEvent, reliable: bool) -> Result<(), CliError> {
    if reliable {
        return client.send(ev).await.map_err(CliError::from);
    }
    match client.publish(ev) {
        Err(PublishError::Full { .. }) => client.send(ev).await.map_err(CliError::from),
        other => other.map_err(CliError::from),
    }
}

/// The synthetic pose of key `k` of `n` at time `t` seconds.
fn pose(t: f64, k: usize, n: usize) -> [f64; 3] {
    let tau = 3.0 * t + std::f64::consts::TAU * k as f64 / n as f64;
    [tau.sin() * 2.0, 0.5 + (2.0 * tau).sin() * 0.3, 0.0]
}

async fn synthetic(
    client: &VuerClient,
    args: &StreamArgs,
    floats: Floats,
    start: Instant,
    out: &mut Outbound<'_>,
) -> Result<(), CliError> {
    let rate = args.rate.unwrap_or(60.0);
    let keys: Vec<String> = (0..args.keys)
        .map(|k| format!("{}-{k}", args.key_prefix))
        .collect();
    let start = tokio::time::Instant::from_std(start);
    let mut published = 0u64;
    for tick in 0u64.. {
        // Absolute deadlines: the average rate stays exact whatever the
        // timer's granularity (late ticks are caught up at once).
        tokio::time::sleep_until(start + Duration::from_secs_f64(tick as f64 / rate)).await;
        let t = tick as f64 / rate;
        for (k, key) in keys.iter().enumerate() {
            if args.events.is_some_and(|n| published >= n) {
                return Ok(());
            }
            let p = pose(t, k, keys.len());
            let value = match floats {
                Floats::F32 => Value::from(p.map(|x| x as f32)),
                Floats::F64 => Value::from(p),
            };
            let mut ev = DynEvent::new(args.etype.clone())
                .key(key.clone())
                .value(value.clone());
            if !args.reliable {
                ev = ev.latest();
            }
            publish(client, &ev, args.reliable).await?;
            published += 1;
            out.write(|t| Line {
                t: Some(t),
                etype: args.etype.clone(),
                key: Some(key.clone()),
                ts: None,
                uuid: None,
                rtype: None,
                strict: None,
                reliable: Some(args.reliable),
                value: json::from_value(&value, Bin::Base64),
            })?;
        }
    }
    Ok(())
}

async fn from_file(
    client: &VuerClient,
    args: &StreamArgs,
    floats: Floats,
    reader: &mut Reader,
    out: &mut Outbound<'_>,
) -> Result<(), CliError> {
    let start = tokio::time::Instant::now();
    let mut published = 0u64;
    while let Some((line_no, mut line)) = reader.next().await? {
        if args.events.is_some_and(|n| published >= n) {
            break;
        }
        if let Some(rate) = args.rate {
            tokio::time::sleep_until(start + Duration::from_secs_f64(published as f64 / rate))
                .await;
        }
        let reliable = line.reliable.unwrap_or(args.reliable);
        let ev = line
            .to_event(floats, args.reliable)
            .map_err(|e| reader.error(line_no, e))?;
        publish(client, &ev, reliable).await?;
        published += 1;
        out.write(|t| {
            line.t = Some(t);
            line.reliable = Some(reliable);
            line
        })?;
    }
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::pose;

    #[test]
    fn key_zero_follows_the_docs_example() {
        // The docs: t = i * 0.05 per 60 Hz frame, x = sin(t) * 2,
        // y = 0.5 + sin(2t) * 0.3.
        for i in 0..10 {
            let p = pose(i as f64 / 60.0, 0, 1);
            let t = i as f64 * 0.05;
            assert!((p[0] - t.sin() * 2.0).abs() < 1e-9);
            assert!((p[1] - (0.5 + (2.0 * t).sin() * 0.3)).abs() < 1e-9);
        }
    }
}
