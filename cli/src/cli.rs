//! The command-line syntax (clap derive): global options and one argument
//! struct per command. Parsing only; the commands live in their own modules.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Text shown after `--help`: the exit codes and the JSON-lines format.
const AFTER_HELP: &str = "\
Exit codes:
  0    success (for listen, record and serve, Ctrl-C is a normal end)
  1    failure at run time (I/O error, event refused, bench shortfall)
  2    usage error (bad arguments or argument values, invalid URI)
  3    cannot connect (refused, unresolvable host, TLS, HTTP upgrade)
  4    connection lost (the server closed or dropped the connection)
  5    invalid input data (a line of a JSON-lines file)
  6    timed out (listen/record: --timeout passed before --count events)
  130  interrupted by Ctrl-C (stream, replay, bench; the summary is printed)

Event files (record, replay, stream --from) are JSON lines, one event per line:
  {\"t\": 0.125, \"etype\": \"SET_POSITION\", \"key\": \"pose-0\", \"value\": [0.1, 0.5, 0.0]}
See `vuer-client replay --help` for every field.";

/// The JSON-lines format, shown by the commands that read or write it.
pub const FORMAT_HELP: &str = "\
Event file format (JSON lines; record writes it, replay and stream --from read it):
  one JSON object per line; blank lines are skipped; unknown fields are errors.
  t         seconds since the start of the recording (float); required by
            replay, ignored by stream --from
  etype     the event type (string, required)
  key       the top-level component key (string, optional)
  value     the event's value (any JSON, default null); floats are sent as
            f32 unless --f64; {\"$bin\": \"<base64>\"} is msgpack bin,
            {\"$ext\": [TYPE, \"<base64>\"]} a msgpack extension
  reliable  true: never coalesce this event; false: coalesce per (etype, key);
            absent: the command's default
  ts, uuid, rtype, strict
            written by record for information (the server's ts in ms, RPC
            fields, UPDATE's strict flag); ignored when sending
Floats that are NaN or infinite are written as null.";

/// What `bench` sends and measures.
const BENCH_HELP: &str = "\
Events: SET_POSITION, value {\"position\": [x, y, z] (f32), \"t_ns\": <wall clock
at publish, ns>} (+ \"pad\": bin with --payload-bytes), keyed per key unless
--reliable. Vuer's remote-control example server upserts a box at `position`.

Without --uri: an in-process server on its own runtime and threads measures
what it receives and the one-way latency (receive time - t_ns, HDR histogram).
With --uri: the client's figures, plus the server's answers (--ack-etype)
counted as acknowledged; server-side counts and latency need the local server.
Client CPU: user+system time of the client runtime's threads and the producer
thread, from the producer's start to the end of the drain.
On a terminal, a live line on stderr every 250 ms; --json for one JSON object.";

/// A streaming client for Vuer servers (vuer 0.1.6 wire protocol).
#[derive(Parser, Debug)]
#[command(name = "vuer-client", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub common: Common,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server URI, ws:// or wss:// [default: env VUER_CLIENT_URI, else
    /// ws://localhost:8012]. bench without --uri uses an in-process server;
    /// serve ignores it.
    #[arg(long, global = true, value_name = "URI")]
    pub uri: Option<String>,

    /// Do not verify the server's TLS certificate (self-signed wss://).
    /// The connection is still encrypted, but the server is not
    /// authenticated.
    #[arg(long, global = true)]
    pub insecure: bool,

    /// Log to stderr: -v info, -vv debug, -vvv trace (RUST_LOG, when set,
    /// chooses the filter instead).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Reconnect with backoff when the connection is lost (default: stop
    /// with exit code 4).
    #[arg(long, global = true)]
    pub reconnect: bool,

    /// Seconds allowed for each stage of connecting.
    #[arg(long, global = true, value_name = "S", default_value = "10", value_parser = parse_secs)]
    pub connect_timeout: f64,

    /// Seconds the final close may take: delivering what is still queued
    /// and having it confirmed (reconnecting at once with --reconnect),
    /// then the close handshake. Events it could not deliver are reported
    /// (exit 4).
    #[arg(long, global = true, value_name = "S", default_value = "5", value_parser = parse_secs)]
    pub close_timeout: f64,

    /// Sets a field of the INIT client info, e.g. `client="rust-teleop"`
    /// for `@app.spawn(client="rust*")`. VALUE is JSON, or a plain string
    /// when it is not valid JSON. Repeatable.
    #[arg(long = "init-field", global = true, value_name = "NAME=VALUE")]
    pub init_fields: Vec<String>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send one event, close once the server has confirmed it.
    Send(SendArgs),
    /// Print the events the server sends, one per line.
    Listen(ListenArgs),
    /// Stream synthetic poses (sine trajectories) or events from a
    /// JSON-lines file or stdin; print a summary at the end.
    Stream(StreamArgs),
    /// Write the events the server sends to a JSON-lines file (replayable).
    #[command(after_help = FORMAT_HELP)]
    Record(RecordArgs),
    /// Send the events of a JSON-lines file, keeping their recorded timing.
    #[command(after_help = FORMAT_HELP)]
    Replay(ReplayArgs),
    /// Run the crate's in-process Vuer-compatible server (no Python needed);
    /// Ctrl-C prints its counters and stops it.
    Serve(ServeArgs),
    /// Measure throughput, client CPU per event and one-way latency.
    #[command(after_help = BENCH_HELP)]
    Bench(BenchArgs),
}

/// `send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The event type, e.g. SET_POSITION.
    pub etype: String,
    /// The value as JSON (default: null); `-` reads it from stdin. Floats
    /// become f32 unless --f64; {"$bin": "<base64>"} becomes bin.
    pub value: Option<String>,
    /// The top-level `key` (a component key, e.g. defaultCamera).
    #[arg(long)]
    pub key: Option<String>,
    /// Send floats as f64 instead of f32.
    #[arg(long)]
    pub f64: bool,
}

/// Output options shared by `listen` and `serve --print`.
#[derive(Args, Debug, Clone, Copy)]
pub struct PrintArgs {
    /// JSON lines: {"etype", "ts", "key", "uuid", "rtype", "strict", "data"}
    /// (absent fields left out; bin as {"$bin": "<base64>"}).
    #[arg(long)]
    pub json: bool,
    /// Print bin values as {"$bin_len": N} instead of their bytes.
    #[arg(long)]
    pub bin_summary: bool,
}

/// `listen`.
#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Only events whose etype matches this glob (`*`, `?`), e.g. UPSERT or
    /// "GRAB_*".
    #[arg(long, value_name = "GLOB")]
    pub etype: Option<String>,
    #[command(flatten)]
    pub print: PrintArgs,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after S seconds (exit code 6 if --count was not reached), then
    /// close: at most --close-timeout more, less when the server answers.
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub timeout: Option<f64>,
}

/// `stream`.
#[derive(Args, Debug)]
pub struct StreamArgs {
    /// Events from this JSON-lines file (`-`: stdin) instead of synthetic
    /// poses, sent as they are read (their `t` is ignored; see replay).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Etype of the synthetic poses.
    #[arg(long, default_value = "SET_POSITION")]
    pub etype: String,
    /// Number of synthetic pose streams, each with its own key.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    pub keys: u32,
    /// Prefix of the keys: PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "pose")]
    pub key_prefix: String,
    /// Events per second per key (synthetic; default 60); with --from, caps
    /// the send rate (default: as fast as read).
    #[arg(long, value_name = "HZ", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Publish for S seconds (default: until Ctrl-C, or the end of
    /// --from), then close: at most --close-timeout more.
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Stop after N events in total.
    #[arg(long, value_name = "N")]
    pub events: Option<u64>,
    /// Deliver every event (no coalescing): with --from, for lines without
    /// a `reliable` field. Default: keyed, latest value per (etype, key) wins.
    #[arg(long)]
    pub reliable: bool,
    /// Send floats as f64 instead of f32.
    #[arg(long)]
    pub f64: bool,
    /// Also write each published event to FILE (JSON lines, replayable).
    #[arg(long, value_name = "FILE")]
    pub outbound: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `record`.
#[derive(Args, Debug)]
pub struct RecordArgs {
    /// Output file (`-`: stdout). Overwritten.
    pub file: PathBuf,
    /// Only events whose etype matches this glob.
    #[arg(long, value_name = "GLOB")]
    pub etype: Option<String>,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after S seconds (exit code 6 if --count was not reached), then
    /// close: at most --close-timeout more, less when the server answers.
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub timeout: Option<f64>,
}

/// `replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Input file (`-`: stdin).
    pub file: PathBuf,
    /// Time scale: 2 replays twice as fast, 0.5 at half speed.
    #[arg(long, default_value = "1", value_parser = parse_rate)]
    pub speed: f64,
    /// Coalesce lines without a `reliable` field per (etype, key) instead of
    /// delivering every one (the default: a replay reproduces the recording).
    #[arg(long)]
    pub keyed: bool,
    /// Send floats as f64 instead of f32.
    #[arg(long)]
    pub f64: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Port to listen on (0: any free port; the URI is printed).
    #[arg(long, default_value = "8012")]
    pub port: u16,
    /// Address to listen on (0.0.0.0 for other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Answer each event of this etype with an UPSERT of a Box at the
    /// event's position, as Vuer's remote-control example server does.
    #[arg(long, value_name = "ETYPE")]
    pub echo: Option<String>,
    /// Do not answer INIT with a SET of a small scene.
    #[arg(long)]
    pub no_scene: bool,
    /// Print every event received (as listen does).
    #[arg(long)]
    pub print: bool,
    #[command(flatten)]
    pub format: PrintArgs,
}

/// `bench`. The events are SET_POSITION with the value
/// `{"position": [x, y, z], "t_ns": <publish time>}` (Vuer's example server
/// upserts a box at `position`).
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Events per second in total (default: as fast as possible).
    #[arg(long, value_name = "HZ", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Number of keys (pose streams), published round robin.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    pub keys: u32,
    /// Stop after N events.
    #[arg(long, value_name = "N")]
    pub events: Option<u64>,
    /// Stop after S seconds (default 5 when --events is not given).
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Deliver every event (unkeyed, never coalesced). Default: keyed, the
    /// newest value per key wins when the link is slower than the producer.
    #[arg(long)]
    pub reliable: bool,
    /// Extra bytes of padding (a bin field) in each event.
    #[arg(long, value_name = "N", default_value = "0")]
    pub payload_bytes: usize,
    /// Local server only: answer each event with an UPSERT (as Vuer's
    /// remote-control example server does), counted as acknowledged.
    #[arg(long)]
    pub echo: bool,
    /// The etype of the server's answers, counted as acknowledged.
    #[arg(long, default_value = "UPSERT", value_name = "ETYPE")]
    pub ack_etype: String,
    /// Worker threads of the client's runtime.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u16).range(1..))]
    pub client_threads: u16,
    /// Worker threads of the in-process server's runtime.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u16).range(1..))]
    pub server_threads: u16,
    /// Seconds to wait, after the producer stops, for the queue to drain and
    /// the server to receive (or acknowledge) what was sent.
    #[arg(long, value_name = "S", default_value = "10", value_parser = parse_secs)]
    pub drain_timeout: f64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Seconds: a finite, non-negative number.
fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds (finite, >= 0)")),
    }
}

/// A rate or a speed: a finite, positive number.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn numbers_are_checked() {
        assert!(parse_secs("1.5").is_ok());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("inf").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("x").is_err());
    }
}
