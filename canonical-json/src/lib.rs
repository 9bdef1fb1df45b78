//! The canonical JSON form: what Lockstep hashes, signs and seals when the input is JSON
//! (listener manifest digests, which publishers sign and approvers approve, and audit-chain
//! events). One implementation, so two places can never disagree on the bytes of one value.
//!
//! The form: no insignificant whitespace; object keys sorted by their UTF-8 bytes at every
//! level, whatever the map's own order; strings, numbers and literals exactly as `serde_json`
//! writes them (so `"é"` stays a UTF-8 character, a control character becomes `\u00XX` or its
//! short escape). Changing any byte of this form changes every digest and every audit hash
//! ever made: the tests pin it.

use serde_json::Value;

/// `value` in canonical form.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                write(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The bytes are pinned: a change here changes every manifest digest and audit hash.
    #[test]
    fn the_form_is_pinned_byte_for_byte() {
        let v = json!({
            "zeta": [3, 1.5, -0, true, null, "x"],
            "alpha": {"b": "é\n\"\\\u{1}", "a": {}},
            "Beta": [],
            "": 10_000_000_000_u64
        });
        assert_eq!(
            to_string(&v),
            r#"{"":10000000000,"Beta":[],"alpha":{"a":{},"b":"é\n\"\\\u0001"},"zeta":[3,1.5,0,true,null,"x"]}"#
        );
    }

    #[test]
    fn keys_sort_by_bytes_not_by_insertion_or_case() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":1},"B":0}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"B":0,"a":{"x":1,"y":2},"b":1}"#).unwrap();
        assert_eq!(to_string(&a), to_string(&b));
        assert_eq!(to_string(&a), r#"{"B":0,"a":{"x":1,"y":2},"b":1}"#);
        // Multi-byte keys sort after ASCII ones, by their UTF-8 bytes.
        let c = json!({"é": 1, "z": 2, "a": 3});
        assert_eq!(to_string(&c), r#"{"a":3,"z":2,"é":1}"#);
    }
}
