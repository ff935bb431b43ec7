use super::json::{request_from_json, request_to_json, result_from_json, result_to_json};
use super::*;
use dicom_dictionary_std::uids;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde_json::json;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
const TXN: &str = "1.2.826.0.1.3680043.8.498.1";

/// Through the wire encoding, as the listener will see it.
fn wire(obj: &InMemDicomObject, ts_uid: &str) -> InMemDicomObject {
    let ts = TransferSyntaxRegistry.get(ts_uid).unwrap();
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(&mut bytes, ts).unwrap();
    InMemDicomObject::read_dataset_with_ts(&bytes[..], ts).unwrap()
}

fn request(n: usize) -> CommitRequest {
    CommitRequest {
        transaction_uid: TXN.into(),
        instances: (1..=n)
            .map(|i| SopRef::new(if i % 2 == 0 { MR } else { CT }, &format!("1.2.3.{i}")))
            .collect(),
    }
}

fn raw(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn item(class: Option<&str>, instance: Option<&str>) -> InMemDicomObject {
    let mut e = Vec::new();
    if let Some(c) = class {
        e.push(ui(tags::REFERENCED_SOP_CLASS_UID, c));
    }
    if let Some(i) = instance {
        e.push(ui(tags::REFERENCED_SOP_INSTANCE_UID, i));
    }
    raw(e)
}

#[test]
fn n_action_data_set_round_trips_in_both_little_endians() {
    let rq = request(3);
    for ts in [
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
    ] {
        let back = request_from_dataset(&wire(&request_to_dataset(&rq), ts)).unwrap();
        assert_eq!(back, rq);
    }
}

#[test]
fn padding_is_trimmed() {
    // An odd-length UID goes out NUL-padded; it must read back unpadded.
    let obj = raw(vec![
        ui(tags::TRANSACTION_UID, "1.2.3"),
        sequence(
            tags::REFERENCED_SOP_SEQUENCE,
            vec![item(Some(CT), Some("1.2.345"))],
        ),
    ]);
    let rq = request_from_dataset(&wire(&obj, uids::IMPLICIT_VR_LITTLE_ENDIAN)).unwrap();
    assert_eq!(rq.transaction_uid, "1.2.3");
    assert_eq!(rq.instances, vec![SopRef::new(CT, "1.2.345")]);
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let seq = |items| sequence(tags::REFERENCED_SOP_SEQUENCE, items);
    let good = || item(Some(CT), Some("1.2.3"));
    let cases: Vec<(InMemDicomObject, RequestError)> = vec![
        (
            raw(vec![seq(vec![good()])]),
            RequestError::MissingTransactionUid,
        ),
        (
            raw(vec![ui(tags::TRANSACTION_UID, ""), seq(vec![good()])]),
            RequestError::MissingTransactionUid,
        ),
        (
            raw(vec![ui(tags::TRANSACTION_UID, "1.2.x"), seq(vec![good()])]),
            RequestError::BadTransactionUid,
        ),
        (
            raw(vec![ui(tags::TRANSACTION_UID, "1.2.3a"), seq(vec![good()])]),
            RequestError::BadTransactionUid,
        ),
        (
            raw(vec![ui(tags::TRANSACTION_UID, TXN)]),
            RequestError::NoInstances,
        ),
        (
            raw(vec![ui(tags::TRANSACTION_UID, TXN), seq(vec![])]),
            RequestError::NoInstances,
        ),
        (
            raw(vec![
                ui(tags::TRANSACTION_UID, TXN),
                seq(vec![good(), item(Some(CT), None)]),
            ]),
            RequestError::ItemWithoutUids {
                sequence: REFERENCED_SOP,
                index: 1,
            },
        ),
        (
            raw(vec![
                ui(tags::TRANSACTION_UID, TXN),
                seq(vec![item(None, Some("1.2.3"))]),
            ]),
            RequestError::ItemWithoutUids {
                sequence: REFERENCED_SOP,
                index: 0,
            },
        ),
        (
            raw(vec![
                ui(tags::TRANSACTION_UID, TXN),
                seq(vec![item(Some(CT), Some("1.2.3.abc"))]),
            ]),
            RequestError::BadUid {
                sequence: REFERENCED_SOP,
                index: 0,
            },
        ),
    ];
    for (obj, want) in cases {
        let got = request_from_dataset(&wire(&obj, uids::EXPLICIT_VR_LITTLE_ENDIAN)).unwrap_err();
        assert_eq!(got, want);
        // Every message fits an Error Comment.
        assert!(got.to_string().len() <= 64, "{got}");
    }
}

#[test]
fn event_report_lists_committed_and_failed() {
    let all = CommitResult {
        transaction_uid: TXN.into(),
        committed: request(2).instances,
        failed: vec![],
    };
    assert_eq!(all.event_type(), EVENT_ALL_COMMITTED);
    let obj = wire(&result_to_dataset(&all), uids::IMPLICIT_VR_LITTLE_ENDIAN);
    assert!(obj.get(tags::FAILED_SOP_SEQUENCE).is_none());
    assert_eq!(
        obj.get(tags::REFERENCED_SOP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(result_from_dataset(&obj).unwrap(), all);

    let some = CommitResult {
        transaction_uid: TXN.into(),
        committed: vec![SopRef::new(CT, "1.2.3.1")],
        failed: vec![
            FailedRef {
                sop: SopRef::new(CT, "1.2.3.2"),
                reason: reason::NO_SUCH_INSTANCE,
            },
            FailedRef {
                sop: SopRef::new(MR, "1.2.3.3"),
                reason: reason::CLASS_INSTANCE_CONFLICT,
            },
        ],
    };
    assert_eq!(some.event_type(), EVENT_FAILURES_PRESENT);
    let obj = wire(&result_to_dataset(&some), uids::EXPLICIT_VR_LITTLE_ENDIAN);
    let failed = obj.get(tags::FAILED_SOP_SEQUENCE).unwrap().items().unwrap();
    assert_eq!(failed[1].get(tags::FAILURE_REASON).unwrap().vr(), VR::US);
    assert_eq!(
        failed[1]
            .get(tags::FAILURE_REASON)
            .unwrap()
            .to_int::<u16>()
            .unwrap(),
        0x0119
    );
    assert_eq!(result_from_dataset(&obj).unwrap(), some);

    let none = CommitResult {
        committed: vec![],
        ..some.clone()
    };
    let obj = wire(&result_to_dataset(&none), uids::EXPLICIT_VR_LITTLE_ENDIAN);
    assert!(obj.get(tags::REFERENCED_SOP_SEQUENCE).is_none());
    assert_eq!(result_from_dataset(&obj).unwrap(), none);
}

#[test]
fn a_failed_item_without_reason_is_a_processing_failure() {
    let obj = raw(vec![
        ui(tags::TRANSACTION_UID, TXN),
        sequence(
            tags::FAILED_SOP_SEQUENCE,
            vec![item(Some(CT), Some("1.2.3"))],
        ),
    ]);
    let got = result_from_dataset(&obj).unwrap();
    assert_eq!(got.failed[0].reason, reason::PROCESSING_FAILURE);
    assert!(got.committed.is_empty());
}

#[test]
fn json_flat_request_round_trips() {
    let rq = request(3);
    let body = request_to_json(&rq);
    assert_eq!(
        body["00081199"]["Value"][1],
        json!({"00081150": {"vr": "UI", "Value": [MR]}, "00081155": {"vr": "UI", "Value": ["1.2.3.2"]}})
    );
    assert_eq!(request_from_json(&body, TXN).unwrap(), rq);
    // Wrapped in an array, as some servers and clients do.
    assert_eq!(request_from_json(&json!([body]), TXN).unwrap(), rq);
}

fn hierarchy_body() -> serde_json::Value {
    let inst = |uid: &str| json!({"00081155": {"vr": "UI", "Value": [uid]}});
    json!({
        "00081110": {"vr": "SQ", "Value": [{
            "0020000D": {"vr": "UI", "Value": ["1.2.9"]},
            "00081115": {"vr": "SQ", "Value": [{
                "0020000E": {"vr": "UI", "Value": ["1.2.9.1"]},
                "00081112": {"vr": "SQ", "Value": [
                    {"00081150": {"vr": "UI", "Value": [CT]},
                     "0008114A": {"vr": "SQ", "Value": [inst("1.2.9.1.1"), inst("1.2.9.1.2")]}},
                    {"00081150": {"vr": "UI", "Value": [MR]},
                     "0008114A": {"vr": "SQ", "Value": [inst("1.2.9.1.3")]}}
                ]}
            }]}
        }]}
    })
}

#[test]
fn json_hierarchical_request_is_read_with_study_and_series() {
    let rq = request_from_json(&hierarchy_body(), TXN).unwrap();
    let placed = |class: &str, uid: &str| SopRef {
        study_uid: Some("1.2.9".into()),
        series_uid: Some("1.2.9.1".into()),
        ..SopRef::new(class, uid)
    };
    assert_eq!(
        rq.instances,
        vec![
            placed(CT, "1.2.9.1.1"),
            placed(CT, "1.2.9.1.2"),
            placed(MR, "1.2.9.1.3")
        ]
    );
    // A result for it comes back in the same shape.
    let result = CommitResult {
        transaction_uid: TXN.into(),
        committed: rq.instances[..2].to_vec(),
        failed: vec![FailedRef {
            sop: rq.instances[2].clone(),
            reason: reason::NO_SUCH_INSTANCE,
        }],
    };
    let body = result_to_json(&result, true);
    assert!(body.get("00081199").is_none() && body.get("00081198").is_none());
    let committed = &body["00081110"]["Value"][0]["00081115"]["Value"][0]["00081112"]["Value"];
    assert_eq!(committed.as_array().unwrap().len(), 1);
    assert_eq!(
        committed[0]["0008114A"]["Value"].as_array().unwrap().len(),
        2
    );
    let failed = &body["0008119B"]["Value"][0]["00081115"]["Value"][0]["00081112"]["Value"][0];
    assert_eq!(failed["00081150"]["Value"][0], MR);
    assert_eq!(
        failed["0008114A"]["Value"][0]["00081197"],
        json!({"vr": "US", "Value": [0x0112]})
    );
    assert_eq!(result_from_json(&body, TXN).unwrap(), result);
}

#[test]
fn json_flat_result_round_trips() {
    let result = CommitResult {
        transaction_uid: TXN.into(),
        committed: vec![SopRef::new(CT, "1.2.3.1")],
        failed: vec![FailedRef {
            sop: SopRef::new(CT, "1.2.3.2"),
            reason: reason::CLASS_INSTANCE_CONFLICT,
        }],
    };
    // Asked for the hierarchy, but without study/series only flat is possible.
    for hierarchical in [false, true] {
        let body = result_to_json(&result, hierarchical);
        assert_eq!(body["00081198"]["Value"][0]["00081197"]["Value"][0], 0x0119);
        assert!(
            body.get("00081195").is_none(),
            "no Transaction UID in bodies"
        );
        assert_eq!(result_from_json(&body, TXN).unwrap(), result);
    }
    // A Failure Reason as a decimal string, none at all, and an empty answer.
    let body = json!({"00081198": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": [CT]}, "00081155": {"vr": "UI", "Value": ["1.2.3.1"]},
         "00081197": {"vr": "US", "Value": ["274"]}},
        {"00081150": {"vr": "UI", "Value": [CT]}, "00081155": {"vr": "UI", "Value": ["1.2.3.2"]}}
    ]}});
    let got = result_from_json(&body, TXN).unwrap();
    assert_eq!(got.failed[0].reason, 0x0112);
    assert_eq!(got.failed[1].reason, 0x0110);
    assert_eq!(result_from_json(&json!({}), TXN).unwrap().failed, vec![]);
}

#[test]
fn json_bad_requests_say_what_is_wrong() {
    let flat = request_to_json(&request(1));
    assert_eq!(
        request_from_json(&flat, "not-a-uid").unwrap_err(),
        RequestError::BadTransactionUid
    );
    assert_eq!(
        request_from_json(&flat, "").unwrap_err(),
        RequestError::MissingTransactionUid
    );
    assert_eq!(
        request_from_json(&json!({}), TXN).unwrap_err(),
        RequestError::NoInstances
    );
    assert_eq!(
        request_from_json(&json!({"00081199": {"vr": "SQ"}}), TXN).unwrap_err(),
        RequestError::NoInstances
    );
    let cases = [
        json!("text"),
        json!([1, 2]),
        json!({"00081199": {"vr": "SQ", "Value": "x"}}),
        json!({"00081199": {"vr": "SQ", "Value": [1]}}),
        json!({"00081110": {"vr": "SQ", "Value": [{"00081115": {"vr": "SQ", "Value": []}}]}}),
    ];
    for body in cases {
        let err = request_from_json(&body, TXN).unwrap_err();
        assert!(matches!(err, RequestError::Malformed(_)), "{body}: {err:?}");
    }
    let no_instance_uid = json!({"00081199": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": [CT]}}
    ]}});
    assert_eq!(
        request_from_json(&no_instance_uid, TXN).unwrap_err(),
        RequestError::ItemWithoutUids {
            sequence: REFERENCED_SOP,
            index: 0
        }
    );
    let mut bad_series = hierarchy_body();
    bad_series["00081110"]["Value"][0]["00081115"]["Value"][0]["0020000E"]["Value"][0] =
        json!("1.2.x");
    assert!(matches!(
        request_from_json(&bad_series, TXN).unwrap_err(),
        RequestError::BadUid { .. }
    ));
}

#[test]
fn an_archive_answer_is_held_against_the_request() {
    let rq = request(4);
    let answer = CommitResult {
        transaction_uid: TXN.into(),
        // 1.2.3.1 committed; 1.2.3.2 both (failure wins); 1.2.3.4 not
        // mentioned; 1.2.3.9 never asked for.
        committed: vec![
            SopRef::new(CT, "1.2.3.1"),
            SopRef::new(MR, "1.2.3.2"),
            SopRef::new(CT, "1.2.3.9"),
        ],
        failed: vec![
            FailedRef {
                sop: SopRef::new(MR, "1.2.3.2"),
                reason: reason::RESOURCE_LIMITATION,
            },
            FailedRef {
                sop: SopRef::new(CT, "1.2.3.3"),
                reason: reason::NO_SUCH_INSTANCE,
            },
        ],
    };
    let got = CommitResult::reconcile(&rq, &answer);
    assert_eq!(got.committed, vec![rq.instances[0].clone()]);
    let failed: Vec<(&str, u16)> = got
        .failed
        .iter()
        .map(|f| (f.sop.instance_uid.as_str(), f.reason))
        .collect();
    assert_eq!(
        failed,
        vec![
            ("1.2.3.2", 0x0213),
            ("1.2.3.3", 0x0112),
            ("1.2.3.4", 0x0110)
        ]
    );
    assert_eq!(got.transaction_uid, TXN);
}
