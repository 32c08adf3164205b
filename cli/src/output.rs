//! How `listen` (and `serve --print`) print an event: a readable line, or a
//! JSON line.
//!
//! Text: `ETYPE [key=K] [uuid=U] [rtype=R] DATA`, DATA rendered compactly
//! (bin as `<N bytes>`). JSON: `{"etype", "ts", "key", "uuid", "rtype",
//! "strict", "data"}`, absent fields left out, `data` converted as
//! [`crate::json`] describes.
//!
//! What the server controls (etype, key, uuid, rtype, string data, a close
//! reason) reaches a terminal only with its control characters escaped
//! (`\u{1b}` for ESC, and so on): raw, they could move the cursor, rewrite
//! earlier lines or change the terminal's title. JSON lines are escaped by
//! JSON itself.

use std::io::Write;

use serde_json::{Map, Value as Json};
use vuer_client::ServerEvent;

use crate::cli::PrintArgs;
use crate::error::CliError;
use crate::json::{self, Bin};

/// Formats events as lines.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    json: bool,
    bin: Bin,
}

impl Printer {
    /// From the `--json` / `--bin-summary` options.
    pub fn new(args: PrintArgs) -> Printer {
        Printer {
            json: args.json,
            bin: if args.bin_summary {
                Bin::Summary
            } else {
                Bin::Base64
            },
        }
    }

    /// One line (without the newline).
    pub fn line(&self, ev: &ServerEvent) -> String {
        // A payload that does not decode still gets a line saying so.
        let data = ev.data();
        if self.json {
            let mut m = Map::new();
            m.insert("etype".into(), Json::from(ev.etype()));
            if let Some(ts) = ev.ts() {
                m.insert("ts".into(), Json::from(ts));
            }
            let mut opt = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    m.insert(k.into(), Json::from(v));
                }
            };
            opt("key", ev.key());
            opt("uuid", ev.uuid());
            opt("rtype", ev.rtype());
            if let Some(s) = ev.strict() {
                m.insert("strict".into(), Json::Bool(s));
            }
            // Labelled as it came: a client's event (what `serve` sees)
            // carries `value`, a server's `data`.
            let name = ev.payload_name().unwrap_or("data");
            match data {
                Ok(v) => {
                    m.insert(name.into(), json::from_value(&v, self.bin));
                }
                Err(e) => {
                    m.insert(format!("{name}_error"), Json::from(e.to_string()));
                }
            }
            // JSON escapes C0 controls itself; DEL, C1 and bidirectional
            // formatting characters (only ever inside strings) get JSON's
            // own `\u` escapes.
            let line = Json::Object(m).to_string();
            if !line.chars().any(unsafe_char) {
                return line;
            }
            line.chars()
                .map(|c| {
                    if unsafe_char(c) {
                        format!("\\u{:04x}", c as u32)
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        } else {
            let mut s = ev.etype().to_owned();
            for (k, v) in [
                ("key", ev.key()),
                ("uuid", ev.uuid()),
                ("rtype", ev.rtype()),
            ] {
                if let Some(v) = v {
                    s.push_str(&format!(" {k}={v}"));
                }
            }
            match data {
                Ok(v) => s.push_str(&format!(" {v}")),
                Err(e) => s.push_str(&format!(
                    " <undecodable {}: {e}>",
                    ev.payload_name().unwrap_or("data")
                )),
            }
            escape_controls(&s).into_owned()
        }
    }
}

/// A character that must not reach a terminal raw.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character (C0, DEL, C1) and every bidirectional
/// formatting character written as a `\u{..}` escape: text from the
/// server, made safe to print on a terminal.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes a line to stdout. A closed stdout (`| head`) is not an error:
/// the reader has what it wanted. (`println!` would panic.)
pub fn out(line: &str) -> Result<(), CliError> {
    let mut o = std::io::stdout().lock();
    match writeln!(o, "{line}").and_then(|_| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::io("cannot write to stdout", e))
        }
        _ => Ok(()),
    }
}

/// Writes to stderr, ignoring errors (there is nowhere left to report
/// them; `eprint!` would panic).
pub fn err(text: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(text).and_then(|_| e.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use vuer_client::Value;

    fn event() -> ServerEvent {
        let frame = Value::map([
            ("ts", Value::Int(5)),
            ("data", Value::map([("b", Value::Bin(vec![1, 2]))])),
            ("etype", Value::from("UPSERT")),
            ("key", Value::from("k")),
        ])
        .to_msgpack();
        ServerEvent::from_msgpack(frame.into()).unwrap()
    }

    #[test]
    fn server_strings_cannot_drive_the_terminal() {
        // Issue 14, item 8: etype, key, uuid and rtype were printed raw.
        let frame = Value::map([
            ("ts", Value::Int(5)),
            ("data", Value::from("\x1b[2J")),
            ("etype", Value::from("EV\x1b]0;pwned\x07")),
            ("key", Value::from("k\nFAKE LINE")),
            ("uuid", Value::from("\u{202e}txt.exe")),
        ])
        .to_msgpack();
        let ev = ServerEvent::from_msgpack(frame.into()).unwrap();
        let p = Printer::new(PrintArgs {
            json: false,
            bin_summary: false,
        });
        let line = p.line(&ev);
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{line:?}"
        );
        assert!(line.contains("EV\\u{1b}]0;pwned\\u{7}"), "{line}");
        assert!(line.contains("key=k\\u{a}FAKE LINE"), "{line}");
        let p = Printer::new(PrintArgs {
            json: true,
            bin_summary: false,
        });
        let line = p.line(&ev);
        assert!(!line.chars().any(unsafe_char), "{line:?}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            back["uuid"], "\u{202e}txt.exe",
            "still valid JSON, same content"
        );
    }

    #[test]
    fn a_clients_value_is_labelled_value() {
        // Issue 16: `serve --print` showed a client's `value` as `data`.
        let frame = Value::map([
            ("ts", Value::Int(5)),
            ("etype", Value::from("SET_POSITION")),
            ("value", Value::from([1i64, 2, 3])),
        ])
        .to_msgpack();
        let ev = ServerEvent::from_msgpack(frame.into()).unwrap();
        let p = Printer::new(PrintArgs {
            json: true,
            bin_summary: false,
        });
        assert_eq!(
            p.line(&ev),
            r#"{"etype":"SET_POSITION","ts":5,"value":[1,2,3]}"#
        );
    }

    #[test]
    fn text_and_json_lines() {
        let p = Printer::new(PrintArgs {
            json: false,
            bin_summary: false,
        });
        assert_eq!(p.line(&event()), r#"UPSERT key=k {"b": <2 bytes>}"#);
        let p = Printer::new(PrintArgs {
            json: true,
            bin_summary: false,
        });
        assert_eq!(
            p.line(&event()),
            r#"{"etype":"UPSERT","ts":5,"key":"k","data":{"b":{"$bin":"AQI="}}}"#
        );
        let p = Printer::new(PrintArgs {
            json: true,
            bin_summary: true,
        });
        assert!(p.line(&event()).contains(r#"{"$bin_len":2}"#));
    }
}
