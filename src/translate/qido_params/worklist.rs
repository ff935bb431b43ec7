//! The DICOMweb worklist search (`GET {base}/modality-scheduled-procedure-steps`,
//! PS3.18 / Supplement 246) as a Modality Worklist C-FIND: the same matching
//! keys and semantics. Attributes of the Scheduled Procedure Step may be
//! named bare (`Modality=CT`) or by path
//! (`ScheduledProcedureStepSequence.Modality=CT`); both match inside the
//! sequence, as a modality's own MWL query does.

use super::{to_identifier, FindRequest, ParamError};
use dicom_core::Tag;
use dicom_dictionary_std::tags;

const SPS: Tag = tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE;

/// Returned for every scheduled procedure step. Specific Character Set is
/// asked for too: without it an SCP may send Latin-1 names untagged.
const TOP_DEFAULTS: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::REQUESTED_PROCEDURE_DESCRIPTION,
    tags::REQUESTED_PROCEDURE_ID,
];

/// Inside Scheduled Procedure Step Sequence.
const SPS_DEFAULTS: &[Tag] = &[
    tags::MODALITY,
    tags::SCHEDULED_STATION_AE_TITLE,
    tags::SCHEDULED_STATION_NAME,
    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
    tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
    tags::SCHEDULED_PERFORMING_PHYSICIAN_NAME,
    tags::SCHEDULED_PROCEDURE_STEP_DESCRIPTION,
    tags::SCHEDULED_PROCEDURE_STEP_ID,
    tags::SCHEDULED_PROCEDURE_STEP_LOCATION,
];

/// Added by `includefield=all`.
const TOP_ALL: &[Tag] = &[
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_WEIGHT,
    tags::MEDICAL_ALERTS,
    tags::ALLERGIES,
    tags::PREGNANCY_STATUS,
    tags::ADMISSION_ID,
    tags::REQUESTING_PHYSICIAN,
    tags::REQUESTED_PROCEDURE_PRIORITY,
    tags::PATIENT_TRANSPORT_ARRANGEMENTS,
];
const SPS_ALL: &[Tag] = &[
    tags::SCHEDULED_PROCEDURE_STEP_STATUS,
    tags::PRE_MEDICATION,
    tags::REQUESTED_CONTRAST_AGENT,
];

/// Every attribute of a Scheduled Procedure Step item (PS3.4 Table K.6-1):
/// named bare, they are meant inside the sequence.
const SPS_ITEM: &[Tag] = &[
    tags::SCHEDULED_STATION_AE_TITLE,
    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
    tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
    tags::SCHEDULED_PROCEDURE_STEP_END_DATE,
    tags::SCHEDULED_PROCEDURE_STEP_END_TIME,
    tags::MODALITY,
    tags::SCHEDULED_PERFORMING_PHYSICIAN_NAME,
    tags::SCHEDULED_PROCEDURE_STEP_DESCRIPTION,
    tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE,
    tags::SCHEDULED_PROCEDURE_STEP_ID,
    tags::SCHEDULED_PROCEDURE_STEP_STATUS,
    tags::COMMENTS_ON_THE_SCHEDULED_PROCEDURE_STEP,
    tags::SCHEDULED_STATION_NAME,
    tags::SCHEDULED_PROCEDURE_STEP_LOCATION,
    tags::PRE_MEDICATION,
    tags::REQUESTED_CONTRAST_AGENT,
];

/// Translate a worklist search into a Modality Worklist C-FIND identifier
/// (no Query/Retrieve Level: MWL has none).
pub fn mwl_to_cfind(params: &[(String, String)]) -> Result<FindRequest, ParamError> {
    let into_sps = |name: &str| {
        let bare = !name.contains('.')
            && super::attribute(name).is_some_and(|(tag, _)| SPS_ITEM.contains(&tag));
        if bare {
            format!("ScheduledProcedureStepSequence.{name}")
        } else {
            name.to_owned()
        }
    };
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| match k.as_str() {
            "includefield" => {
                let names: Vec<String> = v.split(',').map(|n| into_sps(n.trim())).collect();
                (k.clone(), names.join(","))
            }
            _ => (into_sps(k), v.clone()),
        })
        .collect();
    let defaults = |all: bool| {
        let top = TOP_DEFAULTS.iter().chain(if all { TOP_ALL } else { &[] });
        let sps = SPS_DEFAULTS.iter().chain(if all { SPS_ALL } else { &[] });
        top.map(|t| (None, *t))
            .chain(sps.map(|t| (Some(SPS), *t)))
            .collect()
    };
    to_identifier(&params, defaults, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::header::HasLength;
    use dicom_core::value::Value;
    use dicom_object::InMemDicomObject;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sps(id: &InMemDicomObject) -> &InMemDicomObject {
        match id.get(SPS).unwrap().value() {
            Value::Sequence(s) => &s.items()[0],
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn step_attributes_match_inside_the_sequence() {
        let r = mwl_to_cfind(&params(&[
            ("Modality", "CT"),
            (
                "ScheduledProcedureStepSequence.ScheduledStationAETitle",
                "CT1",
            ),
            ("ScheduledProcedureStepStartDate", "20261203-20261205"),
            ("PatientID", "P1"),
            ("limit", "5"),
        ]))
        .unwrap();
        let id = &r.identifier;
        assert_eq!(id.get(tags::PATIENT_ID).unwrap().to_str().unwrap(), "P1");
        assert!(
            id.get(tags::MODALITY).is_none(),
            "Modality is not a top-level key in MWL"
        );
        assert!(id.get(tags::QUERY_RETRIEVE_LEVEL).is_none());
        let item = sps(id);
        assert_eq!(item.get(tags::MODALITY).unwrap().to_str().unwrap(), "CT");
        assert_eq!(
            item.get(tags::SCHEDULED_STATION_AE_TITLE)
                .unwrap()
                .to_str()
                .unwrap(),
            "CT1"
        );
        assert_eq!(
            item.get(tags::SCHEDULED_PROCEDURE_STEP_START_DATE)
                .unwrap()
                .to_str()
                .unwrap(),
            "20261203-20261205"
        );
        // Return keys asked for as well, empty.
        assert!(item
            .get(tags::SCHEDULED_PROCEDURE_STEP_ID)
            .unwrap()
            .is_empty());
        assert!(id.get(tags::ACCESSION_NUMBER).unwrap().is_empty());
        assert_eq!(r.limit, Some(5));
    }

    #[test]
    fn includefield_all_and_bad_values() {
        let all = mwl_to_cfind(&params(&[("includefield", "all")])).unwrap();
        assert!(sps(&all.identifier)
            .get(tags::SCHEDULED_PROCEDURE_STEP_STATUS)
            .is_some());
        assert!(all.identifier.get(tags::PATIENT_WEIGHT).is_some());
        assert!(
            mwl_to_cfind(&params(&[("ScheduledProcedureStepStartDate", "yesterday")])).is_err()
        );
        assert!(mwl_to_cfind(&params(&[("NoSuchAttribute", "x")])).is_err());
        let asked = mwl_to_cfind(&params(&[
            (
                "includefield",
                "ScheduledProcedureStepEndDate,PatientWeight",
            ),
            ("CommentsOnTheScheduledProcedureStep", "fasting"),
        ]))
        .unwrap();
        let item = sps(&asked.identifier);
        assert!(item.get(tags::SCHEDULED_PROCEDURE_STEP_END_DATE).is_some());
        assert!(item
            .get(tags::COMMENTS_ON_THE_SCHEDULED_PROCEDURE_STEP)
            .is_some());
        assert!(asked
            .identifier
            .get(tags::SCHEDULED_PROCEDURE_STEP_END_DATE)
            .is_none());
        assert!(asked.identifier.get(tags::PATIENT_WEIGHT).is_some());
    }
}
