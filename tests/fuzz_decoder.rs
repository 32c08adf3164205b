//! Property-based fuzzing of the inbound decoder (proptest).
//!
//! * Arbitrary bytes, and structure-aware mutations of the golden vectors
//!   (byte edits with msgpack's interesting markers, and replaced subtrees),
//!   through `ServerEvent::from_msgpack`, `data()`, `data_as()` and
//!   `to_value()`: never a panic; outgoing validation (`RawEvent`) accepts
//!   exactly what inbound decoding accepts; whatever decodes, decodes
//!   completely, agrees with an independent decoder (rmp-serde), and
//!   re-encodes to a message with the same envelope and data.
//! * Generated events checked against a model of the envelope rules (which
//!   entries are fields, which are extras, which duplicate wins).
//! * Arbitrary text and JSON-token soup through `ServerEvent::from_json`;
//!   generated JSON events must decode to exactly their values.
//!
//! CI runs this for a bounded time (about half a minute in a debug build).
//! `VUER_FUZZ_SCALE=N` multiplies every case count by N for longer runs.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use serde_json::Value as Json;
use vuer_client::{RawEvent, ServerEvent, Value};

// ---------------------------------------------------------------------------
// Configuration and seeds
// ---------------------------------------------------------------------------

fn config(cases: u32) -> Config {
    let scale: u32 = std::env::var("VUER_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    Config {
        cases: cases.saturating_mul(scale.max(1)),
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

const VECTORS: &str = include_str!("data/vectors.json");

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every golden vector's msgpack (client and server events alike: a relay
/// may forward either).
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let doc: Json = serde_json::from_str(VECTORS).unwrap();
        doc["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| hex(c["msgpack_hex"].as_str().unwrap()))
            .collect()
    })
}

// ---------------------------------------------------------------------------
// Checks applied to every input
// ---------------------------------------------------------------------------

fn has_ext(v: &Value) -> bool {
    match v {
        Value::Ext(..) => true,
        Value::Array(a) => a.iter().any(has_ext),
        Value::Map(m) => m.iter().any(|(_, v)| has_ext(v)),
        _ => false,
    }
}

/// A `Value` as JSON the way `data_as::<serde_json::Value>()` renders it, or
/// `None` where serde_json has no rendering (bin, ext) or rmp-serde's and
/// ours may differ.
fn as_json(v: &Value) -> Option<Json> {
    Some(match v {
        Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::F32(f) => serde_json::Number::from_f64(*f as f64).map_or(Json::Null, Json::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Bin(_) | Value::Ext(..) => return None,
        Value::Array(a) => Json::Array(a.iter().map(as_json).collect::<Option<_>>()?),
        Value::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                // Duplicate keys: serde_json keeps one; skip the comparison.
                if out.insert(k.clone(), as_json(v)?).is_some() {
                    return None;
                }
            }
            Json::Object(out)
        }
    })
}

/// What a value becomes through JSON: f32 as f64, non-finite floats as nil.
fn as_json_would(v: Value) -> Value {
    match v {
        Value::F32(f) if f.is_finite() => Value::F64(f as f64),
        Value::F32(_) => Value::Nil,
        Value::F64(f) if !f.is_finite() => Value::Nil,
        Value::Array(a) => Value::Array(a.into_iter().map(as_json_would).collect()),
        Value::Map(m) => Value::Map(m.into_iter().map(|(k, v)| (k, as_json_would(v))).collect()),
        other => other,
    }
}

/// JSON equality, with numbers compared as values: floats within 16 ulps
/// (serde_json's default float parsing is not exact; simd-json's is), and
/// `-0` equal to `0` (serde_json reads `-0` as a float, simd-json as an
/// integer).
fn json_close(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            if x == y {
                return true;
            }
            let (Some(x), Some(y)) = (x.as_f64(), y.as_f64()) else {
                return false;
            };
            // Distance in units in the last place (subnormals included).
            x == y
                || (x.is_sign_negative() == y.is_sign_negative()
                    && (x.to_bits() as i64 - y.to_bits() as i64).unsigned_abs() <= 16)
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && json_close(vx, vy))
        }
        _ => a == b,
    }
}

/// Everything that can be asked of an event that decoded.
fn check_event(ev: &ServerEvent) -> Result<(), TestCaseError> {
    // The envelope validated everything: full decoding cannot fail.
    let whole = ev.to_value();
    prop_assert!(whole.is_ok(), "to_value failed: {:?}", whole);
    let whole = whole.unwrap();
    let data = ev.data();
    prop_assert!(data.is_ok(), "data failed: {:?}", data);
    let data = data.unwrap();
    prop_assert!(matches!(whole, Value::Map(_)));

    // An independent decoder agrees (serde has no ext type).
    let reference = rmp_serde::from_slice::<Value>(ev.as_msgpack());
    if !has_ext(&whole) {
        prop_assert!(reference.is_ok(), "rmp-serde refuses: {:?}", reference);
        prop_assert_eq!(reference.unwrap().to_msgpack(), whole.to_msgpack());
    }
    // Through serde: the same value; and as JSON where JSON can say it.
    match ev.data_as::<Value>() {
        Ok(typed) => prop_assert_eq!(typed.to_msgpack(), data.to_msgpack()),
        Err(e) => prop_assert!(has_ext(&data), "data_as::<Value> failed: {}", e),
    }
    let json = ev.data_as::<Json>();
    if let Some(expected) = as_json(&data) {
        prop_assert!(json.is_ok(), "data_as::<Json> failed: {:?}", json);
        prop_assert_eq!(json.unwrap(), expected);
    }
    // Extras: listed ones exist and decode; the envelope's fields are not
    // among them unless their type is wrong.
    let names: Vec<&str> = ev.extra_names().collect();
    for name in &names {
        let extra = ev.extra(name);
        prop_assert!(
            matches!(extra, Some(Ok(_))),
            "extra {:?}: {:?}",
            name,
            extra
        );
        prop_assert!(!matches!(*name, "etype" | "data" | "value"));
    }
    let _ = (ev.reply_etype(), ev.is_rpc(), format!("{ev:?} {whole}"));

    // The canonical re-encoding decodes to the same envelope and data, and
    // is a fixed point.
    let bytes = whole.to_msgpack();
    let again = ServerEvent::from_msgpack(Bytes::from(bytes.clone()));
    prop_assert!(again.is_ok(), "re-encoded message refused: {:?}", again);
    let again = again.unwrap();
    prop_assert_eq!(again.etype(), ev.etype());
    prop_assert_eq!(again.ts(), ev.ts());
    prop_assert_eq!(again.uuid(), ev.uuid());
    prop_assert_eq!(again.rtype(), ev.rtype());
    prop_assert_eq!(again.key(), ev.key());
    prop_assert_eq!(again.strict(), ev.strict());
    prop_assert!(again.extra_names().eq(names.iter().copied()));
    prop_assert_eq!(again.data().unwrap().to_msgpack(), data.to_msgpack());
    prop_assert_eq!(again.to_value().unwrap().to_msgpack(), bytes);
    Ok(())
}

fn check_msgpack(bytes: &[u8]) -> Result<Option<ServerEvent>, TestCaseError> {
    let ev = ServerEvent::from_msgpack(Bytes::copy_from_slice(bytes));
    let raw = RawEvent::from_msgpack(Bytes::copy_from_slice(bytes));
    prop_assert_eq!(ev.is_ok(), raw.is_ok(), "{:?} vs {:?}", ev, raw);
    if let Ok(ev) = &ev {
        prop_assert!(!ev.was_json());
        prop_assert_eq!(ev.len(), bytes.len());
        let raw = raw.unwrap();
        prop_assert_eq!(raw.etype(), ev.etype());
        check_event(ev)?;
    }
    Ok(ev.ok())
}

fn check_json(text: &[u8]) -> Result<Option<ServerEvent>, TestCaseError> {
    let ev = ServerEvent::from_json(BytesMut::from(text));
    if let Ok(ev) = &ev {
        prop_assert!(ev.was_json());
        check_event(ev)?;
        // What simd-json accepted, serde_json reads as the same document
        // (up to serde_json's own nesting limit of 128, and to its float
        // parsing, which is best-effort: off by a few ulps at times).
        if let Ok(reference) = serde_json::from_slice::<Json>(text) {
            if let Some(ours) = as_json(&ev.to_value().unwrap()) {
                prop_assert!(
                    json_close(&reference, &ours),
                    "serde_json reads {} where we read {}",
                    reference,
                    ours
                );
            }
        }
    }
    Ok(ev.ok())
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Markers that change the meaning of what follows.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0x81, 0x8f, 0x90, 0x91, 0x9f, 0xa0, 0xa1, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8,
    0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xfe, 0xff,
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Interesting(Index, Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
    Duplicate(Index, usize),
    /// A run of bytes from another seed.
    Splice(Index, Index, Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Mutation::Interesting(i, j)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1usize..32).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..32)
            .prop_map(|(s, from, to, n)| Mutation::Splice(s, from, to, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
    match m {
        Mutation::Flip(i, bit) if len > 0 => bytes[at(i)] ^= 1 << bit,
        Mutation::Set(i, b) if len > 0 => bytes[at(i)] = *b,
        Mutation::Interesting(i, j) if len > 0 => {
            bytes[at(i)] = INTERESTING[j.index(INTERESTING.len())]
        }
        Mutation::Insert(i, b) => {
            let p = if len == 0 { 0 } else { i.index(len + 1) };
            bytes.splice(p..p, b.iter().copied());
        }
        Mutation::Remove(i, n) if len > 0 => {
            let p = at(i);
            bytes.drain(p..(p + n).min(len));
        }
        Mutation::Truncate(i) => bytes.truncate(at(i)),
        Mutation::Duplicate(i, n) if len > 0 => {
            let p = at(i);
            let run = bytes[p..(p + n).min(len)].to_vec();
            bytes.splice(p..p, run);
        }
        Mutation::Splice(s, from, to, n) => {
            let other = &seeds()[s.index(seeds().len())];
            let f = from.index(other.len());
            let run = &other[f..(f + n).min(other.len())];
            let p = if len == 0 { 0 } else { to.index(len + 1) };
            bytes.splice(p..p, run.iter().copied());
        }
        _ => {}
    }
}

/// Replaces the node that `path` leads to (as far as it leads).
fn replace_at(node: &mut Value, path: &[Index], replacement: Value) {
    match (path.split_first(), node) {
        (Some((step, rest)), Value::Array(a)) if !a.is_empty() => {
            let i = step.index(a.len());
            replace_at(&mut a[i], rest, replacement)
        }
        (Some((step, rest)), Value::Map(m)) if !m.is_empty() => {
            let i = step.index(m.len());
            replace_at(&mut m[i].1, rest, replacement)
        }
        (_, node) => *node = replacement,
    }
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{0,6}",
        1 => "\\PC{0,4}",
        2 => prop::sample::select(vec![
            "etype", "data", "value", "ts", "uuid", "rtype", "key", "strict", "nodes", "to",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Any msgpack value, nested up to 6 levels (at most 8 elements a level).
fn value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
        any::<f32>().prop_map(Value::F32),
        any::<f64>().prop_map(Value::F64),
        "\\PC{0,12}".prop_map(Value::Str),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bin),
        (any::<i8>(), prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(t, d)| Value::Ext(t, d)),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8).prop_map(Value::Map),
        ]
    })
    .boxed()
}

/// A value JSON can carry exactly: no bin, ext or f32; finite f64s.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::F64),
        (-1e6f64..1e6).prop_map(|f| Value::F64(f.round() + 0.5)),
        "\\PC{0,12}".prop_map(Value::Str),
        prop::sample::select(vec![
            "\"", "\\", "\n", "\u{0}", "\u{1f}", "é", "\u{ffff}", "😀"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            // Distinct keys: JSON objects with duplicate keys are read
            // differently by different parsers.
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Map(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// An envelope's entries: an etype, and a shuffle of fields (of the right
/// type or not), duplicates and extras.
fn envelope(
    data: impl Strategy<Value = Value> + Clone,
) -> impl Strategy<Value = Vec<(String, Value)>> {
    let field = prop_oneof![
        3 => (key(), data.clone()),
        1 => (Just("ts".to_owned()), prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::F64),
            any::<f32>().prop_map(Value::F32),
            Just(Value::from("soon")),
        ]),
        1 => (prop::sample::select(vec!["uuid", "rtype", "key"]).prop_map(str::to_owned), prop_oneof![
            "[0-9a-f-]{0,36}".prop_map(Value::Str),
            Just(Value::Nil),
            Just(Value::Int(1)),
        ]),
        1 => (Just("strict".to_owned()), prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Nil),
        ]),
    ];
    (
        prop::collection::vec(field, 0..8),
        "[A-Z_@]{1,12}",
        any::<Index>(),
    )
        .prop_map(|(mut fields, etype, at)| {
            let p = at.index(fields.len() + 1);
            fields.insert(p, ("etype".to_owned(), Value::Str(etype)));
            fields
        })
}

/// What the envelope of `entries` must read as (PROTOCOL.md §6, §7 and the
/// client's rules): the last valid occurrence of a field wins; a field of
/// the wrong type is an extra; an `etype` that is not a string is an error.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    etype: String,
    ts: Option<i64>,
    uuid: Option<String>,
    rtype: Option<String>,
    key: Option<String>,
    strict: Option<bool>,
    payload: Option<Value>,
    data: Option<Value>,
    extras: Vec<String>,
}

fn expected(entries: &[(String, Value)]) -> Option<Expected> {
    let mut e = Expected::default();
    let mut etype = None;
    let mut value = None;
    for (k, v) in entries {
        match (k.as_str(), v) {
            ("etype", Value::Str(s)) => etype = Some(s.clone()),
            ("etype", _) => return None,
            ("ts", Value::Int(i)) => e.ts = Some(*i),
            ("ts", Value::UInt(u)) => e.ts = i64::try_from(*u).ok(),
            ("ts", Value::F32(f)) => e.ts = f.is_finite().then_some((*f as f64 * 1000.0) as i64),
            ("ts", Value::F64(f)) => e.ts = f.is_finite().then_some((f * 1000.0) as i64),
            ("data", v) => e.data = Some(v.clone()),
            ("value", v) => value = Some(v.clone()),
            ("uuid" | "rtype" | "key", Value::Str(_) | Value::Nil) => {
                let s = v.as_str().map(str::to_owned);
                match k.as_str() {
                    "uuid" => e.uuid = s,
                    "rtype" => e.rtype = s,
                    _ => e.key = s,
                }
            }
            ("strict", Value::Bool(b)) => e.strict = Some(*b),
            _ => e.extras.push(k.clone()),
        }
    }
    e.etype = etype?;
    e.payload = e.data.clone().or(value);
    Some(e)
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(6000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_msgpack(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_map_header_never_panic(
        entries in 0u8..16,
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        // A map header and an etype first, so that most inputs get past
        // the envelope's first checks.
        let mut msg = vec![0x80 | entries, 0xa5, b'e', b't', b'y', b'p', b'e', 0xa1, b'X'];
        msg.extend_from_slice(&bytes);
        check_msgpack(&msg)?;
    }
}

proptest! {
    #![proptest_config(config(8000))]

    #[test]
    fn mutated_vectors_never_panic(
        seed in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut bytes = seeds()[seed.index(seeds().len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_msgpack(&bytes)?;
    }

    #[test]
    fn vectors_with_a_replaced_subtree_decode_consistently(
        seed in any::<Index>(),
        path in prop::collection::vec(any::<Index>(), 0..6),
        replacement in value(),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        // Structure-aware: a subtree of a real event replaced by any value
        // (then, sometimes, a few byte edits on top).
        let mut tree = Value::from_msgpack(&seeds()[seed.index(seeds().len())]).unwrap();
        replace_at(&mut tree, &path, replacement);
        let mut bytes = tree.to_msgpack();
        let unmutated = mutations.is_empty();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let ev = check_msgpack(&bytes)?;
        if unmutated {
            // Still a map with a string etype unless the replacement hit
            // the root or the etype.
            if let Some(e) = tree.as_map().and_then(expected) {
                let ev = ev.expect("a valid event must decode");
                prop_assert_eq!(ev.etype(), e.etype.as_str());
                prop_assert_eq!(ev.data().unwrap().to_msgpack(), e.payload.unwrap_or(Value::Nil).to_msgpack());
            }
        }
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn generated_events_match_the_envelope_model(entries in envelope(value())) {
        let bytes = Value::Map(entries.clone()).to_msgpack();
        let ev = check_msgpack(&bytes)?;
        let Some(e) = expected(&entries) else {
            prop_assert!(ev.is_none(), "accepted a non-string etype: {:?}", ev);
            return Ok(());
        };
        let ev = ev.expect("a valid event must decode");
        prop_assert_eq!(ev.etype(), e.etype.as_str());
        prop_assert_eq!(ev.ts(), e.ts);
        prop_assert_eq!(ev.uuid(), e.uuid.as_deref());
        prop_assert_eq!(ev.rtype(), e.rtype.as_deref());
        prop_assert_eq!(ev.key(), e.key.as_deref());
        prop_assert_eq!(ev.strict(), e.strict);
        prop_assert_eq!(
            ev.data().unwrap().to_msgpack(),
            e.payload.clone().unwrap_or(Value::Nil).to_msgpack()
        );
        prop_assert_eq!(ev.extra_names().collect::<Vec<_>>(), e.extras.clone());
        // The message re-encodes byte for byte (Value writes canonical
        // msgpack, and decoding keeps every wire type).
        prop_assert_eq!(ev.to_value().unwrap().to_msgpack(), bytes);
        prop_assert_eq!(ev.is_rpc(), e.uuid.is_some() || e.rtype.is_some());
        let reply = e.rtype.clone().or_else(|| e.uuid.as_ref().map(|u| format!("{}_RESPONSE@{u}", e.etype)));
        prop_assert_eq!(ev.reply_etype(), reply);
    }

    #[test]
    fn generated_json_events_decode_to_their_values(entries in envelope(json_value())) {
        // The envelope's own fields may hold f32s and non-finite floats,
        // which JSON carries as f64s and nulls.
        let entries: Vec<(String, Value)> =
            entries.into_iter().map(|(k, v)| (k, as_json_would(v))).collect();
        let json = as_json(&Value::Map(entries.clone()));
        // Duplicate top-level keys have no single JSON reading.
        let Some(json) = json else { return Ok(()) };
        let text = serde_json::to_vec(&json).unwrap();
        // (as_json gave a rendering: no duplicate keys anywhere, so the
        // JSON object has the entries in their order.)
        let ev = check_json(&text)?;
        let Some(e) = expected(&entries) else {
            prop_assert!(ev.is_none());
            return Ok(());
        };
        let ev = ev.expect("a valid JSON event must decode");
        prop_assert_eq!(ev.etype(), e.etype.as_str());
        prop_assert_eq!(ev.to_value().unwrap().to_msgpack(), Value::Map(entries).to_msgpack());
        prop_assert_eq!(ev.extra_names().collect::<Vec<_>>(), e.extras);
    }
}

/// JSON-ish token soup: mostly well-formed pieces in any order.
fn json_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"etype\"",
        "\"data\"",
        "\"ts\"",
        "\"SET\"",
        "\"\"",
        "0",
        "-1",
        "1.5",
        "-1.5e3",
        "1e400",
        "-0",
        "18446744073709551616",
        "-9223372036854775809",
        "null",
        "true",
        "false",
        "\"\\u00e9\"",
        "\"\\ud800\"",
        "\"\\ud83d\\ude00\"",
        "\"\\\"\"",
        "\"a\\nb\"",
        "\u{feff}",
        "\"é\"",
        "nan",
        "\"\\x\"",
    ]);
    prop::collection::vec(token, 0..48).prop_map(|t| t.concat().into_bytes())
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,256}") {
        check_json(text.as_bytes())?;
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        // from_json is public: it must survive invalid UTF-8 too (the
        // decoder itself never passes any).
        check_json(&bytes)?;
    }

    #[test]
    fn json_token_soup_never_panics(text in json_soup()) {
        check_json(&text)?;
        let mut wrapped = b"{\"etype\": \"X\", \"data\": ".to_vec();
        wrapped.extend_from_slice(&text);
        wrapped.push(b'}');
        check_json(&wrapped)?;
    }

    #[test]
    fn mutated_json_events_never_panic(
        entries in envelope(json_value()),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let Some(json) = as_json(&Value::Map(entries)) else { return Ok(()) };
        let mut text = serde_json::to_vec(&json).unwrap();
        for m in &mutations {
            apply(&mut text, m);
        }
        check_json(&text)?;
    }
}

/// Inputs worth keeping as plain tests.
#[test]
fn known_inputs() {
    for bytes in [
        &[][..],
        &[0x80],
        &[0x81, 0xa5, b'e', b't', b'y', b'p', b'e', 0xa0],
        &[0x81, 0xa5, b'e', b't', b'y', b'p', b'e', 0xc1],
        &[0xdf, 0xff, 0xff, 0xff, 0xff],
        &[0x82, 0xa2, b't', b's', 0xcd, 0x01],
    ] {
        check_msgpack(bytes).unwrap();
    }
    for text in [&b""[..], b"{}", b"{\"etype\":\"\"}", b"[", b"\"\\ud800\""] {
        check_json(text).unwrap();
    }
}
