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
}
