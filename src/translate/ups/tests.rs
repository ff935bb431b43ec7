use super::*;

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn workitem_search_becomes_a_worklist_search() {
    let s = ups_params_to_mwl(&params(&[
        ("ScheduledStationClassCodeSequence.CodeValue", "CT"),
        ("ScheduledStationNameCodeSequence.CodeValue", "CT1"),
        ("ReferencedRequestSequence.AccessionNumber", "ACC1"),
        (
            "ScheduledProcedureStepStartDateTime",
            "20261203080000-20261204",
        ),
        ("ProcedureStepState", "SCHEDULED"),
        ("PatientID", "P1"),
        (
            "includefield",
            "ScheduledStationClassCodeSequence,PatientWeight",
        ),
        ("limit", "3"),
    ]))
    .unwrap();
    let expected = params(&[
        ("ScheduledProcedureStepSequence.Modality", "CT"),
        (
            "ScheduledProcedureStepSequence.ScheduledStationAETitle",
            "CT1",
        ),
        ("AccessionNumber", "ACC1"),
        ("ScheduledProcedureStepStartDate", "20261203-20261204"),
        ("PatientID", "P1"),
        (
            "includefield",
            "ScheduledProcedureStepSequence.Modality,PatientWeight",
        ),
        ("limit", "3"),
    ]);
    assert_eq!(s.mwl_params, expected);
    assert_eq!(
        s.post,
        [(
            tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME,
            VR::DT,
            "20261203080000-20261204".to_owned()
        )]
    );
    assert!(!s.nothing);
    let done = ups_params_to_mwl(&params(&[("ProcedureStepState", "COMPLETED")])).unwrap();
    assert!(done.nothing);
    assert!(ups_params_to_mwl(&params(&[("ProcedureStepState", "DONE")])).is_err());
    // A bad DateTime is refused under the name the client sent.
    for bad in [
        "garbage",
        "2026-12-03",
        "-",
        "20261203-x",
        "20261399",
        "20261203.-.",
    ] {
        let err = ups_params_to_mwl(&params(&[("ScheduledProcedureStepStartDateTime", bad)]))
            .unwrap_err();
        assert_eq!(err.param, "ScheduledProcedureStepStartDateTime", "{bad}");
    }
    for good in [
        "",
        "20261203",
        "20261203090000+0100",
        "-20261203",
        "20261203090000.5-",
    ] {
        assert!(
            ups_params_to_mwl(&params(&[("ScheduledProcedureStepStartDateTime", good)])).is_ok(),
            "{good}"
        );
    }
}

/// Found by fuzz target `worklist_identifier`: the step ID made from the
/// last 16 characters of a UID was cut at a byte inside a character.
#[test]
fn a_step_id_from_a_uid_that_is_not_ascii() {
    use dicom_core::{DataElement, PrimitiveValue};
    use dicom_object::InMemDicomObject;
    let mut item = InMemDicomObject::new_empty();
    item.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from("Cñ@ 1.2.3.4.5.6.7.8.9.10.11"),
    ));
    let entry = ups_to_mwl(&item);
    let dicom_core::value::Value::Sequence(steps) = entry
        .get(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
        .unwrap()
        .value()
    else {
        panic!("no step")
    };
    let id = steps.items()[0]
        .get(tags::SCHEDULED_PROCEDURE_STEP_ID)
        .unwrap()
        .to_str()
        .unwrap()
        .into_owned();
    assert_eq!(id.chars().count(), 16);
    assert!("Cñ@ 1.2.3.4.5.6.7.8.9.10.11".ends_with(&id));
}
