//! JSON ↔ [`Value`] conversion.
//!
//! JSON to msgpack: `null`, booleans, strings, arrays and objects (maps, in
//! their order) map one to one; integers stay integers; other numbers
//! become `f32` (what Python's client writes) or `f64` with `--f64`. Two
//! object shapes stand for msgpack types JSON lacks: `{"$bin": "<base64>"}`
//! is `bin`, and `{"$ext": [TYPE, "<base64>"]}` an extension value.
//!
//! msgpack to JSON is the inverse (bin as `{"$bin": ...}`, or
//! `{"$bin_len": N}` in summary mode). JSON has no NaN or infinity: such
//! floats are written as `null`. `f32` values are written with their
//! shortest decimal form (0.1, not 0.10000000149011612).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{Map, Number, Value as Json};
use vuer_client::Value;

/// How JSON floats are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floats {
    /// As `f32` (the default; Python's `use_single_float=True`).
    F32,
    /// As `f64`.
    F64,
}

impl Floats {
    /// `F64` when `--f64` was given.
    pub fn from_flag(f64: bool) -> Floats {
        if f64 {
            Floats::F64
        } else {
            Floats::F32
        }
    }
}

/// How `bin` values are written as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    /// `{"$bin": "<base64>"}`: complete, can be sent again.
    Base64,
    /// `{"$bin_len": N}`: just the length.
    Summary,
}

/// Converts a JSON value into a msgpack [`Value`]. The error names the
/// JSON path of the problem, e.g. `value.position[1]`.
pub fn to_value(j: &Json, floats: Floats) -> Result<Value, String> {
    to_value_at(j, floats, &mut String::from("value"))
}

fn to_value_at(j: &Json, floats: Floats, path: &mut String) -> Result<Value, String> {
    Ok(match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => number(n, floats, path)?,
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(to_value_at(item, floats, path)?);
                path.truncate(len);
            }
            Value::Array(out)
        }
        Json::Object(map) => {
            if let Some(v) = special(map, path)? {
                return Ok(v);
            }
            let mut out = Vec::with_capacity(map.len());
            for (k, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                out.push((k.clone(), to_value_at(item, floats, path)?));
                path.truncate(len);
            }
            Value::Map(out)
        }
    })
}

fn number(n: &Number, floats: Floats, path: &str) -> Result<Value, String> {
    if let Some(i) = n.as_i64() {
        return Ok(Value::Int(i));
    }
    if let Some(u) = n.as_u64() {
        return Ok(Value::UInt(u));
    }
    let f = n
        .as_f64()
        .ok_or_else(|| format!("{path}: {n} is not a representable number"))?;
    match floats {
        Floats::F64 => Ok(Value::F64(f)),
        Floats::F32 => {
            let s = f as f32;
            if s.is_infinite() {
                Err(format!(
                    "{path}: {n} does not fit in an f32 (use --f64 to send 64-bit floats)"
                ))
            } else {
                Ok(Value::F32(s))
            }
        }
    }
}

/// `{"$bin": "..."}` and `{"$ext": [TYPE, "..."]}`.
fn special(map: &Map<String, Json>, path: &str) -> Result<Option<Value>, String> {
    if map.len() != 1 {
        return Ok(None);
    }
    let (k, v) = map.iter().next().expect("one entry");
    match (k.as_str(), v) {
        ("$bin", Json::String(s)) => B64
            .decode(s)
            .map(|b| Some(Value::Bin(b)))
            .map_err(|e| format!("{path}: invalid base64 in $bin: {e}")),
        ("$ext", Json::Array(parts)) => {
            let bad = || format!("{path}: $ext must be [TYPE (-128..127), \"<base64>\"]");
            let [tag, data] = parts.as_slice() else {
                return Err(bad());
            };
            let tag = tag
                .as_i64()
                .and_then(|t| i8::try_from(t).ok())
                .ok_or_else(bad)?;
            let data = data.as_str().ok_or_else(bad)?;
            let data = B64
                .decode(data)
                .map_err(|e| format!("{path}: invalid base64 in $ext: {e}"))?;
            Ok(Some(Value::Ext(tag, data)))
        }
        _ => Ok(None),
    }
}

/// Converts a msgpack [`Value`] into JSON.
pub fn from_value(v: &Value, bin: Bin) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        // The shortest decimal that reads back as the same f32.
        Value::F32(f) => float(f.to_string().parse::<f64>().unwrap_or(f64::NAN)),
        Value::F64(f) => float(*f),
        Value::Str(s) => Json::String(s.clone()),
        Value::Bin(b) => {
            let mut m = Map::new();
            match bin {
                Bin::Base64 => m.insert("$bin".into(), Json::String(B64.encode(b))),
                Bin::Summary => m.insert("$bin_len".into(), Json::from(b.len())),
            };
            Json::Object(m)
        }
        Value::Ext(tag, data) => {
            let mut m = Map::new();
            let data = match bin {
                Bin::Base64 => Json::String(B64.encode(data)),
                Bin::Summary => Json::from(data.len()),
            };
            m.insert("$ext".into(), Json::Array(vec![Json::from(*tag), data]));
            Json::Object(m)
        }
        Value::Array(items) => Json::Array(items.iter().map(|x| from_value(x, bin)).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, x)| (k.clone(), from_value(x, bin)))
                .collect(),
        ),
    }
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

/// Parses a JSON text (for error messages: what it was).
pub fn parse(text: &str, what: &str) -> Result<Json, String> {
    serde_json::from_str(text).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_keep_their_kind() {
        let v = to_value(&json!([1, -2, 0.5, 18446744073709551615u64]), Floats::F32).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Int(1),
                Value::Int(-2),
                Value::F32(0.5),
                Value::UInt(u64::MAX)
            ])
        );
        let v = to_value(&json!(0.1), Floats::F64).unwrap();
        assert_eq!(v, Value::F64(0.1));
    }

    #[test]
    fn too_big_for_f32_is_an_error_that_names_the_path() {
        let e = to_value(&json!({"a": [1e300]}), Floats::F32).unwrap_err();
        assert!(e.starts_with("value.a[0]: "), "{e}");
        assert!(e.contains("--f64"), "{e}");
        assert!(to_value(&json!({"a": [1e300]}), Floats::F64).is_ok());
    }

    #[test]
    fn maps_keep_their_order_and_special_shapes_round_trip() {
        let j = json!({"z": 1, "a": {"$bin": "AAEC"}, "e": {"$ext": [-1, "/w=="]}, "n": null});
        let v = to_value(&j, Floats::F32).unwrap();
        let keys: Vec<_> = v.as_map().unwrap().iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, ["z", "a", "e", "n"]);
        assert_eq!(v["a"], Value::Bin(vec![0, 1, 2]));
        assert_eq!(v["e"], Value::Ext(-1, vec![0xff]));
        assert_eq!(from_value(&v, Bin::Base64), j);
        assert_eq!(from_value(&v, Bin::Summary)["a"], json!({"$bin_len": 3}));
    }

    #[test]
    fn f32_is_written_in_its_shortest_form() {
        assert_eq!(from_value(&Value::F32(0.1), Bin::Base64).to_string(), "0.1");
        assert_eq!(from_value(&Value::F32(3.0), Bin::Base64).to_string(), "3.0");
        assert_eq!(from_value(&Value::F64(f64::NAN), Bin::Base64), Json::Null);
        // 3.0 reads back as a float, not an int.
        assert_eq!(
            to_value(&from_value(&Value::F32(3.0), Bin::Base64), Floats::F32).unwrap(),
            Value::F32(3.0)
        );
    }

    #[test]
    fn bad_special_shapes_are_errors() {
        assert!(to_value(&json!({"$bin": "!!"}), Floats::F32).is_err());
        assert!(to_value(&json!({"$ext": [300, ""]}), Floats::F32).is_err());
        // Not special: two keys, or a non-string $bin.
        assert!(matches!(
            to_value(&json!({"$bin": 1}), Floats::F32).unwrap(),
            Value::Map(_)
        ));
    }
}
