//! Codec tests against the golden vectors made by the real Python package
//! (vuer 0.1.6, `tests/data/gen_vectors.py`; a copy of `shared/vectors`).

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value as Json;

use super::frame::unframe;
use super::*;
use crate::event::{encode_dyn, encode_raw, encode_typed, DynEvent, Event, RawEvent, ServerEvent};
use crate::value::{decode_value, write_value};
use crate::Value;

const VECTORS: &str = include_str!("../../tests/data/vectors.json");
const TS: u64 = 1_700_000_000_500;

fn cases() -> Vec<Json> {
    let doc: Json = serde_json::from_str(VECTORS).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

fn case(name: &str) -> (Json, Vec<u8>) {
    let c = cases()
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    let bytes = hex(c["msgpack_hex"].as_str().unwrap());
    (c["logical"].clone(), bytes)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn special(v: &Json) -> f64 {
    match v {
        Json::String(s) if s == "+inf" => f64::INFINITY,
        Json::String(s) if s == "-inf" => f64::NEG_INFINITY,
        Json::String(s) if s == "nan" => f64::NAN,
        other => other.as_f64().unwrap(),
    }
}

/// The vectors' tagged JSON as a [`Value`] with exact wire types.
fn tagged(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else {
                Value::from(n.as_u64().unwrap())
            }
        }
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(tagged).collect()),
        Json::Object(m) => {
            if m.len() == 1 {
                let (k, v) = m.iter().next().unwrap();
                match k.as_str() {
                    "$f32" => return Value::F32(special(v) as f32),
                    "$f64" => return Value::F64(special(v)),
                    "$bin" => return Value::Bin(hex(v.as_str().unwrap())),
                    "$ext" => {
                        return Value::Ext(
                            v[0].as_i64().unwrap() as i8,
                            hex(v[1].as_str().unwrap()),
                        )
                    }
                    _ => {}
                }
            }
            Value::Map(m.iter().map(|(k, v)| (k.clone(), tagged(v))).collect())
        }
    }
}

/// Bitwise equality, so NaN == NaN and -0.0 != 0.0.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
        }
        _ => a == b,
    }
}

#[test]
fn every_vector_decodes_to_its_logical_value_with_exact_types() {
    for c in cases() {
        let bytes = hex(c["msgpack_hex"].as_str().unwrap());
        let decoded = decode_value(&bytes).unwrap();
        assert!(same(&decoded, &tagged(&c["logical"])), "{}", c["name"]);
    }
}

#[test]
fn every_vector_reencodes_byte_for_byte() {
    for c in cases() {
        let bytes = hex(c["msgpack_hex"].as_str().unwrap());
        let mut out = Vec::new();
        write_value(&mut out, &tagged(&c["logical"]));
        assert_eq!(out, bytes, "{}", c["name"]);
    }
}

/// Encodes a dynamic event as the client would, with the vectors' `ts`.
fn dyn_bytes(ev: &DynEvent, all_f32: bool) -> Vec<u8> {
    let mut p = Payload::default();
    encode_dyn(ev, &mut p, all_f32).unwrap();
    p.ts_ms = ev.ts.unwrap();
    p.to_message()
}

fn typed_bytes<E: Event>(ev: &E, all_f32: bool) -> Vec<u8> {
    let mut p = Payload::default();
    encode_typed(ev, &mut p, all_f32).unwrap();
    p.ts_ms = ev.ts().unwrap();
    p.to_message()
}

/// A dynamic event built from the vector's own logical envelope: etype, key,
/// extra keys and value, in the vector's order.
fn dyn_from_logical(logical: &Json) -> DynEvent {
    let mut ev = DynEvent::new(logical["etype"].as_str().unwrap().to_owned()).ts(TS);
    for (k, v) in logical.as_object().unwrap() {
        match k.as_str() {
            "ts" | "etype" => {}
            "key" => ev = ev.key(v.as_str().unwrap()),
            "value" => ev = ev.value(tagged(v)),
            other => ev = ev.extra(other, tagged(v)),
        }
    }
    ev
}

#[test]
fn dynamic_events_match_every_keyword_style_c2s_vector() {
    let names = [
        "c2s_init_python_client_info",
        "c2s_init_python_client_info_live",
        "c2s_init_rust_client_suggested",
        "c2s_set_position_kwargs",
        "c2s_nested_dict_value",
        "c2s_string_value",
        "c2s_none_value",
        "c2s_bytes_value",
        "c2s_ints_bools_boundaries",
        "c2s_length_boundaries",
        "c2s_numpy_float32_array",
        "c2s_numpy_mixed",
        "c2s_extra_keys_camera_move",
        "c2s_grab_render_response",
        "c2s_int_ms_ts_passthrough",
        "ref_zdata_numpy_float32",
    ];
    for name in names {
        let (logical, bytes) = case(name);
        assert_eq!(
            dyn_bytes(&dyn_from_logical(&logical), false),
            bytes,
            "{name}"
        );
    }
}

#[derive(Serialize)]
struct SetPosition([f32; 3]);
impl Event for SetPosition {
    const ETYPE: &'static str = "SET_POSITION";
    fn ts(&self) -> Option<u64> {
        Some(TS)
    }
}

#[test]
fn typed_event_matches_the_subclass_vector() {
    let (_, bytes) = case("c2s_set_position_subclass");
    assert_eq!(typed_bytes(&SetPosition([0.1, 0.5, -2.25]), false), bytes);
}

#[test]
fn all_f32_mode_matches_python_for_f64_input() {
    // Python floats are doubles; use_single_float narrows them.
    let (_, bytes) = case("c2s_set_position_kwargs");
    let ev = DynEvent::new("SET_POSITION")
        .ts(TS)
        .value(vec![0.1f64, 0.5, -2.25]);
    assert_eq!(dyn_bytes(&ev, true), bytes);
    // Without all-f32 mode, f64 stays f64 (9 bytes per float).
    assert_eq!(dyn_bytes(&ev, false).len(), bytes.len() + 3 * 4);

    #[derive(Serialize)]
    struct Move {
        position: (i32, f64, i32),
        meta: Meta,
        pair: (i32, &'static str),
    }
    #[derive(Serialize)]
    struct Meta {
        name: &'static str,
        tags: [&'static str; 2],
        nested: Nested,
    }
    #[derive(Serialize)]
    struct Nested {
        deep: (i32, (i32, f64)),
        empty_map: std::collections::BTreeMap<String, i32>,
        empty_list: Vec<i32>,
    }
    impl Event for Move {
        const ETYPE: &'static str = "MOVE_BOX";
        fn ts(&self) -> Option<u64> {
            Some(TS)
        }
    }
    let ev = Move {
        position: (1, 0.5, 0),
        meta: Meta {
            name: "box",
            tags: ["a", "b"],
            nested: Nested {
                deep: (1, (2, 3.25)),
                empty_map: Default::default(),
                empty_list: vec![],
            },
        },
        pair: (1, "two"),
    };
    // Same content as c2s_nested_dict_value, in the subclass key order.
    let (logical, _) = case("c2s_nested_dict_value");
    let decoded = decode_value(&typed_bytes(&ev, true)).unwrap();
    assert!(same(&decoded["value"], &tagged(&logical["value"])));
    assert_eq!(decoded["etype"], Value::from("MOVE_BOX"));
}

#[test]
fn typed_bytes_become_bin() {
    #[derive(Serialize)]
    struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);
    impl Event for Blob {
        const ETYPE: &'static str = "BLOB";
        fn ts(&self) -> Option<u64> {
            Some(TS)
        }
    }
    let (logical, _) = case("c2s_bytes_value");
    let decoded = decode_value(&typed_bytes(&Blob(vec![0, 1, 2, 0xfe, 0xff]), false)).unwrap();
    assert!(same(&decoded["value"], &tagged(&logical["value"])));
}

#[test]
fn f32_overflow_and_non_string_keys_are_refused() {
    let ev = DynEvent::new("X").ts(TS).value(3.5e38f64);
    let mut p = Payload::default();
    assert_eq!(
        encode_dyn(&ev, &mut p, true),
        Err(EncodeError::F32Overflow(3.5e38))
    );
    #[derive(Serialize)]
    struct Bad(std::collections::BTreeMap<i32, i32>);
    impl Event for Bad {
        const ETYPE: &'static str = "BAD";
    }
    let mut m = std::collections::BTreeMap::new();
    m.insert(1, 2);
    assert_eq!(
        encode_typed(&Bad(m), &mut p, false),
        Err(EncodeError::NonStringKey("integer"))
    );
}

#[test]
fn raw_events_pass_through_and_are_validated() {
    let (_, bytes) = case("ref_browser_style_camera_move");
    let raw = RawEvent::from_msgpack(bytes.clone().into()).unwrap();
    assert_eq!(raw.etype(), "CAMERA_MOVE");
    assert_eq!(raw.key(), Some("defaultCamera"));
    let mut p = Payload::default();
    encode_raw(&raw, &mut p);
    assert_eq!(p.to_message(), bytes);
    // An array is not an event; neither is a map without etype.
    assert!(RawEvent::from_msgpack(vec![0x91, 0x01].into()).is_err());
    assert!(RawEvent::from_msgpack(vec![0x81, 0xa1, b'a', 0x01].into()).is_err());
}

#[test]
fn pre_encoded_values_are_sent_without_reencoding() {
    let (logical, bytes) = case("c2s_extra_keys_camera_move");
    let value = tagged(&logical["value"]).to_msgpack();
    let ev = DynEvent::new("CAMERA_MOVE")
        .ts(TS)
        .key("defaultCamera")
        .value_msgpack(value.into())
        .unwrap();
    assert_eq!(dyn_bytes(&ev, false), bytes);
}

#[test]
fn every_s2c_vector_decodes_as_a_server_event() {
    for c in cases() {
        let name = c["name"].as_str().unwrap();
        if !name.starts_with("s2c_") {
            continue;
        }
        let logical = &c["logical"];
        let ev = ServerEvent::from_msgpack(hex(c["msgpack_hex"].as_str().unwrap()).into())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ev.etype(), logical["etype"].as_str().unwrap(), "{name}");
        assert_eq!(ev.ts(), Some(TS as i64), "{name}");
        assert!(
            same(&ev.data().unwrap(), &tagged(&logical["data"])),
            "{name}"
        );
        assert_eq!(ev.uuid(), logical["uuid"].as_str(), "{name}");
        assert_eq!(ev.rtype(), logical["rtype"].as_str(), "{name}");
        assert_eq!(ev.key(), logical["key"].as_str(), "{name}");
        assert_eq!(ev.strict(), logical["strict"].as_bool(), "{name}");
    }
}

#[test]
fn rpc_request_knows_its_reply_etype() {
    let (_, bytes) = case("s2c_grab_render_rpc");
    let ev = ServerEvent::from_msgpack(bytes.into()).unwrap();
    assert!(ev.is_rpc());
    assert_eq!(
        ev.reply_etype().unwrap(),
        "GRAB_RENDER_RESPONSE@00000000-0000-4000-8000-000000000001"
    );
    #[derive(serde::Deserialize)]
    struct Args {
        quality: f64,
    }
    let args: Args = ev.data_as().unwrap();
    assert!((args.quality - 0.9).abs() < 1e-6);
    // Without rtype, the fallback is <etype>_RESPONSE@<uuid>.
    let no_rtype = Value::map([
        ("uuid", Value::from("u-1")),
        ("etype", Value::from("RPC")),
        ("data", Value::Nil),
    ]);
    let ev = ServerEvent::from_msgpack(no_rtype.to_msgpack().into()).unwrap();
    assert_eq!(ev.reply_etype().unwrap(), "RPC_RESPONSE@u-1");
}

#[test]
fn typed_access_through_serde() {
    let (_, bytes) = case("s2c_upsert_box");
    let ev = ServerEvent::from_msgpack(bytes.into()).unwrap();
    #[derive(serde::Deserialize)]
    struct Node {
        key: String,
        tag: String,
        position: [f32; 3],
    }
    #[derive(serde::Deserialize)]
    struct Upsert {
        nodes: Vec<Node>,
        to: Option<String>,
    }
    let u: Upsert = ev.data_as().unwrap();
    assert_eq!(u.nodes[0].key, "box");
    assert_eq!(u.nodes[0].tag, "Box");
    // Mixed int/f32 numbers convert.
    assert_eq!(u.nodes[0].position, [0.0, 0.5, 0.0]);
    assert_eq!(u.to, None);

    let (_, bytes) = case("s2c_upsert_pointcloud_binary");
    let ev = ServerEvent::from_msgpack(bytes.into()).unwrap();
    #[derive(serde::Deserialize)]
    struct Pc {
        #[serde(with = "serde_bytes")]
        vertices: Vec<u8>,
    }
    #[derive(serde::Deserialize)]
    struct Nodes {
        nodes: Vec<Pc>,
    }
    let n: Nodes = ev.data_as().unwrap();
    assert_eq!(n.nodes[0].vertices.len(), 12);
}

#[test]
fn browser_style_float_seconds_ts_is_converted() {
    let (_, bytes) = case("ref_browser_style_camera_move");
    let ev = ServerEvent::from_msgpack(bytes.into()).unwrap();
    assert_eq!(ev.ts(), Some(1_700_000_000_500));
    assert_eq!(ev.key(), Some("defaultCamera"));
    assert_eq!(ev.data().unwrap()["camera"]["fov"], Value::Int(50));
}

#[test]
fn hostile_messages_are_errors_not_panics() {
    let cases: Vec<(&[u8], &str)> = vec![
        (&[], "empty"),
        (&[0x91, 0x01], "array"),
        (&[0x81, 0x01, 0x01], "int key"),
        (
            &[0x81, 0xa5, b'e', b't', b'y', b'p', b'e', 0xa2, 0xff, 0xfe],
            "bad utf8",
        ),
        (&[0xdf, 0xff, 0xff, 0xff, 0xff], "absurd map length"),
        (
            &[
                0x81, 0xa4, b'd', b'a', b't', b'a', 0xc6, 0x7f, 0xff, 0xff, 0xff,
            ],
            "absurd bin",
        ),
        (&[0xc1], "never-used marker"),
        (&[0x80], "no etype"),
        (
            &[0x81, 0xa5, b'e', b't', b'y', b'p', b'e', 0x01],
            "int etype",
        ),
    ];
    for (bytes, what) in cases {
        assert!(read_envelope(bytes).is_err(), "{what}");
    }
    let mut deep = vec![0x81, 0xa4, b'd', b'a', b't', b'a'];
    deep.extend(std::iter::repeat_n(0x91, 100_000));
    deep.push(0xc0);
    assert_eq!(
        read_envelope(&deep),
        Err(DecodeError::TooDeep {
            limit: read::MAX_DEPTH
        })
    );
    // Two messages in one frame.
    let (_, mut two) = case("s2c_remove");
    two.extend(two.clone());
    assert!(matches!(
        read_envelope(&two),
        Err(DecodeError::TrailingBytes { .. })
    ));
}

#[test]
fn json_text_frames_decode_like_msgpack() {
    let text = br#"{"ts": 1700000000500, "data": {"nodes": [{"key": "box", "tag": "Box", "position": [0, 0.5, 0]}], "to": null}, "etype": "UPSERT"}"#;
    let ev = ServerEvent::from_json(bytes::BytesMut::from(&text[..])).unwrap();
    assert!(ev.was_json());
    assert_eq!(ev.etype(), "UPSERT");
    assert_eq!(ev.ts(), Some(TS as i64));
    assert_eq!(
        ev.data().unwrap()["nodes"][0]["position"][1],
        Value::F64(0.5)
    );
}

#[test]
fn frames_carry_exactly_the_message_on_every_path() {
    let mut rng = MaskRng::from_os();
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xc0; 3],
        vec![0xaa; 40],
        vec![0x11; 120],
        vec![0x22; 70_000],
    ];
    let tails: Vec<Bytes> = vec![
        Bytes::new(),
        Bytes::from(vec![0xc3; 9]),
        Bytes::from(vec![0x5a; 300]),
    ];
    for ts in [0u64, 127, 70_000, TS] {
        for entries in [1u32, 2, 14, 15, 20, WHOLE] {
            for body in &bodies {
                for tail in &tails {
                    let h = Header {
                        ts_ms: ts,
                        entries,
                        own_ts: true,
                        tail_mask: [0; 4],
                    };
                    let mut msg = Vec::new();
                    write_message(&mut msg, h, body, tail);
                    let mut frame = vec![0xee; 3]; // frames are appended
                    write_frame(&mut frame, h, body, tail, rng.next_mask());
                    let (op, data) = unframe(&frame[3..]);
                    assert_eq!(op, 2);
                    assert_eq!(
                        data,
                        msg,
                        "ts {ts} entries {entries} body {} tail {}",
                        body.len(),
                        tail.len()
                    );
                }
            }
        }
    }
}

#[test]
fn extras_are_the_top_level_entries_that_are_not_envelope_fields() {
    // Envelope fields of the wrong type are kept as extras; a later
    // duplicate of a field wins.
    let msg = Value::map([
        ("ts", Value::from("soon")),
        ("etype", Value::from("X")),
        ("uuid", Value::Int(5)),
        ("strict", Value::Int(1)),
        ("key", Value::Nil),
        ("rtype", Value::from("R")),
        ("x", Value::Array(vec![Value::Int(1)])),
        ("data", Value::Bin(vec![1, 2])),
        ("ts", Value::Int(5)),
        ("", Value::Nil),
        ("strict", Value::Bool(true)),
        ("x", Value::Int(2)),
    ]);
    let ev = ServerEvent::from_msgpack(msg.to_msgpack().into()).unwrap();
    assert_eq!(
        ev.extra_names().collect::<Vec<_>>(),
        ["ts", "uuid", "strict", "x", "", "x"]
    );
    assert_eq!(ev.extra("ts").unwrap().unwrap(), Value::from("soon"));
    assert_eq!(ev.extra("uuid").unwrap().unwrap(), Value::Int(5));
    assert_eq!(
        ev.extra("x").unwrap().unwrap(),
        Value::Array(vec![Value::Int(1)])
    );
    assert_eq!(ev.extra("").unwrap().unwrap(), Value::Nil);
    assert!(ev.extra("etype").is_none());
    assert!(ev.extra("data").is_none());
    assert!(ev.extra("rtype").is_none());
    assert_eq!(ev.ts(), Some(5));
    assert_eq!(ev.uuid(), None);
    assert_eq!(ev.key(), None);
    assert_eq!(ev.rtype(), Some("R"));
    assert_eq!(ev.strict(), Some(true));
    assert_eq!(ev.data().unwrap(), Value::Bin(vec![1, 2]));
    // No extras at all.
    let (_, bytes) = case("s2c_grab_render_rpc");
    let ev = ServerEvent::from_msgpack(bytes.into()).unwrap();
    assert_eq!(ev.extra_names().count(), 0);
    assert!(ev.extra("uuid").is_none());
}
