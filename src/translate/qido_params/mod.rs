//! QIDO-RS query → Study Root C-FIND identifier (PS3.18 §8.3.4, §10.6.3;
//! PS3.4 C.2.2.2, C.6.2). The reverse of [`super::query`]'s direction A.
//!
//! Matching parameters become keys with a value, `includefield`s and the
//! default return attributes of the level (PS3.18 Tables 10.6.3-3..5) keys
//! without one. Every problem names the parameter that caused it.

use super::query::Level;
use crate::dicom::uid;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use std::collections::BTreeMap;

/// What the C-FIND side needs to answer a QIDO request.
#[derive(Debug, Clone, PartialEq)]
pub struct FindRequest {
    pub level: Level,
    pub identifier: InMemDicomObject,
    /// At most this many matches (the PACS has no paging: we stop it).
    pub limit: Option<usize>,
    /// Skip this many matches first.
    pub offset: usize,
    /// Asked for; C-FIND cannot negotiate it per query, so it is reported as unsupported.
    pub fuzzy: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("query parameter '{param}': {problem}")]
pub struct ParamError {
    pub param: String,
    pub problem: String,
}

fn bad(param: &str, problem: impl Into<String>) -> ParamError {
    ParamError {
        param: param.to_owned(),
        problem: problem.into(),
    }
}

/// PS3.18 Table 10.6.3-3: returned for every matching study.
const STUDY_DEFAULTS: &[Tag] = &[
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::INSTANCE_AVAILABILITY,
    tags::MODALITIES_IN_STUDY,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::STUDY_DESCRIPTION,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_ID,
    tags::NUMBER_OF_STUDY_RELATED_SERIES,
    tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
];

/// PS3.18 Table 10.6.3-4 (Request Attribute Sequence is left out: PACS
/// rarely match sequences and some refuse them).
const SERIES_DEFAULTS: &[Tag] = &[
    tags::MODALITY,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::SERIES_DESCRIPTION,
    tags::SERIES_INSTANCE_UID,
    tags::SERIES_NUMBER,
    tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
    tags::PERFORMED_PROCEDURE_STEP_START_DATE,
    tags::PERFORMED_PROCEDURE_STEP_START_TIME,
];

/// PS3.18 Table 10.6.3-5.
const INSTANCE_DEFAULTS: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::INSTANCE_AVAILABILITY,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::INSTANCE_NUMBER,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::NUMBER_OF_FRAMES,
];

/// `includefield=all`: the common optional keys of PS3.4 C.6.2.1 on top of the defaults.
const STUDY_ALL: &[Tag] = &[
    tags::PATIENT_BIRTH_TIME,
    tags::ISSUER_OF_PATIENT_ID,
    tags::OTHER_PATIENT_NAMES,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    tags::OCCUPATION,
    tags::ADDITIONAL_PATIENT_HISTORY,
    tags::PATIENT_COMMENTS,
    tags::NAME_OF_PHYSICIANS_READING_STUDY,
    tags::ADMITTING_DIAGNOSES_DESCRIPTION,
    tags::SOP_CLASSES_IN_STUDY,
];
const SERIES_ALL: &[Tag] = &[
    tags::SERIES_DATE,
    tags::SERIES_TIME,
    tags::BODY_PART_EXAMINED,
    tags::PROTOCOL_NAME,
    tags::LATERALITY,
    tags::PERFORMING_PHYSICIAN_NAME,
    tags::OPERATORS_NAME,
];
const INSTANCE_ALL: &[Tag] = &[
    tags::IMAGE_TYPE,
    tags::CONTENT_DATE,
    tags::CONTENT_TIME,
    tags::ACQUISITION_NUMBER,
];

/// The keys a response carries at `level`: its own defaults, and those of
/// the levels above when the path does not pin them down.
fn default_keys(level: Level, study: bool, series: bool, all: bool) -> Vec<Tag> {
    let mut keys = Vec::new();
    let mut add = |defaults: &[Tag], extra: &[Tag]| {
        keys.extend_from_slice(defaults);
        if all {
            keys.extend_from_slice(extra);
        }
    };
    match level {
        Level::Patient | Level::Study => add(STUDY_DEFAULTS, STUDY_ALL),
        Level::Series => {
            if !study {
                add(STUDY_DEFAULTS, STUDY_ALL);
            }
            add(SERIES_DEFAULTS, SERIES_ALL);
        }
        Level::Image => {
            if !study {
                add(STUDY_DEFAULTS, STUDY_ALL);
            }
            if !series {
                add(SERIES_DEFAULTS, SERIES_ALL);
            }
            add(INSTANCE_DEFAULTS, INSTANCE_ALL);
        }
    }
    // The UIDs of every level up to this one: RetrieveURL is built from them.
    keys.push(tags::STUDY_INSTANCE_UID);
    if matches!(level, Level::Series | Level::Image) {
        keys.push(tags::SERIES_INSTANCE_UID);
    }
    keys
}

/// An attribute named by keyword (`PatientName`) or tag (`00100010`).
pub(crate) fn attribute(name: &str) -> Option<(Tag, VR)> {
    let tag = if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        Tag(
            u16::from_str_radix(&name[..4], 16).ok()?,
            u16::from_str_radix(&name[4..], 16).ok()?,
        )
    } else {
        StandardDataDictionary.by_name(name)?.tag()
    };
    Some((tag, vr_of(tag)?))
}

pub(crate) fn vr_of(tag: Tag) -> Option<VR> {
    StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed())
}

/// `Seq.Key` or `Key`: the sequence (if any) and the attribute.
fn attribute_path(param: &str, name: &str) -> Result<(Option<Tag>, Tag, VR), ParamError> {
    let parts: Vec<&str> = name.split('.').collect();
    let resolve =
        |n: &str| attribute(n).ok_or_else(|| bad(param, format!("unknown attribute {n}")));
    let (seq, (tag, vr)) = match parts.as_slice() {
        [one] => (None, resolve(one)?),
        [seq, key] => {
            let (seq, seq_vr) = resolve(seq)?;
            if seq_vr != VR::SQ {
                return Err(bad(param, format!("{} is not a sequence", parts[0])));
            }
            (Some(seq), resolve(key)?)
        }
        _ => {
            return Err(bad(
                param,
                "only one level of sequence nesting is supported",
            ))
        }
    };
    if tag.group() == 0x0000
        || tag.group() == 0x0002
        || tag == tags::SPECIFIC_CHARACTER_SET
        || tag == tags::QUERY_RETRIEVE_LEVEL
    {
        return Err(bad(param, "not a queryable attribute"));
    }
    Ok((seq, tag, vr))
}

/// `a`, `a-`, `-b` or `a-b`, each side checked by `valid`.
fn range_ok(v: &str, valid: impl Fn(&str) -> bool) -> bool {
    match v.split_once('-') {
        None => valid(v),
        Some(("", "")) => false,
        Some((a, b)) => (a.is_empty() || valid(a)) && (b.is_empty() || valid(b)),
    }
}

fn digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn date_ok(s: &str) -> bool {
    s.len() == 8
        && digits(s)
        && (1..=12).contains(&s[4..6].parse::<u8>().unwrap_or(0))
        && (1..=31).contains(&s[6..8].parse::<u8>().unwrap_or(0))
}

fn time_ok(s: &str) -> bool {
    let (hms, frac) = s.split_once('.').unwrap_or((s, "0"));
    let hms = hms.replace(':', "");
    matches!(hms.len(), 2 | 4 | 6)
        && digits(&hms)
        && hms[..2].parse::<u8>().is_ok_and(|h| h < 24)
        && (1..=6).contains(&frac.len())
        && digits(frac)
}

pub(crate) fn datetime_ok(s: &str) -> bool {
    // YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]. Only checked: the value goes to
    // the PACS as written, so a negative offset read as a range does no harm.
    let (main, _zone) = match s.find('+') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let (whole, frac) = main.split_once('.').unwrap_or((main, "0"));
    matches!(whole.len(), 4 | 6 | 8 | 10 | 12 | 14) && digits(whole) && digits(frac)
}

/// The value to send for `vr`, or why it cannot be matched.
fn matching_value(param: &str, vr: VR, value: &str) -> Result<PrimitiveValue, ParamError> {
    let not_a = |what: &str| Err(bad(param, format!("'{value}' is not {what}")));
    // Numbers: checked, and sent in binary for the binary VRs.
    fn num<T: std::str::FromStr>(v: &str) -> Option<T> {
        v.trim().parse().ok()
    }
    let number = |parsed: Option<PrimitiveValue>| match parsed {
        Some(v) => Ok(v),
        None => not_a(&format!("a number that fits {vr:?}")),
    };
    let text = || PrimitiveValue::from(value);
    match vr {
        VR::UI => {
            let uids: Vec<&str> = value.split([',', '\\']).map(str::trim).collect();
            if let Some(u) = uids.iter().find(|u| !uid::is_valid(u)) {
                return Err(bad(param, format!("'{u}' is not a valid UID")));
            }
            Ok(PrimitiveValue::Strs(
                uids.iter().map(|u| u.to_string()).collect(),
            ))
        }
        VR::DA if !range_ok(value, date_ok) => not_a("a date (YYYYMMDD) or date range"),
        VR::TM if !range_ok(value, time_ok) => not_a("a time (HHMMSS) or time range"),
        VR::DT if !range_ok(value, datetime_ok) => not_a("a date-time or date-time range"),
        VR::IS => number(num::<i64>(value).map(|_| text())),
        VR::DS => number(num::<f64>(value).map(|_| text())),
        VR::US => number(num::<u16>(value).map(PrimitiveValue::from)),
        VR::SS => number(num::<i16>(value).map(PrimitiveValue::from)),
        VR::UL => number(num::<u32>(value).map(PrimitiveValue::from)),
        VR::SL => number(num::<i32>(value).map(PrimitiveValue::from)),
        VR::UV => number(num::<u64>(value).map(PrimitiveValue::from)),
        VR::SV => number(num::<i64>(value).map(PrimitiveValue::from)),
        VR::FL => number(num::<f32>(value).map(PrimitiveValue::from)),
        VR::FD => number(num::<f64>(value).map(PrimitiveValue::from)),
        VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN => {
            Err(bad(param, "binary attributes cannot be matched"))
        }
        VR::SQ => Err(bad(
            param,
            "a sequence is matched through its items: Sequence.Attribute=value",
        )),
        _ => Ok(text()),
    }
}

/// Add a key at the top or inside the sequence's item; a value wins over an empty key.
fn put(
    top: &mut InMemDicomObject,
    items: &mut BTreeMap<Tag, InMemDicomObject>,
    seq: Option<Tag>,
    tag: Tag,
    vr: VR,
    v: PrimitiveValue,
) {
    let obj = match seq {
        None => top,
        Some(s) => items.entry(s).or_insert_with(InMemDicomObject::new_empty),
    };
    if v != PrimitiveValue::Empty || obj.get(tag).is_none() {
        obj.put(DataElement::new(tag, vr, v));
    }
}

/// Translate a QIDO-RS request on the resource at `level` (with the UIDs its
/// path names) into a Study Root C-FIND request.
pub fn qido_to_cfind(
    level: Level,
    study: Option<&str>,
    series: Option<&str>,
    params: &[(String, String)],
) -> Result<FindRequest, ParamError> {
    let defaults = |all| {
        default_keys(level, study.is_some(), series.is_some(), all)
            .into_iter()
            .map(|t| (None, t))
            .collect()
    };
    let mut request = to_identifier(params, defaults, study, series)?;
    request.level = level;
    request.identifier.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(level.code()),
    ));
    Ok(request)
}

/// The identifier of a C-FIND: `defaults(all)` (sequence, attribute) asked
/// back, the parameters' matching and return keys, the path's UIDs.
fn to_identifier(
    params: &[(String, String)],
    defaults: impl Fn(bool) -> Vec<(Option<Tag>, Tag)>,
    study: Option<&str>,
    series: Option<&str>,
) -> Result<FindRequest, ParamError> {
    for (what, uid) in [
        ("study UID in the path", study),
        ("series UID in the path", series),
    ] {
        if let Some(u) = uid.filter(|u| !uid::is_valid(u)) {
            return Err(bad(what, format!("'{u}' is not a valid UID")));
        }
    }
    let mut limit = None;
    let mut offset = 0;
    let mut fuzzy = false;
    let mut all = false;
    let mut returns: Vec<(Option<Tag>, Tag, VR)> = Vec::new();
    let mut matches: BTreeMap<(Option<Tag>, Tag), (VR, PrimitiveValue)> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (key, value) in params {
        if key != "includefield" && !seen.insert(key.as_str()) {
            return Err(bad(key, "given more than once"));
        }
        match key.as_str() {
            "limit" | "offset" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| bad(key, format!("'{value}' is not a non-negative integer")))?;
                if key == "limit" {
                    limit = Some(n);
                } else {
                    offset = n;
                }
            }
            "fuzzymatching" => {
                fuzzy = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(key, "must be true or false")),
                }
            }
            "includefield" => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if name == "all" {
                        all = true;
                    } else {
                        returns.push(attribute_path(key, name)?);
                    }
                }
            }
            _ => {
                let (seq, tag, vr) = attribute_path(key, key)?;
                let in_path = (tag == tags::STUDY_INSTANCE_UID && study.is_some())
                    || (tag == tags::SERIES_INSTANCE_UID && series.is_some());
                if in_path && seq.is_none() {
                    return Err(bad(key, "is given by the path already"));
                }
                if value.is_empty() {
                    // Universal matching: the same as asking for it back.
                    returns.push((seq, tag, vr));
                } else {
                    let v = matching_value(key, vr, value)?;
                    matches.insert((seq, tag), (vr, v));
                }
            }
        }
    }

    let mut top = InMemDicomObject::new_empty();
    let mut items: BTreeMap<Tag, InMemDicomObject> = BTreeMap::new();
    for (seq, tag) in defaults(all) {
        let vr = vr_of(tag).unwrap_or(VR::UN);
        put(&mut top, &mut items, seq, tag, vr, PrimitiveValue::Empty);
    }
    for (seq, tag, vr) in returns {
        if vr == VR::SQ && seq.is_none() {
            items.entry(tag).or_insert_with(InMemDicomObject::new_empty);
        } else {
            put(&mut top, &mut items, seq, tag, vr, PrimitiveValue::Empty);
        }
    }
    for ((seq, tag), (vr, v)) in matches {
        put(&mut top, &mut items, seq, tag, vr, v);
    }
    for (seq, item) in items {
        // An empty item asks for the whole sequence (universal matching).
        let seq_items = if item.iter().next().is_none() {
            vec![]
        } else {
            vec![item]
        };
        top.put(DataElement::new(
            seq,
            VR::SQ,
            DataSetSequence::from(seq_items),
        ));
    }
    if let Some(s) = study {
        top.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(s),
        ));
    }
    if let Some(s) = series {
        top.put(DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(s),
        ));
    }
    if params.iter().any(|(_, v)| !v.is_ascii()) {
        top.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }
    Ok(FindRequest {
        level: Level::Patient,
        identifier: top,
        limit,
        offset,
        fuzzy,
    })
}

mod worklist;
pub use worklist::mwl_to_cfind;

#[cfg(test)]
mod tests;
