//! The event file format shared by `record`, `replay` and `stream --from`
//! (and written by `stream --outbound`): JSON lines, one event per line.
//!
//! ```text
//! {"t": 0.0, "etype": "SET", "ts": 1764000000000, "value": {"tag": "Scene", ...}}
//! {"t": 0.125, "etype": "SET_POSITION", "key": "pose-0", "value": [0.1, 0.5, 0.0]}
//! {"t": 0.25, "etype": "CLICK", "reliable": true}
//! ```
//!
//! * `t`: seconds since the start of the recording (a float). `replay`
//!   requires it and waits until `t / speed` after its own start before
//!   sending the line; `stream --from` ignores it.
//! * `etype` (required): the event type.
//! * `key`: the top-level component key.
//! * `value`: any JSON (default `null`), converted as [`crate::json`]
//!   describes (floats as `f32` unless `--f64`, `{"$bin": "<base64>"}` for
//!   bin).
//! * `reliable`: `true` never coalesces the event, `false` coalesces it per
//!   `(etype, key)`; absent, the command's default applies.
//! * `ts`, `uuid`, `rtype`, `strict`: written by `record` for information
//!   (the server's `ts` in milliseconds, RPC fields, UPDATE's flag); they are
//!   accepted and ignored when sending.
//!
//! Blank lines are skipped. Any other field is an error (a typo such as
//! `"vaule"` would otherwise send a null value silently).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use vuer_client::{DynEvent, ServerEvent};

use crate::error::CliError;
use crate::json::{self, Bin, Floats};

/// One line of an event file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Seconds since the start of the recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// The event type.
    pub etype: String,
    /// The top-level key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The server's `ts` (milliseconds), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// An RPC request's id, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// An RPC request's answer etype, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtype: Option<String>,
    /// UPDATE's `strict` flag, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Overrides the command's delivery mode for this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliable: Option<bool>,
    /// The value.
    #[serde(default)]
    pub value: Json,
}

impl Line {
    /// A line for an event the server sent, received `t` seconds after the
    /// start.
    pub fn from_server(ev: &ServerEvent, t: f64) -> Result<Line, String> {
        let data = ev
            .data()
            .map_err(|e| format!("cannot decode the data of a {} event: {e}", ev.etype()))?;
        Ok(Line {
            t: Some(round_us(t)),
            etype: ev.etype().to_owned(),
            key: ev.key().map(str::to_owned),
            ts: ev.ts(),
            uuid: ev.uuid().map(str::to_owned),
            rtype: ev.rtype().map(str::to_owned),
            strict: ev.strict(),
            reliable: None,
            value: json::from_value(&data, Bin::Base64),
        })
    }

    /// The event to send: coalesced unless reliable (this line's
    /// `reliable`, else `default_reliable`).
    pub fn to_event(&self, floats: Floats, default_reliable: bool) -> Result<DynEvent, String> {
        let value = json::to_value(&self.value, floats)?;
        let mut ev = DynEvent::new(self.etype.clone()).value(value);
        if let Some(k) = &self.key {
            ev = ev.key(k.clone());
        }
        if self.reliable.unwrap_or(default_reliable) {
            ev = ev.reliable();
        } else {
            ev = ev.latest();
        }
        Ok(ev)
    }

    /// Parses one line. `None` for a blank line.
    pub fn parse(text: &str) -> Result<Option<Line>, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        // Each line is parsed alone: serde_json's "at line 1 column N"
        // would contradict the caller's `file:line`, so only the column is
        // kept.
        let line: Line = serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            match msg.rfind(" at line ") {
                Some(i) => format!("{} (column {})", &msg[..i], e.column()),
                None => msg,
            }
        })?;
        if let Some(t) = line.t {
            if !t.is_finite() || t < 0.0 {
                return Err(format!("\"t\" must be a finite number >= 0, not {t}"));
            }
        }
        Ok(Some(line))
    }
}

/// Microsecond precision is plenty and keeps lines short.
pub fn round_us(t: f64) -> f64 {
    (t * 1e6).round() / 1e6
}

/// Reads event lines from a file or stdin (`-`), asynchronously, so that
/// `stream --from -` sends each line as soon as it arrives.
pub struct Reader {
    lines: Lines<BufReader<Box<dyn AsyncRead + Unpin + Send>>>,
    name: String,
    line_no: u64,
}

impl Reader {
    /// Opens `path` (`-`: stdin).
    pub async fn open(path: &Path) -> Result<Reader, CliError> {
        let (input, name): (Box<dyn AsyncRead + Unpin + Send>, String) = if path == Path::new("-") {
            (Box::new(tokio::io::stdin()), "<stdin>".into())
        } else {
            let f = tokio::fs::File::open(path)
                .await
                .map_err(|e| CliError::io(format!("cannot open {}", path.display()), e))?;
            (Box::new(f), path.display().to_string())
        };
        Ok(Reader {
            lines: BufReader::new(input).lines(),
            name,
            line_no: 0,
        })
    }

    /// The next event line with its number; `None` at the end. A line that
    /// does not parse is an [`CliError::Input`] naming the file and line.
    pub async fn next(&mut self) -> Result<Option<(u64, Line)>, CliError> {
        loop {
            let text = self
                .lines
                .next_line()
                .await
                .map_err(|e| CliError::io(format!("cannot read {}", self.name), e))?;
            let Some(text) = text else { return Ok(None) };
            self.line_no += 1;
            match Line::parse(&text) {
                Ok(Some(line)) => return Ok(Some((self.line_no, line))),
                Ok(None) => continue,
                Err(e) => return Err(self.error(self.line_no, e)),
            }
        }
    }

    /// An input error at `line_no`.
    pub fn error(&self, line_no: u64, msg: impl std::fmt::Display) -> CliError {
        CliError::Input(format!("{}:{line_no}: {msg}", self.name))
    }
}

/// Writes event lines to a file or stdout (`-`), buffered.
pub struct Writer {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    name: String,
}

impl Writer {
    /// Creates (truncates) `path`; `-` is stdout.
    pub fn create(path: &Path) -> Result<Writer, CliError> {
        let (out, name): (Box<dyn Write + Send>, String) = if path == Path::new("-") {
            (Box::new(std::io::stdout()), "<stdout>".into())
        } else {
            let f = std::fs::File::create(path)
                .map_err(|e| CliError::io(format!("cannot create {}", path.display()), e))?;
            (Box::new(f), path.display().to_string())
        };
        Ok(Writer {
            out: std::io::BufWriter::with_capacity(64 << 10, out),
            name,
        })
    }

    /// Writes one line (buffered; see [`flush`](Self::flush)).
    pub fn write(&mut self, line: &Line) -> Result<(), CliError> {
        serde_json::to_writer(&mut self.out, line)
            .map_err(std::io::Error::from)
            .and_then(|_| self.out.write_all(b"\n"))
            .map_err(|e| CliError::io(format!("cannot write {}", self.name), e))
    }

    /// Writes what is buffered.
    pub fn flush(&mut self) -> Result<(), CliError> {
        self.out
            .flush()
            .map_err(|e| CliError::io(format!("cannot write {}", self.name), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vuer_client::Value;

    #[test]
    fn lines_parse_with_defaults_and_reject_typos() {
        let l = Line::parse(r#"{"t": 0.5, "etype": "X"}"#).unwrap().unwrap();
        assert_eq!(l.t, Some(0.5));
        assert_eq!(l.value, Json::Null);
        assert!(Line::parse("  ").unwrap().is_none());
        let e = Line::parse(r#"{"etype": "X", "vaule": 1}"#).unwrap_err();
        assert!(e.contains("vaule"), "{e}");
        assert!(Line::parse(r#"{"t": 1}"#).unwrap_err().contains("etype"));
        assert!(Line::parse(r#"{"t": -1, "etype": "X"}"#).is_err());
        assert!(Line::parse("[1]").is_err());
    }

    #[test]
    fn a_bad_line_names_its_column_not_a_line_of_its_own() {
        // Issue 16: `<stdin>:2: ... at line 1 column 24` named two lines.
        let e = Line::parse(r#"{"etype": "X", "vaule": 1}"#).unwrap_err();
        assert!(!e.contains("line"), "{e}");
        assert!(
            e.contains("unknown field `vaule`") && e.contains("(column "),
            "{e}"
        );
    }

    #[test]
    fn a_server_event_round_trips_through_a_line() {
        let frame = Value::map([
            ("ts", Value::Int(1_700_000_000_123)),
            (
                "data",
                Value::map([("position", Value::from([0.1f32, 0.5, 0.0]))]),
            ),
            ("etype", Value::from("UPSERT")),
            ("key", Value::from("box")),
        ])
        .to_msgpack();
        let ev = ServerEvent::from_msgpack(frame.into()).unwrap();
        let line = Line::from_server(&ev, 1.234_567_89).unwrap();
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"t":1.234568,"etype":"UPSERT","key":"box","ts":1700000000123,"value":{"position":[0.1,0.5,0.0]}}"#
        );
        let back = Line::parse(&text).unwrap().unwrap();
        assert_eq!(back, line);
        let ev = back.to_event(Floats::F32, true).unwrap();
        assert_eq!(ev.etype(), "UPSERT");
    }
}
