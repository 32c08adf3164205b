//! Reading the server's events for `listen` and `record`: an optional etype
//! filter (through [`VuerClient::subscribe`]), `--count`, `--timeout`,
//! Ctrl-C, and the end of the connection.
//!
//! With a filter, the events that do not match go to the client's main
//! queue; they are read and discarded so that the connection never stalls
//! (the client runs with [`InboundPolicy::Backpressure`], so nothing that
//! matches is dropped when the output is slow). A matching event that
//! arrived before the subscription existed is in the main queue too: the
//! main queue is read first and the same glob applied, so such an event is
//! neither lost nor reordered.

use std::time::{Duration, Instant};

use vuer_client::{ClientBuilder, InboundPolicy, ServerEvent, Subscription, VuerClient};

use crate::connect;
use crate::error::CliError;
use crate::signal::Interrupt;

/// The builder settings for a client that reads everything it is sent.
pub fn tune(b: ClientBuilder) -> ClientBuilder {
    b.inbound_policy(InboundPolicy::Backpressure)
}

/// When to stop reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Stop after this many seconds.
    pub timeout: Option<f64>,
}

/// The server's events, filtered.
struct Reader {
    filter: Option<(String, Subscription)>,
    main_done: bool,
    sub_done: bool,
}

impl Reader {
    fn new(client: &VuerClient, pattern: Option<&str>) -> Reader {
        Reader {
            filter: pattern.map(|p| (p.to_owned(), client.subscribe(p))),
            main_done: false,
            sub_done: false,
        }
    }

    /// A matching event that is queued now.
    fn try_next(&mut self, client: &mut VuerClient) -> Option<ServerEvent> {
        let Some((pattern, sub)) = &mut self.filter else {
            return client.try_recv();
        };
        while let Some(ev) = client.try_recv() {
            if vuer_client::etype_matches(pattern, ev.etype()) {
                return Some(ev);
            }
        }
        sub.try_recv()
    }

    /// The next matching event; `None` once the client is closed and
    /// everything queued was read.
    async fn next(&mut self, client: &mut VuerClient) -> Option<ServerEvent> {
        let Some((pattern, sub)) = &mut self.filter else {
            return client.recv().await;
        };
        loop {
            if self.main_done && self.sub_done {
                return None;
            }
            tokio::select! {
                biased;
                ev = client.recv(), if !self.main_done => match ev {
                    Some(ev) if vuer_client::etype_matches(pattern, ev.etype()) => return Some(ev),
                    Some(_) => continue,
                    None => self.main_done = true,
                },
                ev = sub.recv(), if !self.sub_done => match ev {
                    Some(ev) => return Some(ev),
                    None => self.sub_done = true,
                },
            }
        }
    }
}

/// What [`read`] hands the events to.
pub trait Sink {
    /// One event, received `t` seconds after the start.
    fn event(&mut self, ev: &ServerEvent, t: f64) -> Result<(), CliError>;
    /// No event is queued now: a good moment to flush output.
    fn idle(&mut self) -> Result<(), CliError>;
}

/// Reads events until a limit, Ctrl-C (a normal end) or the end of the
/// connection, handing each to `sink`; returns how many were read.
pub async fn read(
    client: &mut VuerClient,
    pattern: Option<&str>,
    limits: Limits,
    start: Instant,
    sink: &mut impl Sink,
) -> Result<u64, CliError> {
    let mut reader = Reader::new(client, pattern);
    let mut interrupt = Interrupt::install();
    let deadline = limits
        .timeout
        .map(|s| tokio::time::Instant::from_std(start) + Duration::from_secs_f64(s));
    let mut n = 0u64;
    loop {
        if limits.count.is_some_and(|c| n >= c) {
            return Ok(n);
        }
        let ev = match reader.try_next(client) {
            Some(ev) => ev,
            None => {
                sink.idle()?;
                tokio::select! {
                    biased;
                    _ = interrupt.wait() => return Ok(n),
                    _ = sleep_until(deadline) => {
                        return match limits.count {
                            Some(c) => Err(CliError::Timeout(format!(
                                "timed out after {} s with {n} of {c} events",
                                limits.timeout.unwrap_or_default()
                            ))),
                            None => Ok(n),
                        };
                    }
                    ev = reader.next(client) => match ev {
                        Some(ev) => ev,
                        None => return connect::ended(client).map(|_| n),
                    },
                }
            }
        };
        sink.event(&ev, start.elapsed().as_secs_f64())?;
        n += 1;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
