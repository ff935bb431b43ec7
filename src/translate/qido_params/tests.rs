//! Unit tests of the QIDO-RS → C-FIND translation.

use super::*;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn find(level: Level, s: Option<&str>, se: Option<&str>, list: &[(&str, &str)]) -> FindRequest {
    qido_to_cfind(level, s, se, &params(list)).unwrap()
}

fn err(level: Level, list: &[(&str, &str)]) -> ParamError {
    qido_to_cfind(level, None, None, &params(list)).unwrap_err()
}

fn value(q: &FindRequest, tag: Tag) -> Option<String> {
    q.identifier
        .get(tag)
        .map(|e| e.to_str().unwrap().into_owned())
}

#[test]
fn study_query_carries_matches_and_defaults() {
    let q = find(
        Level::Study,
        None,
        None,
        &[
            ("PatientName", "DOE^J*"),
            ("00100020", "P?1"),
            ("StudyDate", "20200101-20211231"),
            ("StudyInstanceUID", "1.2.3,1.2.4"),
            ("limit", "10"),
            ("offset", "5"),
        ],
    );
    assert_eq!(q.level, Level::Study);
    assert_eq!((q.limit, q.offset, q.fuzzy), (Some(10), 5, false));
    assert_eq!(
        value(&q, tags::QUERY_RETRIEVE_LEVEL).as_deref(),
        Some("STUDY")
    );
    assert_eq!(value(&q, tags::PATIENT_NAME).as_deref(), Some("DOE^J*"));
    assert_eq!(value(&q, tags::PATIENT_ID).as_deref(), Some("P?1"));
    assert_eq!(
        value(&q, tags::STUDY_DATE).as_deref(),
        Some("20200101-20211231")
    );
    assert_eq!(
        value(&q, tags::STUDY_INSTANCE_UID).as_deref(),
        Some("1.2.3\\1.2.4")
    );
    for tag in STUDY_DEFAULTS {
        assert!(q.identifier.get(*tag).is_some(), "{tag} missing");
    }
    assert_eq!(value(&q, tags::ACCESSION_NUMBER).as_deref(), Some(""));
    assert!(q.identifier.get(tags::MODALITY).is_none());
    assert!(q.identifier.get(tags::SPECIFIC_CHARACTER_SET).is_none());
    // Keyword and tag name the same key.
    assert_eq!(
        find(Level::Study, None, None, &[("00100010", "X")]).identifier,
        find(Level::Study, None, None, &[("PatientName", "X")]).identifier
    );
}

#[test]
fn levels_and_paths_pick_their_defaults() {
    let q = find(Level::Series, Some("1.2.3"), None, &[("Modality", "CT")]);
    assert_eq!(
        value(&q, tags::STUDY_INSTANCE_UID).as_deref(),
        Some("1.2.3")
    );
    assert_eq!(value(&q, tags::SERIES_INSTANCE_UID).as_deref(), Some(""));
    assert_eq!(value(&q, tags::MODALITY).as_deref(), Some("CT"));
    assert!(
        q.identifier.get(tags::PATIENT_NAME).is_none(),
        "study keys only for /series"
    );
    let q = find(Level::Series, None, None, &[]);
    assert!(q.identifier.get(tags::PATIENT_NAME).is_some());
    assert!(q.identifier.get(tags::SERIES_DESCRIPTION).is_some());

    let q = find(Level::Image, Some("1.2.3"), Some("1.2.3.4"), &[]);
    assert_eq!(
        value(&q, tags::QUERY_RETRIEVE_LEVEL).as_deref(),
        Some("IMAGE")
    );
    assert_eq!(
        value(&q, tags::SERIES_INSTANCE_UID).as_deref(),
        Some("1.2.3.4")
    );
    assert!(q.identifier.get(tags::SOP_INSTANCE_UID).is_some());
    assert!(q.identifier.get(tags::MODALITY).is_none());
    let q = find(Level::Image, Some("1.2.3"), None, &[]);
    assert!(q.identifier.get(tags::MODALITY).is_some());
    assert!(q.identifier.get(tags::PATIENT_ID).is_none());
    let q = find(Level::Image, None, None, &[("SOPInstanceUID", "9.8")]);
    assert!(q.identifier.get(tags::PATIENT_ID).is_some());
    assert_eq!(value(&q, tags::SOP_INSTANCE_UID).as_deref(), Some("9.8"));
}

#[test]
fn includefield_is_repeatable_comma_separated_and_all() {
    let q = find(
        Level::Study,
        None,
        None,
        &[
            ("includefield", "PatientAge,00081032"),
            ("includefield", "InstitutionName"),
        ],
    );
    assert!(q.identifier.get(tags::PATIENT_AGE).is_some());
    assert!(q.identifier.get(tags::INSTITUTION_NAME).is_some());
    let seq = q.identifier.get(tags::PROCEDURE_CODE_SEQUENCE).unwrap();
    assert_eq!(seq.vr(), VR::SQ);
    assert!(q.identifier.get(tags::PATIENT_WEIGHT).is_none());
    let q = find(Level::Study, None, None, &[("includefield", "all")]);
    assert!(q.identifier.get(tags::PATIENT_WEIGHT).is_some());
    assert!(q.identifier.get(tags::SERIES_DATE).is_none());
    let q = find(Level::Series, Some("1.2"), None, &[("includefield", "all")]);
    assert!(q.identifier.get(tags::BODY_PART_EXAMINED).is_some());
    assert!(q.identifier.get(tags::PATIENT_WEIGHT).is_none());
}

#[test]
fn sequence_keys_match_inside_one_item() {
    let q = find(
        Level::Series,
        None,
        None,
        &[
            ("00400275.00401001", "RP7"),
            ("RequestAttributesSequence.ScheduledProcedureStepID", ""),
        ],
    );
    let items = q
        .identifier
        .get(tags::REQUEST_ATTRIBUTES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]
            .get(tags::REQUESTED_PROCEDURE_ID)
            .unwrap()
            .to_str()
            .unwrap(),
        "RP7"
    );
    assert_eq!(
        items[0]
            .get(tags::SCHEDULED_PROCEDURE_STEP_ID)
            .unwrap()
            .to_str()
            .unwrap(),
        ""
    );
}

#[test]
fn numbers_travel_in_their_binary_vr() {
    let q = find(
        Level::Image,
        None,
        None,
        &[("Rows", "512"), ("InstanceNumber", "3")],
    );
    let rows = q.identifier.get(tags::ROWS).unwrap();
    assert_eq!(rows.vr(), VR::US);
    assert_eq!(rows.to_int::<u16>().unwrap(), 512);
    assert_eq!(value(&q, tags::INSTANCE_NUMBER).as_deref(), Some("3"));
}

#[test]
fn non_ascii_values_go_as_utf8() {
    let q = find(Level::Study, None, None, &[("PatientName", "Müller^Jü*")]);
    assert_eq!(
        value(&q, tags::SPECIFIC_CHARACTER_SET).as_deref(),
        Some("ISO_IR 192")
    );
    let ts = TransferSyntaxRegistry
        .get(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .unwrap();
    let mut bytes = Vec::new();
    q.identifier.write_dataset_with_ts(&mut bytes, ts).unwrap();
    let utf8 = "Müller^Jü*".as_bytes();
    assert!(bytes.windows(utf8.len()).any(|w| w == utf8));
    let back = InMemDicomObject::read_dataset_with_ts(&bytes[..], ts).unwrap();
    assert_eq!(
        back.get(tags::PATIENT_NAME).unwrap().to_str().unwrap(),
        "Müller^Jü*"
    );
}

#[test]
fn bad_parameters_name_themselves() {
    // (parameter, value, named in the error, problem named)
    let cases = [
        ("PatientNam", "X", "PatientNam", "unknown attribute"),
        ("FFFF0001", "X", "FFFF0001", "unknown attribute"),
        ("StudyDate", "2020-01-01", "StudyDate", "date"),
        ("StudyDate", "20201301-", "StudyDate", "date"),
        ("StudyDate", "-", "StudyDate", "date"),
        ("StudyTime", "2561", "StudyTime", "time"),
        ("StudyInstanceUID", "1.2.abc", "StudyInstanceUID", "UID"),
        ("StudyInstanceUID", "1.2,1..2", "StudyInstanceUID", "UID"),
        ("StudyInstanceUID", "1.2.*", "StudyInstanceUID", "UID"),
        ("limit", "-1", "limit", "integer"),
        ("offset", "x", "offset", "integer"),
        ("fuzzymatching", "yes", "fuzzymatching", "true or false"),
        ("PixelData", "1", "PixelData", "binary"),
        ("InstanceNumber", "three", "InstanceNumber", "number"),
        ("Rows", "70000", "Rows", "number"),
        ("includefield", "Nonsense", "includefield", "Nonsense"),
        (
            "PatientName.PatientID",
            "1",
            "PatientName.PatientID",
            "not a sequence",
        ),
        (
            "QueryRetrieveLevel",
            "IMAGE",
            "QueryRetrieveLevel",
            "not a queryable",
        ),
        (
            "ReferencedStudySequence",
            "1",
            "ReferencedStudySequence",
            "sequence",
        ),
    ];
    for (key, value, param, problem) in cases {
        let e = err(Level::Study, &[(key, value)]);
        assert_eq!(e.param, param, "{key}={value}");
        assert!(e.to_string().contains(problem), "{key}={value}: {e}");
        assert!(e.to_string().contains(param), "{e}");
    }
    let e = err(Level::Study, &[("limit", "1"), ("limit", "2")]);
    assert_eq!(e.param, "limit");
    assert!(e.to_string().contains("more than once"), "{e}");
    let e = qido_to_cfind(Level::Series, Some("1.2.x"), None, &[]).unwrap_err();
    assert!(e.param.contains("study UID"), "{e}");
    let e = qido_to_cfind(
        Level::Series,
        Some("1.2"),
        None,
        &params(&[("StudyInstanceUID", "1.3")]),
    )
    .unwrap_err();
    assert_eq!(e.param, "StudyInstanceUID");
}

#[test]
fn valid_forms_pass() {
    for v in ["20200101", "20200101-", "-20201231", "20200101-20201231"] {
        find(Level::Study, None, None, &[("StudyDate", v)]);
    }
    for v in ["10", "1015", "101530", "101530.123", "10-12", "-1200"] {
        find(Level::Study, None, None, &[("StudyTime", v)]);
    }
    let q = find(
        Level::Study,
        None,
        None,
        &[("fuzzymatching", "true"), ("PatientID", "")],
    );
    assert!(q.fuzzy);
    assert_eq!(value(&q, tags::PATIENT_ID).as_deref(), Some(""));
}
