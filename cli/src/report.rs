//! The end-of-run summary of `stream` and `replay`, from the client's
//! [`Stats`]: every figure is a counter the client kept, and the rates
//! divide them by the measured elapsed time.

use serde_json::json;
use vuer_client::Stats;

/// The summary, as text lines or one JSON object.
pub fn summary(command: &str, stats: &Stats, elapsed_s: f64, as_json: bool) -> String {
    let rate = |n: u64| {
        if elapsed_s > 0.0 {
            n as f64 / elapsed_s
        } else {
            0.0
        }
    };
    if as_json {
        return json!({
            "command": command,
            "elapsed_s": elapsed_s,
            "published": stats.published,
            "sent": stats.sent,
            "sent_per_s": rate(stats.sent),
            "coalesced": stats.coalesced,
            "expired": stats.expired,
            "rejected": stats.rejected,
            "dropped": stats.dropped,
            "pending": stats.pending,
            "bytes_sent": stats.bytes_sent,
            "bytes_per_s": rate(stats.bytes_sent),
            "writes": stats.flushes,
            "events_per_write": stats.frames_per_flush,
            "received": stats.received,
            "connects": stats.connects,
            "disconnects": stats.disconnects,
        })
        .to_string();
    }
    let mut s = format!(
        "{command}: {} events published in {elapsed_s:.2} s; sent {} ({:.1}/s), coalesced {}, expired {}, rejected {}, dropped {}, pending {}\n",
        stats.published,
        stats.sent,
        rate(stats.sent),
        stats.coalesced,
        stats.expired,
        stats.rejected,
        stats.dropped,
        stats.pending,
    );
    s.push_str(&format!(
        "  {} sent ({}/s) in {} writes ({:.1} events/write); {} server events received",
        bytes(stats.bytes_sent as f64),
        bytes(rate(stats.bytes_sent)),
        stats.flushes,
        stats.frames_per_flush,
        stats.received,
    ));
    if stats.disconnects > 0 {
        s.push_str(&format!(
            "; {} connections, {} lost",
            stats.connects, stats.disconnects
        ));
    }
    s
}

/// Bytes with a binary unit.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A count with a metric suffix (1.23M).
pub fn count(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(count(1_234_567.0), "1.23M");
        assert_eq!(count(999.0), "999");
    }

    #[test]
    fn json_summary_parses() {
        let s = summary("stream", &Stats::default(), 1.0, true);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["command"], "stream");
        assert_eq!(v["sent"], 0);
    }
}
