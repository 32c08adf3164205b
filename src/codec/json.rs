//! Text frames: JSON parsed in place by simd-json and transcoded to msgpack,
//! so inbound events have one representation whatever frame type carried
//! them. Relays and test tools speak JSON; Vuer itself never does.
//!
//! The transcoder walks simd-json's tape, which lists the document's nodes in
//! order, so there is no recursion (deep nesting cannot exhaust the stack)
//! and object key order is kept. JSON numbers with a fraction or exponent
//! become `f64`, others integers.

use simd_json::{Node, StaticNode};

use super::write::*;
use crate::error::DecodeError;

/// Parses `text` (modified in place, as simd-json unescapes strings where
/// they lie) and appends the equivalent msgpack to `out`.
pub(crate) fn json_to_msgpack(text: &mut [u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let tape = simd_json::to_tape(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    out.reserve(text_len_hint(tape.0.len()));
    // The tape starts with the root node.
    for node in tape.0.iter() {
        match node {
            Node::String(s) => write_str(out, s),
            Node::Object { len, .. } => write_map_len(out, *len),
            Node::Array { len, .. } => write_array_len(out, *len),
            Node::Static(s) => match s {
                StaticNode::I64(i) => write_int(out, *i),
                StaticNode::U64(u) => write_uint(out, *u),
                StaticNode::F64(f) => write_f64(out, *f),
                StaticNode::Bool(b) => write_bool(out, *b),
                StaticNode::Null => write_nil(out),
                #[allow(unreachable_patterns)]
                _ => return Err(DecodeError::Json("unsupported number".into())),
            },
        }
    }
    Ok(())
}

fn text_len_hint(nodes: usize) -> usize {
    nodes.saturating_mul(4).min(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn transcode(s: &str) -> Result<Value, DecodeError> {
        let mut text = s.as_bytes().to_vec();
        let mut out = Vec::new();
        json_to_msgpack(&mut text, &mut out)?;
        crate::value::decode_value(&out)
    }

    #[test]
    fn keeps_order_and_number_kinds() {
        let v = transcode(r#"{"ts": 1700000000500, "etype": "SET", "data": {"z": 1.5, "a": [0, -1, "x\n", null, true]}}"#).unwrap();
        let m = v.as_map().unwrap();
        assert_eq!(
            m.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["ts", "etype", "data"]
        );
        assert_eq!(v["ts"], Value::Int(1700000000500));
        assert_eq!(v["data"]["z"], Value::F64(1.5));
        assert_eq!(v["data"]["a"][1], Value::Int(-1));
        assert_eq!(v["data"]["a"][2], Value::Str("x\n".into()));
        assert_eq!(v["data"]["a"][3], Value::Nil);
        let keys: Vec<_> = v["data"]
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(keys, ["z", "a"]);
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(matches!(transcode("{\"a\": "), Err(DecodeError::Json(_))));
        assert!(matches!(transcode("nope"), Err(DecodeError::Json(_))));
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let s = "[".repeat(5000) + &"]".repeat(5000);
        let mut text = s.into_bytes();
        let mut out = Vec::new();
        // simd-json may refuse very deep documents itself; either way no crash.
        let _ = json_to_msgpack(&mut text, &mut out);
        if !out.is_empty() {
            assert!(matches!(
                crate::value::decode_value(&out),
                Err(DecodeError::TooDeep { .. })
            ));
        }
    }
}
