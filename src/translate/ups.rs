//! Modality Worklist ⇄ Unified Procedure Step (UPS-RS workitems): where
//! each attribute of a scheduled procedure step lives in a workitem.
//!
//! | MWL                                          | UPS workitem                                        |
//! |----------------------------------------------|-----------------------------------------------------|
//! | SPS Start Date + Start Time                  | Scheduled Procedure Step Start DateTime             |
//! | SPS Modality                                 | Scheduled Station Class Code Sequence, Code Value (DCM) |
//! | SPS Scheduled Station AE Title               | Scheduled Station Name Code Sequence, Code Value    |
//! | SPS Scheduled Station Name                   | Scheduled Station Name Code Sequence, Code Meaning  |
//! | SPS Location                                 | Scheduled Station Geographic Location Code Sequence, Code Meaning |
//! | SPS Performing Physician's Name              | Scheduled Human Performers Sequence, Human Performer's Name |
//! | SPS Description                              | Procedure Step Label                                |
//! | SPS Scheduled Protocol Code Sequence         | Scheduled Workitem Code Sequence                    |
//! | SPS Comments                                 | Comments on the Scheduled Procedure Step            |
//! | Accession Number, Study Instance UID, Requested Procedure ID / Description / Code Sequence, placer and filler order numbers, reason | Referenced Request Sequence |
//! | Requested Procedure Priority                 | Scheduled Procedure Step Priority (HIGH, MEDIUM, LOW) |
//! | (every step)                                 | Procedure Step State SCHEDULED                      |
//!
//! Patient attributes have the same place in both. A workitem made from a
//! worklist entry gets a SOP Instance UID derived from the entry, so that the
//! same entry always has the same UID.

use super::matching::split_range;
use super::qido_params::{attribute, vr_of, ParamError};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// An attribute's place: at the top of the data set or in the (first) item
/// of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Top(Tag),
    In(Tag, Tag),
}

const SPS: Tag = tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE;
const REQUEST: Tag = tags::REFERENCED_REQUEST_SEQUENCE;

/// (MWL place, UPS place). Start date/time and priority are converted apart.
const MAP: &[(Place, Place)] = {
    use Place::{In, Top};
    &[
        (
            Top(tags::ACCESSION_NUMBER),
            In(REQUEST, tags::ACCESSION_NUMBER),
        ),
        (
            Top(tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE),
            In(REQUEST, tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE),
        ),
        (
            Top(tags::STUDY_INSTANCE_UID),
            In(REQUEST, tags::STUDY_INSTANCE_UID),
        ),
        (
            Top(tags::REQUESTED_PROCEDURE_ID),
            In(REQUEST, tags::REQUESTED_PROCEDURE_ID),
        ),
        (
            Top(tags::REQUESTED_PROCEDURE_DESCRIPTION),
            In(REQUEST, tags::REQUESTED_PROCEDURE_DESCRIPTION),
        ),
        (
            Top(tags::REQUESTED_PROCEDURE_CODE_SEQUENCE),
            In(REQUEST, tags::REQUESTED_PROCEDURE_CODE_SEQUENCE),
        ),
        (
            Top(tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST),
            In(REQUEST, tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST),
        ),
        (
            Top(tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST),
            In(REQUEST, tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST),
        ),
        (
            Top(tags::REASON_FOR_THE_REQUESTED_PROCEDURE),
            In(REQUEST, tags::REASON_FOR_THE_REQUESTED_PROCEDURE),
        ),
        (
            In(SPS, tags::MODALITY),
            In(
                tags::SCHEDULED_STATION_CLASS_CODE_SEQUENCE,
                tags::CODE_VALUE,
            ),
        ),
        (
            In(SPS, tags::SCHEDULED_STATION_AE_TITLE),
            In(tags::SCHEDULED_STATION_NAME_CODE_SEQUENCE, tags::CODE_VALUE),
        ),
        (
            In(SPS, tags::SCHEDULED_STATION_NAME),
            In(
                tags::SCHEDULED_STATION_NAME_CODE_SEQUENCE,
                tags::CODE_MEANING,
            ),
        ),
        (
            In(SPS, tags::SCHEDULED_PROCEDURE_STEP_LOCATION),
            In(
                tags::SCHEDULED_STATION_GEOGRAPHIC_LOCATION_CODE_SEQUENCE,
                tags::CODE_MEANING,
            ),
        ),
        (
            In(SPS, tags::SCHEDULED_PERFORMING_PHYSICIAN_NAME),
            In(
                tags::SCHEDULED_HUMAN_PERFORMERS_SEQUENCE,
                tags::HUMAN_PERFORMER_NAME,
            ),
        ),
        (
            In(SPS, tags::SCHEDULED_PROCEDURE_STEP_DESCRIPTION),
            Top(tags::PROCEDURE_STEP_LABEL),
        ),
        (
            In(SPS, tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE),
            Top(tags::SCHEDULED_WORKITEM_CODE_SEQUENCE),
        ),
        (
            In(SPS, tags::COMMENTS_ON_THE_SCHEDULED_PROCEDURE_STEP),
            Top(tags::COMMENTS_ON_THE_SCHEDULED_PROCEDURE_STEP),
        ),
    ]
};

/// Step attributes with no workitem equivalent: kept at the workitem's top
/// level under their own tags, and put back into the step.
const STEP_KEPT: &[Tag] = &[
    tags::SCHEDULED_PROCEDURE_STEP_ID,
    tags::SCHEDULED_PROCEDURE_STEP_STATUS,
    tags::SCHEDULED_PROCEDURE_STEP_END_DATE,
    tags::SCHEDULED_PROCEDURE_STEP_END_TIME,
    tags::PRE_MEDICATION,
    tags::REQUESTED_CONTRAST_AGENT,
];

pub fn ups_place(mwl: Place) -> Option<Place> {
    MAP.iter().find(|(m, _)| *m == mwl).map(|(_, u)| *u)
}

pub fn mwl_place(ups: Place) -> Option<Place> {
    MAP.iter().find(|(_, u)| *u == ups).map(|(m, _)| *m)
}

/// A place as a DICOMweb attribute path (`Sequence.Attribute`).
pub fn path(place: Place) -> String {
    match place {
        Place::Top(t) => keyword(t),
        Place::In(s, t) => format!("{}.{}", keyword(s), keyword(t)),
    }
}

fn keyword(tag: Tag) -> String {
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.alias().to_owned())
        .unwrap_or_else(|| format!("{:04X}{:04X}", tag.group(), tag.element()))
}

/// Puts elements at places, building each sequence's single item.
struct Builder {
    top: InMemDicomObject,
    items: BTreeMap<Tag, InMemDicomObject>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            top: InMemDicomObject::new_empty(),
            items: BTreeMap::new(),
        }
    }
}

impl Builder {
    fn put(&mut self, place: Place, value: Value<InMemDicomObject>) {
        let tag = match place {
            Place::Top(t) | Place::In(_, t) => t,
        };
        let vr = vr_of(tag).unwrap_or(VR::UN);
        let element = DataElement::new(tag, vr, value);
        match place {
            Place::Top(_) => {
                self.top.put(element);
            }
            Place::In(seq, _) => {
                self.items
                    .entry(seq)
                    .or_insert_with(InMemDicomObject::new_empty)
                    .put(element);
            }
        }
    }

    fn text(&mut self, place: Place, value: &str) {
        self.put(place, Value::Primitive(PrimitiveValue::from(value)));
    }

    fn finish(mut self) -> InMemDicomObject {
        for (seq, item) in self.items {
            let element = DataElement::new(seq, VR::SQ, DataSetSequence::from(vec![item]));
            self.top.put(element);
        }
        self.top
    }
}

fn first_item(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    match obj.get(seq)?.value() {
        Value::Sequence(s) => s.items().first(),
        _ => None,
    }
}

fn text(obj: Option<&InMemDicomObject>, tag: Tag) -> Option<String> {
    let v = obj?.get(tag)?.to_str().ok()?;
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// A worklist entry (one Scheduled Procedure Step) as a UPS workitem.
pub fn mwl_to_ups(step: &InMemDicomObject) -> InMemDicomObject {
    let sps = first_item(step, SPS);
    let mut out = Builder::default();
    for element in step.iter() {
        let tag = element.tag();
        if tag == SPS {
            continue;
        }
        let place = ups_place(Place::Top(tag)).unwrap_or(Place::Top(tag));
        out.put(place, element.value().clone());
    }
    for element in sps.into_iter().flat_map(|i| i.iter()) {
        let tag = element.tag();
        if let Some(place) = ups_place(Place::In(SPS, tag)) {
            out.put(place, element.value().clone());
        } else if STEP_KEPT.contains(&tag) {
            out.put(Place::Top(tag), element.value().clone());
        }
    }
    if let Some(code) = text(sps, tags::MODALITY) {
        let seq = tags::SCHEDULED_STATION_CLASS_CODE_SEQUENCE;
        out.text(Place::In(seq, tags::CODING_SCHEME_DESIGNATOR), "DCM");
        out.text(Place::In(seq, tags::CODE_MEANING), &code);
    }
    for seq in [
        tags::SCHEDULED_STATION_NAME_CODE_SEQUENCE,
        tags::SCHEDULED_STATION_GEOGRAPHIC_LOCATION_CODE_SEQUENCE,
    ] {
        if out.items.contains_key(&seq) {
            out.text(Place::In(seq, tags::CODING_SCHEME_DESIGNATOR), "99PONS");
        }
    }
    if let Some(date) = text(sps, tags::SCHEDULED_PROCEDURE_STEP_START_DATE) {
        let time = text(sps, tags::SCHEDULED_PROCEDURE_STEP_START_TIME).unwrap_or_default();
        let when = format!("{date}{}", time.replace(':', ""));
        out.text(
            Place::Top(tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME),
            &when,
        );
    }
    let priority = match text(Some(step), tags::REQUESTED_PROCEDURE_PRIORITY).as_deref() {
        Some("STAT" | "HIGH") => "HIGH",
        Some("LOW") => "LOW",
        _ => "MEDIUM",
    };
    out.text(
        Place::Top(tags::SCHEDULED_PROCEDURE_STEP_PRIORITY),
        priority,
    );
    out.text(Place::Top(tags::PROCEDURE_STEP_STATE), "SCHEDULED");
    out.text(
        Place::Top(tags::SOP_CLASS_UID),
        uids::UNIFIED_PROCEDURE_STEP_PUSH,
    );
    out.text(Place::Top(tags::SOP_INSTANCE_UID), &workitem_uid(step, sps));
    out.finish()
}

/// The same worklist entry always gets the same workitem UID: 2.25 and 128
/// bits of a hash of what identifies the step.
fn workitem_uid(step: &InMemDicomObject, sps: Option<&InMemDicomObject>) -> String {
    let mut hash = Sha256::new();
    for value in [
        text(Some(step), tags::STUDY_INSTANCE_UID),
        text(Some(step), tags::ACCESSION_NUMBER),
        text(Some(step), tags::REQUESTED_PROCEDURE_ID),
        text(sps, tags::SCHEDULED_PROCEDURE_STEP_ID),
        text(sps, tags::SCHEDULED_STATION_AE_TITLE),
        text(sps, tags::SCHEDULED_PROCEDURE_STEP_START_DATE),
        text(sps, tags::SCHEDULED_PROCEDURE_STEP_START_TIME),
    ] {
        hash.update(value.unwrap_or_default());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let mut bits = [0u8; 16];
    bits.copy_from_slice(&digest[..16]);
    format!("2.25.{}", u128::from_be_bytes(bits))
}

/// A UPS workitem as a worklist entry with one Scheduled Procedure Step.
pub fn ups_to_mwl(item: &InMemDicomObject) -> InMemDicomObject {
    // Every attribute at its UPS place: a sequence with mapped contents is
    // opened, any other is taken whole.
    let mut found: Vec<(Place, Value<InMemDicomObject>)> = Vec::new();
    for element in item.iter() {
        let tag = element.tag();
        let inner: Vec<_> = match element.value() {
            Value::Sequence(s) if mwl_place(Place::Top(tag)).is_none() => s
                .items()
                .first()
                .into_iter()
                .flat_map(|i| i.iter())
                .filter(|e| mwl_place(Place::In(tag, e.tag())).is_some())
                .map(|e| (Place::In(tag, e.tag()), e.value().clone()))
                .collect(),
            _ => vec![],
        };
        if inner.is_empty() {
            found.push((Place::Top(tag), element.value().clone()));
        } else {
            found.extend(inner);
        }
    }
    let mut out = Builder::default();
    let mut sps = InMemDicomObject::new_empty();
    for (place, value) in found {
        match (mwl_place(place), place) {
            (None, Place::Top(tag)) if STEP_KEPT.contains(&tag) => {
                let vr = vr_of(tag).unwrap_or(VR::UN);
                sps.put(DataElement::new(tag, vr, value));
            }
            (Some(Place::In(_, tag)), _) => {
                let vr = vr_of(tag).unwrap_or(VR::UN);
                sps.put(DataElement::new(tag, vr, value));
            }
            (Some(top), _) => out.put(top, value),
            (None, Place::Top(tag)) if !is_ups_only(tag) => out.put(place, value),
            (None, _) => {}
        }
    }
    if let Some(when) = text(Some(item), tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME) {
        // Without the time zone offset: a worklist date and time are local.
        let when = when.split(['+', '-']).next().unwrap_or("");
        let date = when.get(..8).unwrap_or(when);
        put_text(&mut sps, tags::SCHEDULED_PROCEDURE_STEP_START_DATE, date);
        if let Some(time) = when.get(8..).filter(|t| !t.is_empty()) {
            put_text(&mut sps, tags::SCHEDULED_PROCEDURE_STEP_START_TIME, time);
        }
    }
    if let Some(priority) = text(Some(item), tags::SCHEDULED_PROCEDURE_STEP_PRIORITY) {
        out.text(Place::Top(tags::REQUESTED_PROCEDURE_PRIORITY), &priority);
    }
    // A worklist step needs an ID (type 1); a workitem made elsewhere has
    // none: its UID's last 16 characters stand in.
    if sps.get(tags::SCHEDULED_PROCEDURE_STEP_ID).is_none() {
        if let Some(uid) = text(Some(item), tags::SOP_INSTANCE_UID) {
            let skip = uid.chars().count().saturating_sub(16);
            let id: String = uid.chars().skip(skip).collect();
            put_text(&mut sps, tags::SCHEDULED_PROCEDURE_STEP_ID, &id);
        }
    }
    let mut out = out.finish();
    out.put(DataElement::new(
        SPS,
        VR::SQ,
        DataSetSequence::from(vec![sps]),
    ));
    out
}

fn put_text(obj: &mut InMemDicomObject, tag: Tag, value: &str) {
    let vr = vr_of(tag).unwrap_or(VR::UN);
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// Workitem attributes with no meaning in a worklist entry.
fn is_ups_only(tag: Tag) -> bool {
    [
        tags::SOP_CLASS_UID,
        tags::SOP_INSTANCE_UID,
        tags::PROCEDURE_STEP_STATE,
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME,
        tags::SCHEDULED_PROCEDURE_STEP_PRIORITY,
        tags::REFERENCED_REQUEST_SEQUENCE,
        tags::SCHEDULED_STATION_CLASS_CODE_SEQUENCE,
        tags::SCHEDULED_STATION_NAME_CODE_SEQUENCE,
        tags::SCHEDULED_STATION_GEOGRAPHIC_LOCATION_CODE_SEQUENCE,
        tags::SCHEDULED_HUMAN_PERFORMERS_SEQUENCE,
    ]
    .contains(&tag)
}

/// A UPS-RS workitem search as a worklist search.
#[derive(Debug, Default, PartialEq)]
pub struct UpsSearch {
    /// The worklist search parameters (for `mwl_to_cfind`).
    pub mwl_params: Vec<(String, String)>,
    /// Checked on the answers as workitems: Scheduled Procedure Step Start
    /// DateTime (the worklist is asked by day) and Priority (MEDIUM stands
    /// for ROUTINE and for none).
    pub post: Vec<(Tag, VR, String)>,
    /// A state other than SCHEDULED was asked for: a worklist has none.
    pub nothing: bool,
}

/// Translate a workitem search (`GET {base}/workitems?…`) into a worklist
/// search: attributes move to their worklist places; unknown ones are left
/// for `mwl_to_cfind` to judge.
pub fn ups_params_to_mwl(params: &[(String, String)]) -> Result<UpsSearch, ParamError> {
    let mut search = UpsSearch::default();
    // Worklist paths for a workitem attribute (a whole workitem sequence:
    // each worklist attribute it holds).
    let rename = |name: &str| -> Vec<String> {
        let place = match name.split_once('.') {
            None => attribute(name).map(|(t, _)| Place::Top(t)),
            Some((s, a)) => attribute(s)
                .zip(attribute(a))
                .map(|((s, _), (a, _))| Place::In(s, a)),
        };
        let mwl_path = |p: Place| match p {
            Place::In(_, tag) => format!("ScheduledProcedureStepSequence.{}", keyword(tag)),
            top => path(top),
        };
        match place {
            Some(p) if mwl_place(p).is_some() => mwl_place(p).into_iter().map(mwl_path).collect(),
            Some(Place::Top(seq)) if has_mwl_contents(seq) => MAP
                .iter()
                .filter(|(_, u)| matches!(u, Place::In(s, _) if *s == seq))
                .map(|(m, _)| mwl_path(*m))
                .collect(),
            _ => vec![name.to_owned()],
        }
    };
    for (key, value) in params {
        let tag = attribute(key).map(|(t, _)| t);
        match key.as_str() {
            "limit" | "offset" | "fuzzymatching" => {
                search.mwl_params.push((key.clone(), value.clone()))
            }
            "includefield" => {
                let names: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !is_ups_only_name(n))
                    .flat_map(rename)
                    .collect();
                if !names.is_empty() {
                    search.mwl_params.push((key.clone(), names.join(",")));
                }
            }
            _ if tag == Some(tags::PROCEDURE_STEP_STATE) => match value.trim() {
                "SCHEDULED" => {}
                "IN PROGRESS" | "CANCELED" | "COMPLETED" => search.nothing = true,
                other => {
                    return Err(ParamError {
                        param: key.clone(),
                        problem: format!(
                            "'{other}' is not a Procedure Step State \
                             (SCHEDULED, IN PROGRESS, CANCELED, COMPLETED)"
                        ),
                    })
                }
            },
            _ if tag == Some(tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME) => {
                let date = |s: &str| s.get(..8).unwrap_or(s).to_owned();
                // Judged here, under the name the client sent: each given
                // bound needs a whole date, as the worklist is asked by day.
                let bound_ok = |s: &str| {
                    s.is_empty()
                        || s.get(..8).is_some_and(super::qido_params::date_ok)
                            && super::qido_params::datetime_ok(s)
                };
                let (dates, valid) = match split_range(VR::DT, value) {
                    Some((a, b)) => (
                        format!("{}-{}", date(a), date(b)),
                        !(a.is_empty() && b.is_empty()) && bound_ok(a) && bound_ok(b),
                    ),
                    None => (date(value), bound_ok(value)),
                };
                if !valid {
                    return Err(ParamError {
                        param: key.clone(),
                        problem: format!(
                            "'{value}' is not a DateTime (YYYYMMDD[HHMMSS]) or DateTime range"
                        ),
                    });
                }
                search
                    .mwl_params
                    .push(("ScheduledProcedureStepStartDate".into(), dates));
                search.post.push((
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME,
                    VR::DT,
                    value.clone(),
                ));
            }
            _ if tag == Some(tags::SCHEDULED_PROCEDURE_STEP_PRIORITY) => {
                search.post.push((
                    tags::SCHEDULED_PROCEDURE_STEP_PRIORITY,
                    VR::CS,
                    value.clone(),
                ));
            }
            _ => {
                for name in rename(key) {
                    search.mwl_params.push((name, value.clone()));
                }
            }
        }
    }
    Ok(search)
}

/// An attribute of a workitem alone, with nothing to ask of a worklist.
fn is_ups_only_name(name: &str) -> bool {
    attribute(name).is_some_and(|(t, _)| is_ups_only(t) && !has_mwl_contents(t))
}

/// A workitem sequence whose item holds worklist attributes.
fn has_mwl_contents(seq: Tag) -> bool {
    MAP.iter()
        .any(|(_, u)| matches!(u, Place::In(s, _) if *s == seq))
}

#[cfg(test)]
mod tests;
