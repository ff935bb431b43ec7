//! Data set ⇄ DICOM JSON (PS3.18 Annex F). Writing has a BulkDataURI
//! policy; reading ([`from_json`]) is dicom-json's, after normalisation.
//!
//! dicom-json writes every binary value as InlineBinary (pixel data too) and
//! has no BulkDataURI, so the model is written here with serde_json.
//!
//! Bulk data paths: an element is named by its tag as 8 upper-case hex digits;
//! inside a sequence, by the sequence's tag, the item index (0-based) and the
//! element's tag, joined by `/`: `7FE00010`, `00540016/0/00181072`. The
//! caller turns a path into a URL (WADO serves `{instance}/bulkdata/{path}`),
//! and [`find_bulk`] reads the path back.

use base64::Engine;
use dicom_core::header::Header;
use dicom_core::value::Value as DicomValue;
use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use serde_json::{json, Map, Number, Value};

mod read;
pub use read::from_json;

/// How binary values are written.
pub enum Bulk<'a> {
    /// Everything inline (InlineBinary): QIDO answers, small data sets.
    Inline,
    /// Binary values (OB, OW, OF, OD, OL, OV, UN) longer than `threshold`
    /// bytes, and pixel data always, become `BulkDataURI: uri(path)`.
    Uri {
        threshold: usize,
        uri: &'a dyn Fn(&str) -> String,
    },
}

/// The DICOM JSON object of a data set.
pub fn to_json(obj: &InMemDicomObject, bulk: &Bulk) -> Value {
    Value::Object(object(obj, "", bulk))
}

/// `GGGGEEEE`, the JSON model's key for a tag.
pub fn tag_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

fn object(obj: &InMemDicomObject, prefix: &str, bulk: &Bulk) -> Map<String, Value> {
    let mut map = Map::new();
    for e in obj.iter() {
        // Group lengths are not part of the JSON model.
        if e.tag().element() == 0 {
            continue;
        }
        let key = tag_key(e.tag());
        let path = format!("{prefix}{key}");
        map.insert(key, element(e, &path, bulk));
    }
    map
}

fn is_binary(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN
    )
}

fn is_pixel_data(tag: Tag) -> bool {
    tag == tags::PIXEL_DATA || tag == tags::FLOAT_PIXEL_DATA || tag == tags::DOUBLE_FLOAT_PIXEL_DATA
}

fn element(e: &InMemElement, path: &str, bulk: &Bulk) -> Value {
    let vr = e.vr();
    let mut out = Map::new();
    out.insert("vr".into(), Value::String(vr.to_string().into()));
    let bulk_uri = |size: usize, always: bool| match bulk {
        Bulk::Uri { threshold, uri } if always || size > *threshold => Some(uri(path)),
        _ => None,
    };
    match e.value() {
        DicomValue::Sequence(seq) => {
            let items: Vec<Value> = seq
                .items()
                .iter()
                .enumerate()
                .map(|(i, item)| Value::Object(object(item, &format!("{path}/{i}/"), bulk)))
                .collect();
            if !items.is_empty() {
                out.insert("Value".into(), Value::Array(items));
            }
        }
        // Encapsulated pixel data has no inline form worth sending.
        DicomValue::PixelSequence(_) => {
            if let Some(uri) = bulk_uri(usize::MAX, true) {
                out.insert("BulkDataURI".into(), Value::String(uri));
            }
        }
        DicomValue::Primitive(PrimitiveValue::Empty) => {}
        DicomValue::Primitive(v) if is_binary(vr) || is_pixel_data(e.tag()) => {
            if let Some(uri) = bulk_uri(v.calculate_byte_len(), is_pixel_data(e.tag())) {
                out.insert("BulkDataURI".into(), Value::String(uri));
            } else {
                let b64 = base64::engine::general_purpose::STANDARD.encode(v.to_bytes());
                out.insert("InlineBinary".into(), Value::String(b64));
            }
        }
        DicomValue::Primitive(v) => {
            let values = primitive(vr, v);
            if values.iter().any(|v| !v.is_null()) {
                out.insert("Value".into(), Value::Array(values));
            }
        }
    }
    Value::Object(out)
}

/// The `Value` array of a non-binary primitive; empty values are `null`.
fn primitive(vr: VR, v: &PrimitiveValue) -> Vec<Value> {
    match (vr, v) {
        (VR::AT, PrimitiveValue::Tags(t)) => t.iter().map(|t| Value::String(tag_key(*t))).collect(),
        (_, PrimitiveValue::I16(n)) => n.iter().map(|&n| json!(n)).collect(),
        (_, PrimitiveValue::U16(n)) => n.iter().map(|&n| json!(n)).collect(),
        (_, PrimitiveValue::I32(n)) => n.iter().map(|&n| json!(n)).collect(),
        (_, PrimitiveValue::U32(n)) => n.iter().map(|&n| json!(n)).collect(),
        (_, PrimitiveValue::I64(n)) => n.iter().map(|&n| json!(n)).collect(),
        (_, PrimitiveValue::U64(n)) => n.iter().map(|&n| json!(n)).collect(),
        (_, PrimitiveValue::U8(n)) => n.iter().map(|&n| json!(n)).collect(),
        (_, PrimitiveValue::F32(n)) => n.iter().map(|&n| float(n as f64)).collect(),
        (_, PrimitiveValue::F64(n)) => n.iter().map(|&n| float(n)).collect(),
        _ => strings(vr, v)
            .into_iter()
            .map(|s| match s {
                None => Value::Null,
                Some(s) => match vr {
                    VR::PN => person_name(&s),
                    VR::IS
                    | VR::DS
                    | VR::SS
                    | VR::US
                    | VR::SL
                    | VR::UL
                    | VR::SV
                    | VR::UV
                    | VR::FL
                    | VR::FD => number(&s),
                    _ => Value::String(s),
                },
            })
            .collect(),
    }
}

/// Text values without their padding; `None` for an empty value.
fn strings(vr: VR, v: &PrimitiveValue) -> Vec<Option<String>> {
    // These four are single-valued: a backslash is text, not a delimiter.
    let values: Vec<String> = match vr {
        VR::LT | VR::ST | VR::UT | VR::UR => vec![v.to_str().into_owned()],
        _ => v.to_multi_str().into_owned(),
    };
    values
        .into_iter()
        .map(|s| {
            let s = match vr {
                // Leading spaces are significant only in the long text VRs and PN components.
                VR::LT | VR::ST | VR::UT | VR::PN | VR::LO | VR::SH | VR::UC => {
                    s.trim_end_matches([' ', '\0']).to_owned()
                }
                _ => s.trim_matches([' ', '\0']).to_owned(),
            };
            (!s.is_empty()).then_some(s)
        })
        .collect()
}

fn float(n: f64) -> Value {
    // JSON has no NaN or infinity.
    Number::from_f64(n).map_or_else(|| Value::String(n.to_string()), Value::Number)
}

/// IS/DS text as a JSON number; a value that is no number stays a string
/// rather than being lost.
fn number(s: &str) -> Value {
    if let Ok(i) = s.parse::<i64>() {
        return json!(i);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => float(f),
        _ => Value::String(s.to_owned()),
    }
}

/// `Alphabetic=Ideographic=Phonetic` → `{"Alphabetic": …}` (empty groups left out).
fn person_name(s: &str) -> Value {
    let mut map = Map::new();
    for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"]
        .into_iter()
        .zip(s.split('='))
    {
        let group = group.trim_end_matches(' ');
        if !group.is_empty() {
            map.insert(name.into(), Value::String(group.to_owned()));
        }
    }
    if map.is_empty() {
        Value::Null
    } else {
        Value::Object(map)
    }
}

/// The element a bulk data path names, if the data set has it.
pub fn find_bulk<'a>(obj: &'a InMemDicomObject, path: &str) -> Option<&'a InMemElement> {
    let mut parts = path.split('/');
    let mut current = obj;
    loop {
        let tag = parse_tag(parts.next()?)?;
        let e = current.get(tag)?;
        let Some(index) = parts.next() else {
            return Some(e);
        };
        let index: usize = index.parse().ok()?;
        current = e.items()?.get(index)?;
    }
}

pub(super) fn parse_tag(s: &str) -> Option<Tag> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let g = u16::from_str_radix(&s[..4], 16).ok()?;
    let e = u16::from_str_radix(&s[4..], 16).ok()?;
    Some(Tag(g, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::{DataSetSequence, PixelFragmentSequence};
    use dicom_core::DataElement;

    fn one(tag: Tag, vr: VR, value: PrimitiveValue) -> InMemDicomObject {
        InMemDicomObject::from_element_iter([DataElement::new(tag, vr, value)])
    }

    fn json_of(obj: &InMemDicomObject) -> Value {
        to_json(obj, &Bulk::Inline)
    }

    #[test]
    fn text_vrs_are_strings_without_padding() {
        let obj = one(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(
                vec![
                    String::from("ORIGINAL "),
                    String::from(""),
                    String::from("AXIAL"),
                ]
                .into(),
            ),
        );
        assert_eq!(
            json_of(&obj),
            json!({"00080008": {"vr": "CS", "Value": ["ORIGINAL", null, "AXIAL"]}})
        );
        let obj = one(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3\0"),
        );
        assert_eq!(json_of(&obj)["0020000D"]["Value"], json!(["1.2.3"]));
        let obj = one(tags::STUDY_DATE, VR::DA, PrimitiveValue::from("20240131"));
        assert_eq!(
            json_of(&obj)["00080020"],
            json!({"vr": "DA", "Value": ["20240131"]})
        );
        // A backslash in LT is text.
        let obj = one(
            tags::ADDITIONAL_PATIENT_HISTORY,
            VR::LT,
            PrimitiveValue::Str(String::from("  a\\b ")),
        );
        assert_eq!(json_of(&obj)["001021B0"]["Value"], json!(["  a\\b"]));
        let obj = one(
            tags::RETRIEVE_URL,
            VR::UR,
            PrimitiveValue::Str(String::from("http://x/y")),
        );
        assert_eq!(json_of(&obj)["00081190"]["Value"], json!(["http://x/y"]));
        let obj = one(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            PrimitiveValue::from("Müller Kopf"),
        );
        assert_eq!(json_of(&obj)["00081030"]["Value"], json!(["Müller Kopf"]));
    }

    #[test]
    fn person_names_are_component_groups() {
        let obj = one(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::Strs(vec![String::from("Yamada^Tarou=山田^太郎=やまだ^たろう")].into()),
        );
        assert_eq!(
            json_of(&obj)["00100010"]["Value"],
            json!([{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}])
        );
        let obj = one(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("Doe^John "),
        );
        assert_eq!(
            json_of(&obj)["00100010"]["Value"],
            json!([{"Alphabetic": "Doe^John"}])
        );
        let obj = one(
            tags::OTHER_PATIENT_NAMES,
            VR::PN,
            PrimitiveValue::Strs(
                vec![String::from("A^B"), String::from(""), String::from("=C^D")].into(),
            ),
        );
        assert_eq!(
            json_of(&obj)["00101001"]["Value"],
            json!([{"Alphabetic": "A^B"}, null, {"Ideographic": "C^D"}])
        );
    }

    #[test]
    fn numbers_are_json_numbers() {
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(512u16)),
            DataElement::new(
                tags::PIXEL_SPACING,
                VR::DS,
                PrimitiveValue::Strs(vec![String::from("0.5"), String::from(" 2 ")].into()),
            ),
            DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from("12 ")),
            DataElement::new(
                tags::TAG_ANGLE_SECOND_AXIS,
                VR::SL,
                PrimitiveValue::I32(vec![-7].into()),
            ),
            DataElement::new(
                tags::SIMPLE_FRAME_LIST,
                VR::UL,
                PrimitiveValue::U32(vec![1, 4_000_000_000].into()),
            ),
            DataElement::new(
                tags::PIXEL_PADDING_VALUE,
                VR::SS,
                PrimitiveValue::I16(vec![-2000].into()),
            ),
            DataElement::new(
                tags::RECOMMENDED_DISPLAY_FRAME_RATE_IN_FLOAT,
                VR::FL,
                PrimitiveValue::F32(vec![2.5].into()),
            ),
            DataElement::new(
                tags::EVENT_ELAPSED_TIMES,
                VR::DS,
                PrimitiveValue::from("garbage"),
            ),
            DataElement::new(
                tags::FRAME_TIME,
                VR::FD,
                PrimitiveValue::F64(vec![f64::NAN, 1.25].into()),
            ),
        ]);
        let j = json_of(&obj);
        assert_eq!(j["00280010"]["Value"], json!([512]));
        assert_eq!(j["00280030"]["Value"], json!([0.5, 2]));
        assert_eq!(j["00200011"]["Value"], json!([12]));
        assert_eq!(j["00189219"]["Value"], json!([-7]));
        assert_eq!(j["00081161"]["Value"], json!([1, 4_000_000_000u32]));
        assert_eq!(j["00280120"]["Value"], json!([-2000]));
        assert_eq!(j["00089459"]["Value"], json!([2.5]));
        assert_eq!(j["00181063"]["Value"], json!(["NaN", 1.25]));
        // Not a number: kept as text rather than dropped.
        assert_eq!(j["00082130"]["Value"], json!(["garbage"]));
    }

    #[test]
    fn attribute_tags_are_hex_strings() {
        let obj = one(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::Tags(vec![tags::FRAME_TIME, Tag(0x0018, 0x1065)].into()),
        );
        assert_eq!(
            json_of(&obj)["00280009"]["Value"],
            json!(["00181063", "00181065"])
        );
    }

    #[test]
    fn empty_values_have_only_the_vr() {
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::Empty),
            DataElement::new(
                tags::ACCESSION_NUMBER,
                VR::SH,
                PrimitiveValue::Strs(vec![String::from("")].into()),
            ),
            DataElement::new(
                tags::ICON_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::<InMemDicomObject>::empty(),
            ),
            DataElement::new(Tag(0x0009, 0x1011), VR::OB, PrimitiveValue::Empty),
            DataElement::new(Tag(0x0010, 0x0000), VR::UL, PrimitiveValue::from(4u32)),
        ]);
        assert_eq!(
            json_of(&obj),
            json!({
                "00100010": {"vr": "PN"},
                "00080050": {"vr": "SH"},
                "00880200": {"vr": "SQ"},
                "00091011": {"vr": "OB"},
            })
        );
    }

    #[test]
    fn sequences_are_arrays_of_objects() {
        let item = |code: &str| {
            InMemDicomObject::from_element_iter([DataElement::new(
                tags::CODE_VALUE,
                VR::SH,
                PrimitiveValue::from(code),
            )])
        };
        let obj = InMemDicomObject::from_element_iter([DataElement::new(
            tags::PROCEDURE_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item("A1"), item("B2")]),
        )]);
        assert_eq!(
            json_of(&obj),
            json!({"00081032": {"vr": "SQ", "Value": [
                {"00080100": {"vr": "SH", "Value": ["A1"]}},
                {"00080100": {"vr": "SH", "Value": ["B2"]}},
            ]}})
        );
    }

    fn with_bulk() -> InMemDicomObject {
        let small = DataElement::new(
            Tag(0x0009, 0x1010),
            VR::OB,
            PrimitiveValue::U8(vec![1, 2, 3, 4].into()),
        );
        let big = DataElement::new(
            tags::LUT_DATA,
            VR::OW,
            PrimitiveValue::U16(vec![7u16; 600].into()),
        );
        let item = InMemDicomObject::from_element_iter([big.clone()]);
        InMemDicomObject::from_element_iter([
            small,
            DataElement::new(
                tags::VOILUT_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item.clone(), item]),
            ),
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(vec![1, 2].into()),
            ),
        ])
    }

    #[test]
    fn binary_values_inline_when_not_bulk() {
        let j = json_of(&with_bulk());
        assert_eq!(
            j["00091010"],
            json!({"vr": "OB", "InlineBinary": "AQIDBA=="})
        );
        assert_eq!(
            j["7FE00010"],
            json!({"vr": "OW", "InlineBinary": "AQACAA=="})
        );
    }

    #[test]
    fn large_binary_values_and_pixel_data_become_bulk_data_uris() {
        let uri = |path: &str| format!("http://h/studies/1/series/2/instances/3/bulkdata/{path}");
        let bulk = Bulk::Uri {
            threshold: 1024,
            uri: &uri,
        };
        let obj = with_bulk();
        let j = to_json(&obj, &bulk);
        assert_eq!(j["00091010"]["InlineBinary"], json!("AQIDBA=="));
        assert_eq!(
            j["7FE00010"],
            json!({"vr": "OW", "BulkDataURI": "http://h/studies/1/series/2/instances/3/bulkdata/7FE00010"})
        );
        assert_eq!(
            j["00283010"]["Value"][1]["00283006"]["BulkDataURI"],
            json!("http://h/studies/1/series/2/instances/3/bulkdata/00283010/1/00283006")
        );
        // Every path written resolves back to its element.
        assert_eq!(
            find_bulk(&obj, "00283010/1/00283006").unwrap().tag(),
            tags::LUT_DATA
        );
        assert_eq!(find_bulk(&obj, "7FE00010").unwrap().tag(), tags::PIXEL_DATA);
        for bad in [
            "",
            "7FE0001",
            "00283010/2/00283006",
            "00283010/x/00283006",
            "00283010/0",
            "7FE00010/0/00283006",
            "ZZZZZZZZ",
        ] {
            assert!(find_bulk(&obj, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn encapsulated_pixel_data_is_bulk_only() {
        let obj = InMemDicomObject::from_element_iter([DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PixelFragmentSequence::new_fragments(vec![vec![0xFFu8, 0xD8]]),
        )]);
        assert_eq!(json_of(&obj), json!({"7FE00010": {"vr": "OB"}}));
        let uri = |p: &str| format!("/b/{p}");
        let j = to_json(
            &obj,
            &Bulk::Uri {
                threshold: 1 << 20,
                uri: &uri,
            },
        );
        assert_eq!(
            j,
            json!({"7FE00010": {"vr": "OB", "BulkDataURI": "/b/7FE00010"}})
        );
    }

    #[test]
    fn decoded_data_sets_convert() {
        // Values as the decoder builds them (binary US, text DS) convert alike.
        let obj: InMemDicomObject = dicom_json::from_str(
            r#"{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^J"}]},
                "00280010":{"vr":"US","Value":[256]},
                "00200032":{"vr":"DS","Value":[-125.5,0,12]}}"#,
        )
        .unwrap();
        let mut bytes = Vec::new();
        obj.write_dataset_with_ts(
            &mut bytes,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        let back = InMemDicomObject::read_dataset_with_ts(
            &bytes[..],
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        assert_eq!(
            json_of(&back),
            json!({
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J"}]},
                "00200032": {"vr": "DS", "Value": [-125.5, 0, 12]},
                "00280010": {"vr": "US", "Value": [256]},
            })
        );
    }
}
