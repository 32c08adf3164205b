//! The inbound decoder on arbitrary input. The first byte picks the path:
//! even, a binary (msgpack) message; odd, a text (JSON) message. Nothing may
//! panic, and whatever decodes must decode completely and re-encode to a
//! message that decodes to the same thing.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use vuer_client::{RawEvent, ServerEvent, Value};

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let event = if selector & 1 == 0 {
        let ev = ServerEvent::from_msgpack(Bytes::copy_from_slice(data));
        // Outgoing validation accepts exactly what inbound decoding does.
        assert_eq!(
            ev.is_ok(),
            RawEvent::from_msgpack(Bytes::copy_from_slice(data)).is_ok()
        );
        ev
    } else {
        ServerEvent::from_json(BytesMut::from(data))
    };
    if let Ok(ev) = event {
        check(&ev);
    }
});

fn check(ev: &ServerEvent) {
    // The envelope validated everything: full decoding cannot fail.
    let whole = ev.to_value().expect("validated message decodes");
    let data = ev.data().expect("validated data decodes");
    let _ = ev.data_as::<serde_json::Value>();
    // Through serde, the same value (serde has no ext type).
    match ev.data_as::<Value>() {
        Ok(typed) => assert_eq!(typed.to_msgpack(), data.to_msgpack()),
        Err(e) => assert!(has_ext(&data), "data_as::<Value> failed: {e}"),
    }
    for name in ev.extra_names() {
        ev.extra(name)
            .expect("listed extra exists")
            .expect("extra decodes");
    }
    let _ = (
        ev.ts(),
        ev.uuid(),
        ev.rtype(),
        ev.key(),
        ev.strict(),
        ev.reply_etype(),
    );
    let _ = format!("{ev:?} {whole}");

    // Re-encoding: the canonical encoding of the message decodes to the
    // same envelope and is a fixed point.
    let bytes = whole.to_msgpack();
    let again =
        ServerEvent::from_msgpack(Bytes::from(bytes.clone())).expect("re-encoded message decodes");
    assert_eq!(again.etype(), ev.etype());
    assert_eq!(again.ts(), ev.ts());
    assert_eq!(again.uuid(), ev.uuid());
    assert_eq!(again.rtype(), ev.rtype());
    assert_eq!(again.key(), ev.key());
    assert_eq!(again.strict(), ev.strict());
    assert!(again.extra_names().eq(ev.extra_names()));
    assert_eq!(again.data().unwrap().to_msgpack(), data.to_msgpack());
    assert_eq!(again.to_value().unwrap().to_msgpack(), bytes);
}

fn has_ext(v: &Value) -> bool {
    match v {
        Value::Ext(..) => true,
        Value::Array(a) => a.iter().any(has_ext),
        Value::Map(m) => m.iter().any(|(_, v)| has_ext(v)),
        _ => false,
    }
}
