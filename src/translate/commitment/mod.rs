//! Storage commitment: the N-ACTION-RQ data set (PS3.4 J.3.2) ⇄ a request,
//! a result ⇄ the N-EVENT-REPORT-RQ data set (PS3.4 J.3.3). The DICOM JSON
//! forms of the same (PS3.18 ch. 13, Annex J) are in [`json`].
//!
//! Pure: the directions decode and encode the bytes, and decide what is
//! committed; here are only the data sets and their checks.

pub mod json;

use crate::dicom::uid;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

/// Action Type ID (0000,1008) of "Request Storage Commitment".
pub const ACTION_REQUEST_COMMITMENT: u16 = 1;
/// Event Type ID (0000,1002): every instance committed.
pub const EVENT_ALL_COMMITTED: u16 = 1;
/// Event Type ID (0000,1002): failures present.
pub const EVENT_FAILURES_PRESENT: u16 = 2;

/// Failure Reason (0008,1197) values (PS3.3 C.14.1.1).
pub use crate::dicom::status::general as reason;

/// One referenced instance. Study and series are known only when the
/// request came in the DICOMweb study/series hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SopRef {
    pub class_uid: String,
    pub instance_uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_uid: Option<String>,
}

impl SopRef {
    pub fn new(class_uid: &str, instance_uid: &str) -> SopRef {
        SopRef {
            class_uid: class_uid.to_owned(),
            instance_uid: instance_uid.to_owned(),
            study_uid: None,
            series_uid: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    pub transaction_uid: String,
    pub instances: Vec<SopRef>,
}

/// An instance whose storage is not committed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRef {
    #[serde(flatten)]
    pub sop: SopRef,
    pub reason: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResult {
    pub transaction_uid: String,
    pub committed: Vec<SopRef>,
    pub failed: Vec<FailedRef>,
}

impl CommitResult {
    /// The result for `request` when `verdict` says which instances failed
    /// and why (`None`: committed). Request order is kept.
    pub fn settle(
        request: &CommitRequest,
        mut verdict: impl FnMut(&SopRef) -> Option<u16>,
    ) -> CommitResult {
        let (mut committed, mut failed) = (Vec::new(), Vec::new());
        for r in &request.instances {
            match verdict(r) {
                None => committed.push(r.clone()),
                Some(reason) => failed.push(FailedRef {
                    sop: r.clone(),
                    reason,
                }),
            }
        }
        CommitResult {
            transaction_uid: request.transaction_uid.clone(),
            committed,
            failed,
        }
    }

    /// An archive's answer held against what was asked: an instance it
    /// lists as failed has failed, one it lists as committed (and not as
    /// failed) is committed, one it does not mention is a processing
    /// failure, and anything it adds is ignored.
    pub fn reconcile(request: &CommitRequest, answer: &CommitResult) -> CommitResult {
        use std::collections::HashMap;
        let failed: HashMap<&str, u16> = answer
            .failed
            .iter()
            .map(|f| (f.sop.instance_uid.as_str(), f.reason))
            .collect();
        let committed: std::collections::HashSet<&str> = answer
            .committed
            .iter()
            .map(|r| r.instance_uid.as_str())
            .collect();
        Self::settle(request, |r| {
            let uid = r.instance_uid.as_str();
            match failed.get(uid) {
                Some(reason) => Some(*reason),
                None if committed.contains(uid) => None,
                None => Some(reason::PROCESSING_FAILURE),
            }
        })
    }

    /// Event Type ID of the N-EVENT-REPORT that carries this result.
    pub fn event_type(&self) -> u16 {
        if self.failed.is_empty() {
            EVENT_ALL_COMMITTED
        } else {
            EVENT_FAILURES_PRESENT
        }
    }
}

/// What is wrong with a request (or a result we read); the text fits an
/// Error Comment (64 characters) where it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("Transaction UID (0008,1195) is missing")]
    MissingTransactionUid,
    #[error("Transaction UID (0008,1195) is not a valid UID")]
    BadTransactionUid,
    #[error("Referenced SOP Sequence (0008,1199) is missing or empty")]
    NoInstances,
    #[error("{sequence} item {index} lacks SOP Class/Instance UID")]
    ItemWithoutUids {
        sequence: &'static str,
        index: usize,
    },
    #[error("{sequence} item {index} has an invalid UID")]
    BadUid {
        sequence: &'static str,
        index: usize,
    },
    #[error("{sequence} item {index} has no usable Failure Reason")]
    BadFailureReason {
        sequence: &'static str,
        index: usize,
    },
    /// Only for DICOM JSON bodies: not an object, wrong value types…
    #[error("{0}")]
    Malformed(String),
}

pub(crate) const REFERENCED_SOP: &str = "Referenced SOP Sequence";
pub(crate) const FAILED_SOP: &str = "Failed SOP Sequence";

/// The commitment request of an N-ACTION-RQ (Action Type 1) data set.
pub fn request_from_dataset(obj: &InMemDicomObject) -> Result<CommitRequest, RequestError> {
    let transaction_uid = transaction_uid(obj)?;
    let instances = without_reasons(flat(obj, tags::REFERENCED_SOP_SEQUENCE, REFERENCED_SOP)?);
    if instances.is_empty() {
        return Err(RequestError::NoInstances);
    }
    Ok(CommitRequest {
        transaction_uid,
        instances,
    })
}

/// The N-ACTION-RQ data set of a request (flat Referenced SOP Sequence).
pub fn request_to_dataset(request: &CommitRequest) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        ui(tags::TRANSACTION_UID, &request.transaction_uid),
        sequence(
            tags::REFERENCED_SOP_SEQUENCE,
            request.instances.iter().map(ref_item).collect(),
        ),
    ])
}

/// The N-EVENT-REPORT-RQ data set of a result: Transaction UID, Referenced
/// SOP Sequence when something was committed, Failed SOP Sequence with
/// Failure Reasons when something was not (PS3.4 J.3.3.1).
pub fn result_to_dataset(result: &CommitResult) -> InMemDicomObject {
    let mut obj =
        InMemDicomObject::from_element_iter([ui(tags::TRANSACTION_UID, &result.transaction_uid)]);
    if !result.committed.is_empty() {
        obj.put(sequence(
            tags::REFERENCED_SOP_SEQUENCE,
            result.committed.iter().map(ref_item).collect(),
        ));
    }
    if !result.failed.is_empty() {
        obj.put(sequence(
            tags::FAILED_SOP_SEQUENCE,
            result
                .failed
                .iter()
                .map(|f| with_reason(ref_item(&f.sop), Some(f.reason)))
                .collect(),
        ));
    }
    obj
}

/// The result an N-EVENT-REPORT-RQ data set carries. A failed item without
/// a readable Failure Reason counts as a processing failure.
pub fn result_from_dataset(obj: &InMemDicomObject) -> Result<CommitResult, RequestError> {
    let transaction_uid = transaction_uid(obj)?;
    let committed = without_reasons(flat(obj, tags::REFERENCED_SOP_SEQUENCE, REFERENCED_SOP)?);
    let failed = with_reasons(flat(obj, tags::FAILED_SOP_SEQUENCE, FAILED_SOP)?);
    Ok(CommitResult {
        transaction_uid,
        committed,
        failed,
    })
}

fn transaction_uid(obj: &InMemDicomObject) -> Result<String, RequestError> {
    let uid = text(obj, tags::TRANSACTION_UID).ok_or(RequestError::MissingTransactionUid)?;
    check_transaction_uid(&uid)?;
    Ok(uid)
}

pub(crate) fn check_transaction_uid(uid: &str) -> Result<(), RequestError> {
    if uid.is_empty() {
        Err(RequestError::MissingTransactionUid)
    } else if !uid::is_valid(uid) {
        Err(RequestError::BadTransactionUid)
    } else {
        Ok(())
    }
}

/// The items of a flat reference sequence with their Failure Reasons, if
/// any; none when the sequence is absent.
pub(super) fn flat(
    obj: &InMemDicomObject,
    tag: Tag,
    sequence: &'static str,
) -> Result<Vec<(SopRef, Option<u16>)>, RequestError> {
    items(obj, tag)
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let class = text(item, tags::REFERENCED_SOP_CLASS_UID);
            let instance = text(item, tags::REFERENCED_SOP_INSTANCE_UID);
            let sop = checked_ref(class, instance, sequence, index)?;
            Ok((sop, failure_reason(item, sequence, index)?))
        })
        .collect()
}

pub(super) fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or_default()
}

pub(super) fn failure_reason(
    item: &InMemDicomObject,
    sequence: &'static str,
    index: usize,
) -> Result<Option<u16>, RequestError> {
    item.get(tags::FAILURE_REASON)
        .map(|e| e.to_int::<u16>())
        .transpose()
        .map_err(|_| RequestError::BadFailureReason { sequence, index })
}

pub(super) fn without_reasons(refs: Vec<(SopRef, Option<u16>)>) -> Vec<SopRef> {
    refs.into_iter().map(|(r, _)| r).collect()
}

/// A failed item without a readable Failure Reason is a processing failure.
pub(super) fn with_reasons(refs: Vec<(SopRef, Option<u16>)>) -> Vec<FailedRef> {
    refs.into_iter()
        .map(|(sop, reason)| FailedRef {
            sop,
            reason: reason.unwrap_or(reason::PROCESSING_FAILURE),
        })
        .collect()
}

/// Both UIDs present and valid (shared with the JSON reader).
pub(crate) fn checked_ref(
    class: Option<String>,
    instance: Option<String>,
    sequence: &'static str,
    index: usize,
) -> Result<SopRef, RequestError> {
    let (Some(class), Some(instance)) = (
        class.filter(|s| !s.is_empty()),
        instance.filter(|s| !s.is_empty()),
    ) else {
        return Err(RequestError::ItemWithoutUids { sequence, index });
    };
    if !uid::is_valid(&class) || !uid::is_valid(&instance) {
        return Err(RequestError::BadUid { sequence, index });
    }
    Ok(SopRef::new(&class, &instance))
}

/// A UID-like value without its padding (trailing NUL or space).
pub(super) fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.get(tag)?.to_str().ok()?;
    Some(uid::trim(&v).to_owned())
}

fn ref_item(r: &SopRef) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        ui(tags::REFERENCED_SOP_CLASS_UID, &r.class_uid),
        ui(tags::REFERENCED_SOP_INSTANCE_UID, &r.instance_uid),
    ])
}

pub(super) fn with_reason(mut item: InMemDicomObject, reason: Option<u16>) -> InMemDicomObject {
    if let Some(reason) = reason {
        item.put(DataElement::new(
            tags::FAILURE_REASON,
            VR::US,
            PrimitiveValue::from(reason),
        ));
    }
    item
}

pub(super) fn ui(tag: Tag, uid: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(uid))
}

pub(super) fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

#[cfg(test)]
mod tests;
