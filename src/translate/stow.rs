//! STOW-RS response (DICOM JSON) ⇄ per-instance outcome; C-STORE status ⇄
//! Failure Reason, both ways (what codes mean is in `dicom::status`).
//!
//! Pure functions. Direction A: the HTTP client hands us the body bytes and
//! the SOP Instance UIDs it sent, we say what happened to each. Direction B:
//! the STOW-RS route hands us what the PACS said of each part, we write the
//! response body.

use crate::dicom::status::{general, storage};
use crate::dicom::uid;
use crate::translate::json::{from_json, to_json, Bulk};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::collections::HashMap;

/// The upstream's verdict on one instance of a STOW-RS request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceOutcome {
    Stored,
    /// Stored, with Warning Reason (0008,1196).
    StoredWithWarning(u16),
    /// Failed SOP Sequence entry with Failure Reason (0008,1197).
    Failed(u16),
    /// Neither referenced nor listed as failed in the response.
    NotAcknowledged,
}

/// Read a STOW-RS response body (PS3.18 10.5.3) and give the outcome of each
/// UID in `sent_uids`, in that order. An empty body means everything was
/// stored (a bare 200). Some servers wrap the dataset in a one-element array.
pub fn parse_stow_response(
    body: &[u8],
    sent_uids: &[&str],
) -> Result<Vec<InstanceOutcome>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![InstanceOutcome::Stored; sent_uids.len()]);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not JSON: {e}"))?;
    let dataset = from_json(value)?;
    let top_warning = number(&dataset, tags::WARNING_REASON);
    let mut verdicts: HashMap<String, InstanceOutcome> = HashMap::new();
    for item in items(&dataset, tags::REFERENCED_SOP_SEQUENCE) {
        if let Some(uid) = item_uid(item) {
            let warning = number(item, tags::WARNING_REASON).or(top_warning);
            let outcome = match warning {
                Some(w) => InstanceOutcome::StoredWithWarning(w),
                None => InstanceOutcome::Stored,
            };
            verdicts.insert(uid, outcome);
        }
    }
    // Failures win over references if a server lists a UID in both.
    for item in items(&dataset, tags::FAILED_SOP_SEQUENCE) {
        if let Some(uid) = item_uid(item) {
            let reason = number(item, tags::FAILURE_REASON).unwrap_or(general::PROCESSING_FAILURE);
            verdicts.insert(uid, InstanceOutcome::Failed(reason));
        }
    }
    Ok(sent_uids
        .iter()
        .map(|uid| {
            verdicts
                .get(uid::trim(uid))
                .cloned()
                .unwrap_or(InstanceOutcome::NotAcknowledged)
        })
        .collect())
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or_default()
}

fn item_uid(item: &InMemDicomObject) -> Option<String> {
    let v = item.get(tags::REFERENCED_SOP_INSTANCE_UID)?.to_str().ok()?;
    Some(uid::trim(&v).to_owned())
}

fn number(obj: &InMemDicomObject, tag: Tag) -> Option<u16> {
    obj.get(tag)?.to_int::<u16>().ok()
}

/// Codes that mean the same as a C-STORE-RSP status and as a STOW-RS
/// Failure Reason (PS3.4 Table B.2-1, PS3.7 C, PS3.18 Table I.2-2): both
/// directions pass them through unchanged.
fn same_both_ways(code: u16) -> bool {
    matches!(
        code,
        0xA700..=0xA7FF
            | 0xA900..=0xA9FF
            | 0xC000..=0xCFFF
            | 0x0122
            | 0x0124
            | 0x0210
            | 0x0211
            | 0x0212
    )
}

/// The C-STORE-RSP status to give a modality ("direct" mode) when the
/// upstream refused its instance with this STOW Failure Reason.
///
/// Shared codes pass through; transient upstream trouble becomes Out of
/// Resources so the modality tries again later.
pub fn dimse_status_for_failure(reason: u16) -> u16 {
    match reason {
        r if same_both_ways(r) => r,
        // Warnings, should an origin put one here.
        0xB000..=0xB0FF => reason,
        // The archive had trouble, not the instance: let the modality retry.
        general::PROCESSING_FAILURE | general::RESOURCE_LIMITATION => storage::OUT_OF_RESOURCES,
        // The archive knows this UID under another class.
        general::CLASS_INSTANCE_CONFLICT => storage::DATA_SET_MISMATCH,
        _ => storage::CANNOT_UNDERSTAND,
    }
}

/// The STOW-RS Failure Reason (0008,1197) for a failed C-STORE-RSP status
/// (direction B): the other way of [`dimse_status_for_failure`].
pub fn failure_for_dimse_status(status: u16) -> u16 {
    match status {
        s if same_both_ways(s) => s,
        // A duplicate or otherwise unusable instance, as the PACS saw it.
        general::DUPLICATE_SOP_INSTANCE
        | general::INVALID_OBJECT_INSTANCE
        | general::CLASS_INSTANCE_CONFLICT => storage::DATA_SET_MISMATCH,
        _ => general::PROCESSING_FAILURE,
    }
}

/// Failure Reason for an instance whose Study Instance UID differs from the
/// study of the request URL (PS3.18 10.5: refused, never stored). The
/// standard leaves the code to us within A9xx ("does not match"); A901 is
/// what other origins (Microsoft's DICOM service) send.
pub const FAILURE_STUDY_MISMATCH: u16 = 0xA901;

/// What became of one part of a STOW-RS request we answer (direction B).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReport {
    /// Unknown for a part that is not DICOM at all.
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    /// Where a stored instance can be retrieved.
    pub retrieve_url: Option<String>,
    /// Stored, StoredWithWarning or Failed.
    pub outcome: InstanceOutcome,
}

/// The Store Instances Response Module (PS3.18 Annex I) as DICOM JSON:
/// Retrieve URL of the study (type 2: empty when unknown), Referenced SOP
/// Sequence for what was stored, Failed SOP Sequence for the rest.
pub fn stow_response_body(
    study_retrieve_url: Option<&str>,
    reports: &[InstanceReport],
) -> serde_json::Value {
    let (mut stored, mut failed) = (Vec::new(), Vec::new());
    for r in reports {
        let mut item = InMemDicomObject::new_empty();
        for (tag, uid) in [
            (tags::REFERENCED_SOP_CLASS_UID, &r.sop_class_uid),
            (tags::REFERENCED_SOP_INSTANCE_UID, &r.sop_instance_uid),
        ] {
            if let Some(uid) = uid {
                item.put(DataElement::new(
                    tag,
                    VR::UI,
                    PrimitiveValue::from(uid.as_str()),
                ));
            }
        }
        let reason = match r.outcome {
            InstanceOutcome::Stored | InstanceOutcome::StoredWithWarning(_) => {
                item.put(retrieve_url(r.retrieve_url.as_deref()));
                if let InstanceOutcome::StoredWithWarning(w) = r.outcome {
                    item.put(us(tags::WARNING_REASON, w));
                }
                stored.push(item);
                continue;
            }
            InstanceOutcome::Failed(reason) => reason,
            // We always know what the PACS said; count silence as a failure.
            InstanceOutcome::NotAcknowledged => general::PROCESSING_FAILURE,
        };
        item.put(us(tags::FAILURE_REASON, reason));
        failed.push(item);
    }
    let mut body = InMemDicomObject::from_element_iter([retrieve_url(study_retrieve_url)]);
    // 1C: present only when not empty.
    for (tag, items) in [
        (tags::FAILED_SOP_SEQUENCE, failed),
        (tags::REFERENCED_SOP_SEQUENCE, stored),
    ] {
        if !items.is_empty() {
            body.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
        }
    }
    to_json(&body, &Bulk::Inline)
}

/// Retrieve URL is type 2: empty when unknown.
fn retrieve_url(url: Option<&str>) -> DataElement<InMemDicomObject> {
    let value = url.map_or(PrimitiveValue::Empty, PrimitiveValue::from);
    DataElement::new(tags::RETRIEVE_URL, VR::UR, value)
}

fn us(tag: Tag, n: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceOutcome::*;

    const ORTHANC_OK: &str = r#"{
        "00081190": {"vr": "UR", "Value": ["http://localhost:8042/dicom-web/studies/1.2.3"]},
        "00081198": {"vr": "SQ"},
        "00081199": {"vr": "SQ", "Value": [
            {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
             "00081155": {"vr": "UI", "Value": ["1.2.3.4"]},
             "00081190": {"vr": "UR", "Value": ["http://localhost:8042/dicom-web/studies/1.2.3/series/1.2.3.1/instances/1.2.3.4"]}},
            {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
             "00081155": {"vr": "UI", "Value": ["1.2.3.5"]}}
        ]}
    }"#;

    #[test]
    fn orthanc_all_stored() {
        let out = parse_stow_response(ORTHANC_OK.as_bytes(), &["1.2.3.4", "1.2.3.5"]).unwrap();
        assert_eq!(out, vec![Stored, Stored]);
    }

    #[test]
    fn missing_uid_is_not_acknowledged() {
        let out = parse_stow_response(ORTHANC_OK.as_bytes(), &["1.2.3.5", "9.9"]).unwrap();
        assert_eq!(out, vec![Stored, NotAcknowledged]);
    }

    #[test]
    fn mixed_failures_and_warnings() {
        let body = r#"{
            "00081198": {"vr": "SQ", "Value": [
                {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                 "00081155": {"vr": "UI", "Value": ["1.2.3.6"]},
                 "00081197": {"vr": "US", "Value": [43264]}},
                {"00081155": {"vr": "UI", "Value": ["1.2.3.7"]}}
            ]},
            "00081199": {"vr": "SQ", "Value": [
                {"00081155": {"vr": "UI", "Value": ["1.2.3.4"]},
                 "00081196": {"vr": "US", "Value": [45056]}},
                {"00081155": {"vr": "UI", "Value": ["1.2.3.5\u0000"]}}
            ]}
        }"#;
        let out = parse_stow_response(
            body.as_bytes(),
            &["1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.3.7"],
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                StoredWithWarning(0xB000),
                Stored,
                Failed(0xA900),
                Failed(general::PROCESSING_FAILURE)
            ]
        );
    }

    #[test]
    fn all_failed_409_body() {
        let body = r#"{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3.4"]},"00081197":{"vr":"US","Value":[290]}}]}}"#;
        let out = parse_stow_response(body.as_bytes(), &["1.2.3.4"]).unwrap();
        assert_eq!(out, vec![Failed(0x0122)]);
    }

    #[test]
    fn top_level_warning_applies_to_referenced() {
        let body = r#"{"00081196":{"vr":"US","Value":[45063]},
            "00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2"]}}]}}"#;
        let out = parse_stow_response(body.as_bytes(), &["1.2"]).unwrap();
        assert_eq!(out, vec![StoredWithWarning(0xB007)]);
    }

    #[test]
    fn empty_body_means_all_stored_and_array_wrapper_is_accepted() {
        assert_eq!(
            parse_stow_response(b" \n", &["1", "2"]).unwrap(),
            vec![Stored, Stored]
        );
        let wrapped = format!("[{ORTHANC_OK}]");
        assert_eq!(
            parse_stow_response(wrapped.as_bytes(), &["1.2.3.4"]).unwrap(),
            vec![Stored]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [
            &b"<html>oops</html>"[..],
            b"42",
            b"[]",
            b"{\"00081199\":{\"Value\":3}}",
        ] {
            assert!(parse_stow_response(body, &["1"]).is_err(), "{body:?}");
        }
        // Odd but harmless shapes are tolerated: no "vr", a null value.
        let odd = br#"{"00081199":{"Value":[{"00081155":{"Value":[null]}}]}}"#;
        assert_eq!(
            parse_stow_response(odd, &["1"]).unwrap(),
            vec![NotAcknowledged]
        );
    }

    #[test]
    fn status_table() {
        let cases = [
            (0xA700, 0xA700),
            (0xA7FE, 0xA7FE),
            (0xA900, 0xA900),
            (0xC000, 0xC000),
            (0xC122, 0xC122),
            (0x0110, 0xA700),
            (0x0213, 0xA700),
            (0x0122, 0x0122),
            (0x0124, 0x0124),
            (0x0119, 0xA900),
            (0x0112, 0xC000),
            (0xB000, 0xB000),
            (0x1234, 0xC000),
        ];
        for (reason, status) in cases {
            assert_eq!(dimse_status_for_failure(reason), status, "{reason:04X}");
        }
    }

    #[test]
    fn status_table_the_other_way() {
        let cases = [
            (0xA700, 0xA700),
            (0xA7FE, 0xA7FE),
            (0xA900, 0xA900),
            (0xC000, 0xC000),
            (0xC122, 0xC122),
            (0x0122, 0x0122),
            (0x0124, 0x0124),
            (0x0111, 0xA900),
            (0x0110, 0x0110),
            (0x0213, 0x0110),
            (0xFFFF, 0x0110),
        ];
        for (status, reason) in cases {
            assert_eq!(failure_for_dimse_status(status), reason, "{status:04X}");
        }
        // Shared codes survive the round trip.
        for code in [0xA700, 0xA9FF, 0xC122, 0x0122, 0x0124, 0x0212] {
            assert_eq!(
                dimse_status_for_failure(failure_for_dimse_status(code)),
                code
            );
        }
    }

    #[test]
    fn response_body_reads_back_with_our_own_parser() {
        let report = |uid: &str, outcome| InstanceReport {
            sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            sop_instance_uid: Some(uid.into()),
            retrieve_url: Some(format!(
                "http://h/dicom-web/studies/1/series/2/instances/{uid}"
            )),
            outcome,
        };
        let mut garbage = report("x", Failed(0xC000));
        garbage.sop_class_uid = None;
        garbage.sop_instance_uid = None;
        let reports = vec![
            report("1.1", Stored),
            report("1.2", StoredWithWarning(0xB000)),
            report("1.3", Failed(FAILURE_STUDY_MISMATCH)),
            garbage,
        ];
        let body = stow_response_body(Some("http://h/dicom-web/studies/1"), &reports);
        assert_eq!(body["00081190"]["Value"][0], "http://h/dicom-web/studies/1");
        assert_eq!(body["00081198"]["Value"].as_array().unwrap().len(), 2);
        assert_eq!(
            body["00081199"]["Value"][0]["00081190"]["Value"][0],
            "http://h/dicom-web/studies/1/series/2/instances/1.1"
        );
        // The item of the part that was not DICOM has a reason and no UIDs.
        let unnamed = &body["00081198"]["Value"][1];
        assert_eq!(unnamed["00081197"]["Value"][0], 0xC000);
        assert!(unnamed.get("00081155").is_none());
        let text = serde_json::to_vec(&body).unwrap();
        let out = parse_stow_response(&text, &["1.1", "1.2", "1.3"]).unwrap();
        assert_eq!(out, vec![Stored, StoredWithWarning(0xB000), Failed(0xA901)]);

        let none = stow_response_body(None, &[]);
        assert_eq!(none, serde_json::json!({"00081190": {"vr": "UR"}}));
    }
}
