//! C-FIND identifier ⇄ QIDO-RS query (PS3.4 C.2.2.2 matching, PS3.18 §8.3.4).
//!
//! Each key of the identifier is either a matching key (it has a value: the
//! QIDO parameter carries it) or a return key (empty: `includefield`). The
//! response identifier carries exactly the requested keys.

use crate::dicom::uid;
use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::json::tag_key as tag_param;
use super::matching::wildcard_match;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

impl Level {
    pub fn parse(value: &str) -> Option<Level> {
        match value.trim() {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" => Some(Level::Image),
            _ => None,
        }
    }

    /// The Query/Retrieve Level (0008,0052) of an identifier.
    pub fn of(identifier: &InMemDicomObject) -> Option<Level> {
        let value = identifier.get(tags::QUERY_RETRIEVE_LEVEL)?.to_str().ok()?;
        Level::parse(&value)
    }

    pub fn code(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }
}

/// The two information models of Query/Retrieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    PatientRoot,
    StudyRoot,
}

/// A QIDO-RS request, relative to the origin's base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QidoQuery {
    pub level: Level,
    /// e.g. `studies`, `studies/1.2.3/series`, `instances`.
    pub path: String,
    /// Matching parameters, `includefield`s and `fuzzymatching`, in order.
    pub params: Vec<(String, String)>,
    /// The keys the C-FIND response must carry, in identifier order.
    pub return_keys: Vec<(Tag, VR)>,
    /// Matching the origin was only asked to approximate (see
    /// `origin_safe`); results must also pass these, checked here.
    pub local_filters: Vec<(Tag, String)>,
}

impl QidoQuery {
    /// Does an origin result satisfy the matching done on our side?
    pub fn accepts(&self, result: &InMemDicomObject) -> bool {
        self.local_filters.iter().all(|(tag, pattern)| {
            let value = result
                .get(*tag)
                .and_then(|e| e.to_str().ok())
                .map(|v| v.trim().to_owned())
                .unwrap_or_default();
            let pn = result.get(*tag).map(|e| e.vr() == VR::PN).unwrap_or(false);
            if pn {
                wildcard_match(&pattern.to_lowercase(), &value.to_lowercase())
            } else {
                wildcard_match(pattern, &value)
            }
        })
    }
}

/// Some origins (Orthanc 1.10) never percent-decode query values, so a
/// non-ASCII or space character cannot reach them intact. Such runs become
/// `*` (a superset of the matches) and the exact pattern is checked locally.
pub fn origin_safe(value: &str) -> Option<String> {
    if value.chars().all(|c| c.is_ascii() && c != ' ') {
        return None;
    }
    let mut out = String::new();
    for c in value.chars() {
        let c = if c.is_ascii() && c != ' ' { c } else { '*' };
        if !(c == '*' && out.ends_with('*')) {
            out.push(c);
        }
    }
    Some(out)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("Query/Retrieve Level (0008,0052) is missing or not PATIENT, STUDY, SERIES or IMAGE")]
    Level,
    #[error("level {0} is not part of the Study Root information model")]
    LevelNotInModel(&'static str),
    #[error("key ({0:04X},{1:04X}) cannot be used for matching: {2}")]
    Key(u16, u16, &'static str),
}

/// Keys that steer the query rather than match.
pub fn is_control_key(tag: Tag) -> bool {
    tag == tags::SPECIFIC_CHARACTER_SET
        || tag == tags::QUERY_RETRIEVE_LEVEL
        || tag.group() == 0x0000
        || tag.group() == 0x0002
}

/// A single, non-empty UID value that can go into a QIDO path.
fn single_uid(identifier: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = identifier.get(tag)?.to_str().ok()?;
    let v = uid::trim(&v);
    (!v.is_empty() && !v.contains('\\') && !v.contains('*') && !v.contains('?'))
        .then(|| v.to_owned())
}

/// Translate a C-FIND identifier into the QIDO-RS query that answers it.
pub fn cfind_to_qido(
    identifier: &InMemDicomObject,
    model: Model,
    fuzzy: bool,
) -> Result<QidoQuery, QueryError> {
    let level = Level::of(identifier).ok_or(QueryError::Level)?;
    if model == Model::StudyRoot && level == Level::Patient {
        return Err(QueryError::LevelNotInModel("PATIENT"));
    }
    let study = single_uid(identifier, tags::STUDY_INSTANCE_UID);
    let series = single_uid(identifier, tags::SERIES_INSTANCE_UID);
    // The widest hierarchical resource the identifier pins down (PS3.18 §10.6.1).
    let (path, in_path): (String, Vec<Tag>) = match (level, &study, &series) {
        (Level::Patient | Level::Study, _, _) => ("studies".into(), vec![]),
        (Level::Series, Some(s), _) => (
            format!("studies/{s}/series"),
            vec![tags::STUDY_INSTANCE_UID],
        ),
        (Level::Series, None, _) => ("series".into(), vec![]),
        (Level::Image, Some(s), Some(se)) => (
            format!("studies/{s}/series/{se}/instances"),
            vec![tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID],
        ),
        (Level::Image, Some(s), None) => (
            format!("studies/{s}/instances"),
            vec![tags::STUDY_INSTANCE_UID],
        ),
        (Level::Image, None, _) => ("instances".into(), vec![]),
    };

    let mut params = Vec::new();
    let mut return_keys = Vec::new();
    let mut local_filters = Vec::new();
    for element in identifier.iter() {
        let tag = element.tag();
        if is_control_key(tag) {
            continue;
        }
        let vr = element.vr();
        return_keys.push((tag, vr));
        if in_path.contains(&tag) {
            continue;
        }
        if vr == VR::SQ {
            // Sequence matching is not in QIDO-RS: ask for the sequence back.
            params.push(("includefield".into(), tag_param(tag)));
            continue;
        }
        let value = element
            .to_str()
            .map(|v| uid::trim(&v).to_owned())
            .unwrap_or_default();
        if value.is_empty() {
            params.push(("includefield".into(), tag_param(tag)));
            continue;
        }
        let value = match vr {
            // List of UID matching: QIDO separates with commas.
            VR::UI => value
                .split('\\')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(","),
            VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN => {
                return Err(QueryError::Key(
                    tag.group(),
                    tag.element(),
                    "binary values cannot be matched",
                ))
            }
            VR::DA | VR::TM | VR::DT => value,
            _ => match origin_safe(&value) {
                Some(safe) => {
                    local_filters.push((tag, value));
                    safe
                }
                None => value,
            },
        };
        params.push((tag_param(tag), value));
        // Matching keys are returned by the origin only if it supports them; ask too.
        params.push(("includefield".into(), tag_param(tag)));
    }
    if fuzzy {
        params.push(("fuzzymatching".into(), "true".into()));
    }
    Ok(QidoQuery {
        level,
        path,
        params,
        return_keys,
        local_filters,
    })
}

/// Build the C-FIND response identifier for one QIDO result: exactly the
/// requested keys (empty when the origin did not return them), the level,
/// our Retrieve AE Title, and ISO_IR 192 when any text is not ASCII.
pub fn qido_to_identifier(
    result: &InMemDicomObject,
    query: &QidoQuery,
    retrieve_ae: &str,
) -> InMemDicomObject {
    let mut out = InMemDicomObject::new_empty();
    for &(tag, vr) in &query.return_keys {
        let element = match result.get(tag) {
            Some(e) => e.clone(),
            None => DataElement::new(tag, vr, PrimitiveValue::Empty),
        };
        out.put(element);
    }
    out.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(query.level.code()),
    ));
    out.put(DataElement::new(
        tags::RETRIEVE_AE_TITLE,
        VR::AE,
        PrimitiveValue::from(retrieve_ae),
    ));
    declare_utf8(out)
}

/// ISO_IR 192 when any text, in sequences too, is not ASCII (answers from
/// DICOMweb come as UTF-8 JSON).
pub fn declare_utf8(mut out: InMemDicomObject) -> InMemDicomObject {
    fn any_non_ascii(obj: &InMemDicomObject) -> bool {
        obj.iter().any(|e| match e.value() {
            dicom_core::value::Value::Sequence(s) => s.items().iter().any(any_non_ascii),
            _ => e.to_str().is_ok_and(|s| !s.is_ascii()),
        })
    }
    if any_non_ascii(&out) {
        out.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identifier(level: &str, keys: &[(Tag, VR, &str)]) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::QUERY_RETRIEVE_LEVEL,
            VR::CS,
            PrimitiveValue::from(level),
        ));
        for (tag, vr, v) in keys {
            let value = if v.is_empty() {
                PrimitiveValue::Empty
            } else {
                PrimitiveValue::from(*v)
            };
            obj.put(DataElement::new(*tag, *vr, value));
        }
        obj
    }

    fn param<'a>(q: &'a QidoQuery, key: &str) -> Vec<&'a str> {
        q.params
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn study_level_maps_every_matching_kind() {
        let id = identifier(
            "STUDY",
            &[
                (tags::PATIENT_NAME, VR::PN, "DOE^J*"),
                (tags::PATIENT_ID, VR::LO, "P?1"),
                (tags::STUDY_DATE, VR::DA, "20200101-20201231"),
                (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3\\1.2.4"),
                (tags::ACCESSION_NUMBER, VR::SH, ""),
                (tags::MODALITIES_IN_STUDY, VR::CS, "CT"),
            ],
        );
        let q = cfind_to_qido(&id, Model::StudyRoot, false).unwrap();
        assert_eq!(q.path, "studies");
        assert_eq!(param(&q, "00100010"), ["DOE^J*"]);
        assert_eq!(param(&q, "00100020"), ["P?1"]);
        assert_eq!(param(&q, "00080020"), ["20200101-20201231"]);
        assert_eq!(param(&q, "0020000D"), ["1.2.3,1.2.4"]);
        assert_eq!(param(&q, "00080061"), ["CT"]);
        assert!(param(&q, "includefield").contains(&"00080050"));
        assert!(
            param(&q, "00080050").is_empty(),
            "universal match is not a filter"
        );
        assert_eq!(q.return_keys.len(), 6);
        assert!(param(&q, "fuzzymatching").is_empty());
    }

    #[test]
    fn lower_levels_use_the_hierarchical_resource() {
        let id = identifier(
            "SERIES",
            &[
                (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
                (tags::MODALITY, VR::CS, ""),
            ],
        );
        let q = cfind_to_qido(&id, Model::StudyRoot, true).unwrap();
        assert_eq!(q.path, "studies/1.2.3/series");
        assert!(param(&q, "0020000D").is_empty());
        assert_eq!(param(&q, "fuzzymatching"), ["true"]);

        let id = identifier(
            "IMAGE",
            &[
                (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
                (tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4"),
                (tags::SOP_INSTANCE_UID, VR::UI, ""),
            ],
        );
        let q = cfind_to_qido(&id, Model::PatientRoot, false).unwrap();
        assert_eq!(q.path, "studies/1.2.3/series/1.2.3.4/instances");

        let id = identifier("IMAGE", &[(tags::SOP_INSTANCE_UID, VR::UI, "9.8")]);
        assert_eq!(
            cfind_to_qido(&id, Model::StudyRoot, false).unwrap().path,
            "instances"
        );
        let id = identifier("SERIES", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.*")]);
        assert_eq!(
            cfind_to_qido(&id, Model::StudyRoot, false).unwrap().path,
            "series"
        );
    }

    #[test]
    fn non_ascii_values_are_widened_and_checked_locally() {
        let id = identifier("STUDY", &[(tags::PATIENT_NAME, VR::PN, "Müller^Jü*")]);
        let q = cfind_to_qido(&id, Model::StudyRoot, false).unwrap();
        assert_eq!(param(&q, "00100010"), ["M*ller^J*"]);
        let result = |name: &str| -> InMemDicomObject {
            InMemDicomObject::from_element_iter([DataElement::new(
                tags::PATIENT_NAME,
                VR::PN,
                PrimitiveValue::from(name),
            )])
        };
        assert!(q.accepts(&result("Müller^Jürgen")));
        assert!(q.accepts(&result("MÜLLER^JÜRGEN")));
        assert!(!q.accepts(&result("Maller^Jürgen")));
    }

    #[test]
    fn bad_identifiers_are_refused() {
        let id = identifier("NONSENSE", &[]);
        assert_eq!(
            cfind_to_qido(&id, Model::StudyRoot, false),
            Err(QueryError::Level)
        );
        let id = identifier("PATIENT", &[]);
        assert!(cfind_to_qido(&id, Model::StudyRoot, false).is_err());
        assert!(cfind_to_qido(&id, Model::PatientRoot, false).is_ok());
    }

    #[test]
    fn response_has_exactly_the_requested_keys() {
        let id = identifier(
            "STUDY",
            &[
                (tags::PATIENT_NAME, VR::PN, ""),
                (tags::STUDY_INSTANCE_UID, VR::UI, ""),
            ],
        );
        let q = cfind_to_qido(&id, Model::StudyRoot, false).unwrap();
        let result: InMemDicomObject = dicom_json::from_str(
            r#"{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Müller^Jürgen"}]},
                "0020000D":{"vr":"UI","Value":["1.2.3"]},
                "00081030":{"vr":"LO","Value":["not requested"]}}"#,
        )
        .unwrap();
        let out = qido_to_identifier(&result, &q, "PONS");
        assert_eq!(
            out.get(tags::PATIENT_NAME).unwrap().to_str().unwrap(),
            "Müller^Jürgen"
        );
        assert_eq!(
            out.get(tags::STUDY_INSTANCE_UID).unwrap().to_str().unwrap(),
            "1.2.3"
        );
        assert!(out.get(tags::STUDY_DESCRIPTION).is_none());
        assert_eq!(
            out.get(tags::RETRIEVE_AE_TITLE).unwrap().to_str().unwrap(),
            "PONS"
        );
        assert_eq!(
            out.get(tags::QUERY_RETRIEVE_LEVEL)
                .unwrap()
                .to_str()
                .unwrap(),
            "STUDY"
        );
        assert_eq!(
            out.get(tags::SPECIFIC_CHARACTER_SET)
                .unwrap()
                .to_str()
                .unwrap(),
            "ISO_IR 192"
        );
    }
}
