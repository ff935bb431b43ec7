use super::*;
use crate::translate::ups::{mwl_to_ups, ups_to_mwl};
use dicom_object::mem::InMemElement;

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    let value = if value.is_empty() {
        PrimitiveValue::Empty
    } else {
        PrimitiveValue::from(value)
    };
    obj.put(DataElement::new(tag, vr, value));
}

fn with_sps(mut top: InMemDicomObject, items: Vec<InMemDicomObject>) -> InMemDicomObject {
    top.put(DataElement::new(SPS, VR::SQ, DataSetSequence::from(items)));
    top
}

fn step(modality: &str, station: &str, date: &str, time: &str) -> InMemDicomObject {
    let mut s = InMemDicomObject::new_empty();
    put(&mut s, tags::MODALITY, VR::CS, modality);
    put(&mut s, tags::SCHEDULED_STATION_AE_TITLE, VR::AE, station);
    put(
        &mut s,
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
        VR::DA,
        date,
    );
    put(
        &mut s,
        tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
        VR::TM,
        time,
    );
    put(&mut s, tags::SCHEDULED_PROCEDURE_STEP_ID, VR::SH, "SPS1");
    put(&mut s, tags::SCHEDULED_STATION_NAME, VR::SH, "Room 1");
    s
}

fn entry() -> InMemDicomObject {
    let mut top = InMemDicomObject::new_empty();
    put(&mut top, tags::ACCESSION_NUMBER, VR::SH, "ACC1");
    put(&mut top, tags::PATIENT_NAME, VR::PN, "Doe^Jane");
    put(&mut top, tags::PATIENT_ID, VR::LO, "P1");
    put(&mut top, tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
    put(&mut top, tags::REQUESTED_PROCEDURE_ID, VR::SH, "RP1");
    with_sps(
        top,
        vec![
            step("CT", "CT1", "20261203", "0900"),
            step("MR", "MR1", "20261204", "1400"),
        ],
    )
}

/// A modality's typical query: patient name pattern, its modality and a day.
fn query(modality: &str, date: &str, time: &str) -> InMemDicomObject {
    let mut top = InMemDicomObject::new_empty();
    put(&mut top, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    put(&mut top, tags::PATIENT_NAME, VR::PN, "DOE*");
    put(&mut top, tags::ACCESSION_NUMBER, VR::SH, "");
    let mut s = InMemDicomObject::new_empty();
    put(&mut s, tags::MODALITY, VR::CS, modality);
    put(
        &mut s,
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
        VR::DA,
        date,
    );
    put(
        &mut s,
        tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
        VR::TM,
        time,
    );
    put(&mut s, tags::SCHEDULED_STATION_AE_TITLE, VR::AE, "");
    with_sps(top, vec![s])
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn sps_items(obj: &InMemDicomObject) -> Vec<InMemDicomObject> {
    match obj.get(SPS).map(|e| e.value()) {
        Some(Value::Sequence(s)) => s.items().to_vec(),
        _ => vec![],
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn query_parameters_for_both_resources() {
    let q = WorklistQuery::from_identifier(&query("CT", "20261203", "0800-1000")).unwrap();
    let mwl = q.mwl_params();
    assert_eq!(param(&mwl, "PatientName"), ["DOE*"]);
    assert_eq!(
        param(&mwl, "ScheduledProcedureStepSequence.Modality"),
        ["CT"]
    );
    assert_eq!(
        param(
            &mwl,
            "ScheduledProcedureStepSequence.ScheduledProcedureStepStartTime"
        ),
        ["0800-1000"]
    );
    assert!(param(&mwl, "includefield").contains(&"00400100"));
    assert!(param(&mwl, "includefield").contains(&"00080050"));

    let ups = q.ups_params();
    assert_eq!(param(&ups, "ProcedureStepState"), ["SCHEDULED"]);
    assert_eq!(
        param(&ups, "ScheduledStationClassCodeSequence.CodeValue"),
        ["CT"]
    );
    assert_eq!(
        param(&ups, "ScheduledProcedureStepStartDateTime"),
        ["20261203080000-20261203100059"]
    );
    assert_eq!(param(&ups, "PatientName"), ["DOE*"]);
    assert!(param(&ups, "includefield").contains(&"0040A370"), "{ups:?}");
    assert!(param(&ups, "includefield").contains(&"00404026"));
    // A date range without a time: whole days.
    let q = WorklistQuery::from_identifier(&query("", "20261203-20261205", "")).unwrap();
    assert_eq!(
        param(&q.ups_params(), "ScheduledProcedureStepStartDateTime"),
        ["20261203000000-20261205235959"]
    );
}

#[test]
fn answers_are_matched_again_and_carry_exactly_the_requested_keys() {
    let e = entry();
    let q = WorklistQuery::from_identifier(&query("MR", "", "")).unwrap();
    let out = q.responses(&e);
    assert_eq!(out.len(), 1);
    let rsp = &out[0];
    assert_eq!(text(rsp, tags::ACCESSION_NUMBER), "ACC1");
    assert_eq!(text(rsp, tags::PATIENT_NAME), "Doe^Jane");
    assert!(rsp.get(tags::PATIENT_ID).is_none(), "not asked for");
    let items = sps_items(rsp);
    assert_eq!(items.len(), 1);
    assert_eq!(text(&items[0], tags::MODALITY), "MR");
    assert_eq!(text(&items[0], tags::SCHEDULED_STATION_AE_TITLE), "MR1");
    assert_eq!(
        text(&items[0], tags::SCHEDULED_PROCEDURE_STEP_START_DATE),
        "20261204"
    );
    assert!(items[0].get(tags::SCHEDULED_PROCEDURE_STEP_ID).is_none());

    // Each matching step is its own response; a time range selects one.
    let both = WorklistQuery::from_identifier(&query("", "", "")).unwrap();
    assert_eq!(both.responses(&e).len(), 2);
    let morning = WorklistQuery::from_identifier(&query("", "", "0800-1000")).unwrap();
    assert_eq!(morning.responses(&e).len(), 1);
    let nothing = WorklistQuery::from_identifier(&query("US", "", "")).unwrap();
    assert!(nothing.responses(&e).is_empty());
    let mut other = query("", "", "");
    put(&mut other, tags::PATIENT_NAME, VR::PN, "ROE*");
    let other = WorklistQuery::from_identifier(&other).unwrap();
    assert!(other.responses(&e).is_empty());
}

#[test]
fn a_workitem_becomes_the_same_worklist_entry() {
    let original = with_sps(
        {
            let mut e = entry();
            e.remove_element(SPS);
            e
        },
        vec![step("CT", "CT1", "20261203", "0930")],
    );
    let item = mwl_to_ups(&original);
    assert_eq!(text(&item, tags::PROCEDURE_STEP_STATE), "SCHEDULED");
    assert_eq!(
        text(&item, tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME),
        "202612030930"
    );
    assert!(
        item.get(tags::ACCESSION_NUMBER).is_none(),
        "moved into the request"
    );
    let uid = text(&item, tags::SOP_INSTANCE_UID);
    assert!(uid.starts_with("2.25.") && uid.len() <= 64);
    assert_eq!(uid, text(&mwl_to_ups(&original), tags::SOP_INSTANCE_UID));

    let back = ups_to_mwl(&item);
    for tag in [
        tags::ACCESSION_NUMBER,
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::STUDY_INSTANCE_UID,
        tags::REQUESTED_PROCEDURE_ID,
    ] {
        assert_eq!(text(&back, tag), text(&original, tag), "{tag}");
    }
    let items = sps_items(&back);
    assert_eq!(items.len(), 1);
    for tag in [
        tags::MODALITY,
        tags::SCHEDULED_STATION_AE_TITLE,
        tags::SCHEDULED_STATION_NAME,
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
        tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
    ] {
        assert_eq!(
            text(&items[0], tag),
            text(&sps_items(&original)[0], tag),
            "{tag}"
        );
    }
    assert!(back.get(tags::SOP_INSTANCE_UID).is_none());
    assert!(back.get(tags::PROCEDURE_STEP_STATE).is_none());
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    put(&mut c, tags::CODE_VALUE, VR::SH, value);
    put(&mut c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put(&mut c, tags::CODE_MEANING, VR::LO, meaning);
    c
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn items_of(obj: &InMemDicomObject, tag: Tag) -> Vec<InMemDicomObject> {
    match obj.get(tag).map(|e| e.value()) {
        Some(Value::Sequence(s)) => s.items().to_vec(),
        _ => vec![],
    }
}

#[test]
fn sequence_keys_match_item_by_item_and_return_only_their_item_keys() {
    let mut head = step("CT", "CT1", "20261203", "0900");
    head.put(sequence(
        tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE,
        vec![code("P-HEAD", "99LOCAL", "CT head")],
    ));
    let mut chest = step("CT", "CT1", "20261203", "1000");
    chest.put(sequence(
        tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE,
        vec![
            code("P-CHEST", "99LOCAL", "CT chest"),
            code("P-LOWDOSE", "99LOCAL", "Low dose"),
        ],
    ));
    let mut top = entry();
    top.remove_element(SPS);
    top.put(sequence(
        tags::REQUESTED_PROCEDURE_CODE_SEQUENCE,
        vec![code("RP-CT", "99LOCAL", "CT")],
    ));
    let e = with_sps(top, vec![head, chest]);

    // A protocol code inside the step selects the step with that code; the
    // returned code items hold exactly the asked item keys, matching items only.
    let mut q = query("", "", "");
    let mut sps = sps_items(&q).remove(0);
    let mut asked = code("P-CHEST", "", "");
    asked.remove_element(tags::CODING_SCHEME_DESIGNATOR);
    sps.put(sequence(
        tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE,
        vec![asked],
    ));
    q.put(sequence(SPS, vec![sps.clone()]));
    q.put(sequence(
        tags::REQUESTED_PROCEDURE_CODE_SEQUENCE,
        vec![{
            let mut c = InMemDicomObject::new_empty();
            put(&mut c, tags::CODE_VALUE, VR::SH, "");
            c
        }],
    ));
    let q = WorklistQuery::from_identifier(&q).unwrap();
    assert!(
        !param(&q.mwl_params(), "includefield").is_empty()
            && q.mwl_params().iter().all(|(_, v)| v != "P-CHEST"),
        "sequence values are matched by Pons, not sent"
    );
    let out = q.responses(&e);
    assert_eq!(out.len(), 1);
    let step = &sps_items(&out[0])[0];
    assert_eq!(
        text(step, tags::SCHEDULED_PROCEDURE_STEP_START_TIME),
        "1000"
    );
    let codes = items_of(step, tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE);
    assert_eq!(codes.len(), 1, "only the matching code item");
    assert_eq!(text(&codes[0], tags::CODE_VALUE), "P-CHEST");
    assert_eq!(text(&codes[0], tags::CODE_MEANING), "CT chest");
    assert!(codes[0].get(tags::CODING_SCHEME_DESIGNATOR).is_none());
    let requested = items_of(&out[0], tags::REQUESTED_PROCEDURE_CODE_SEQUENCE);
    assert_eq!(requested.len(), 1);
    assert_eq!(text(&requested[0], tags::CODE_VALUE), "RP-CT");
    assert!(requested[0].get(tags::CODE_MEANING).is_none());

    // A code no step has matches nothing; an empty item returns the whole sequence.
    let mut none = query("", "", "");
    let mut sps_none = sps.clone();
    sps_none.put(sequence(
        tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE,
        vec![code("P-*SPINE", "", "")],
    ));
    none.put(sequence(SPS, vec![sps_none]));
    assert!(WorklistQuery::from_identifier(&none)
        .unwrap()
        .responses(&e)
        .is_empty());
    let mut whole = query("", "", "");
    let mut sps_whole = sps;
    sps_whole.put(sequence(
        tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE,
        vec![InMemDicomObject::new_empty()],
    ));
    whole.put(sequence(SPS, vec![sps_whole]));
    let out = WorklistQuery::from_identifier(&whole)
        .unwrap()
        .responses(&e);
    assert_eq!(out.len(), 2);
    let codes = items_of(
        &sps_items(&out[1])[0],
        tags::SCHEDULED_PROTOCOL_CODE_SEQUENCE,
    );
    assert_eq!(codes.len(), 2);
    assert_eq!(text(&codes[1], tags::CODING_SCHEME_DESIGNATOR), "99LOCAL");
}
