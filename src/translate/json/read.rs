//! DICOM JSON → data set. dicom-json reads the model strictly; what real
//! servers and clients send needs a little normalisation first:
//! - the data set wrapped in an array (some servers answer `[{…}]`);
//! - numbers sent as decimal strings (`"Value": ["274"]` for a US);
//! - `"Value": null`, and members other than vr/Value/InlineBinary/BulkDataURI;
//! - an attribute without its "vr": the dictionary's is taken, and one the
//!   dictionary does not know is dropped.
//!
//! Nesting is bounded by serde_json's recursion limit (128) when the body
//! was parsed, so the walk below cannot run away.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;
use serde_json::{Map, Number, Value};

const MEMBERS: [&str; 4] = ["vr", "Value", "InlineBinary", "BulkDataURI"];
const NUMERIC: [&str; 8] = ["US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"];

/// The data set of a DICOM JSON body, or why it is not one.
pub fn from_json(body: Value) -> Result<InMemDicomObject, String> {
    let mut value = match body {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        v => v,
    };
    let Some(obj) = value.as_object_mut() else {
        return Err("the body is not a DICOM JSON object".into());
    };
    normalise(obj)?;
    dicom_json::from_value(value).map_err(|e| format!("not DICOM JSON: {e}"))
}

fn normalise(obj: &mut Map<String, Value>) -> Result<(), String> {
    // dicom-core 0.10's Tag parser splits an 8-byte key at byte 4 and
    // panics inside a multi-byte character: a tag is ASCII or refused here.
    if let Some(key) = obj.keys().find(|k| !k.is_ascii()) {
        return Err(format!("attribute {key:?} is not a tag"));
    }
    obj.retain(|key, attr| {
        let Some(attr) = attr.as_object_mut() else {
            return true; // refused below, with its key
        };
        if attr.contains_key("vr") {
            return true;
        }
        let vr = super::parse_tag(key)
            .and_then(|tag| StandardDataDictionary.by_tag(tag))
            .map(|e| e.vr().relaxed().to_string());
        vr.map(|vr| attr.insert("vr".into(), vr.into())).is_some()
    });
    for (key, attr) in obj.iter_mut() {
        let Some(attr) = attr.as_object_mut() else {
            return Err(format!("attribute {key} is not an object"));
        };
        attr.retain(|member, v| MEMBERS.contains(&member.as_str()) && !v.is_null());
        let vr = attr
            .get("vr")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(Value::Array(values)) = attr.get_mut("Value") else {
            continue;
        };
        if vr == "SQ" {
            for item in values {
                match item.as_object_mut() {
                    Some(item) => normalise(item)?,
                    None => return Err(format!("an item of sequence {key} is not an object")),
                }
            }
        } else if NUMERIC.contains(&vr.as_str()) {
            for v in values {
                if let Some(n) = v.as_str().and_then(number) {
                    *v = Value::Number(n);
                }
            }
        }
    }
    Ok(())
}

fn number(s: &str) -> Option<Number> {
    let s = s.trim();
    s.parse::<u64>()
        .map(Number::from)
        .or_else(|_| s.parse::<i64>().map(Number::from))
        .ok()
        .or_else(|| s.parse::<f64>().ok().and_then(Number::from_f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;
    use serde_json::json;

    #[test]
    fn reads_what_servers_send() {
        let body = json!([{
            "00081198": {"vr": "SQ", "Value": [{
                "00081155": {"vr": "UI", "Value": ["1.2.3"]},
                "00081197": {"vr": "US", "Value": [" 274 "]}
            }]},
            "00081190": {"vr": "UR", "Value": null, "extra": 1},
            "00081150": {"Value": ["1.2.840.10008.1.20.1"]},
            "00991000": {"Value": ["a private attribute without its VR"]}
        }]);
        let obj = from_json(body).unwrap();
        let item = &obj.get(tags::FAILED_SOP_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(
            item.get(tags::FAILURE_REASON)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            274
        );
        assert!(obj.get(tags::RETRIEVE_URL).is_some());
        let class = obj.get(tags::REFERENCED_SOP_CLASS_UID).unwrap();
        assert_eq!(class.vr(), dicom_core::VR::UI);
        assert_eq!(obj.iter().count(), 3);
    }

    #[test]
    fn refuses_what_is_not_dicom_json() {
        for body in [
            json!("text"),
            json!([1, 2]),
            json!({"00081199": {"vr": "SQ", "Value": "x"}}),
            json!({"00081199": {"vr": "SQ", "Value": [1]}}),
            json!({"00081199": 3}),
            json!({"00081197": {"vr": "US", "Value": ["many"]}}),
        ] {
            assert!(from_json(body.clone()).is_err(), "{body}");
        }
    }

    /// Found by the dicom_json fuzz target: dicom-core's Tag::from_str
    /// panicked on an 8-byte key whose byte 4 is inside a character.
    #[test]
    fn refuses_keys_that_are_not_ascii() {
        let key = "1h\u{ffff}n30";
        assert_eq!(key.len(), 8);
        for body in [
            json!({ key: {"vr": "DS", "Value": [2.26]} }),
            json!({"00081199": {"vr": "SQ", "Value": [{ key: {"vr": "DS", "Value": [1]} }]}}),
        ] {
            assert!(from_json(body.clone()).is_err(), "{body}");
        }
    }
}
