//! Storage commitment in DICOM JSON (PS3.18 ch. 13, Annex J): the body of
//! `POST /commitment-requests/{transactionUID}` and of its result. Bodies
//! are read into a data set by [`crate::translate::json::from_json`] and
//! written by [`crate::translate::json::to_json`]; this file knows only
//! their shape.
//!
//! Instances come either flat (Referenced SOP Sequence / Failed SOP
//! Sequence) or in the study/series hierarchy: Referenced Study Sequence
//! (committed) or Failed Study Sequence; in each study item its Study
//! Instance UID and Referenced Series Sequence; in each series item its
//! Series Instance UID and Referenced Instances by SOP Class Sequence; in
//! each of those the Referenced SOP Class UID and Referenced Instance
//! Sequence, whose items hold Referenced SOP Instance UID (and Failure
//! Reason when failed). Readers take both forms, in any mix. The
//! Transaction UID is in the URL, not in the body.

use super::{
    check_transaction_uid, checked_ref, failure_reason, flat, items, request_to_dataset,
    result_to_dataset, sequence, text, ui, with_reason, with_reasons, without_reasons,
    CommitRequest, CommitResult, RequestError, SopRef, FAILED_SOP, REFERENCED_SOP,
};
use crate::dicom::uid;
use crate::translate::json::{from_json, to_json, Bulk};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde_json::Value;

const STUDY_SEQ: &str = "Referenced Study Sequence";
const FAILED_STUDY_SEQ: &str = "Failed Study Sequence";
const INSTANCE_SEQ: &str = "Referenced Instance Sequence";

/// The request in a POST body; `transaction_uid` comes from the URL.
pub fn request_from_json(
    body: &Value,
    transaction_uid: &str,
) -> Result<CommitRequest, RequestError> {
    let transaction_uid = uid::trim(transaction_uid).to_owned();
    check_transaction_uid(&transaction_uid)?;
    let instances = without_reasons(committed(&read(body)?)?);
    if instances.is_empty() {
        return Err(RequestError::NoInstances);
    }
    Ok(CommitRequest {
        transaction_uid,
        instances,
    })
}

/// A POST body for a request: the flat Referenced SOP Sequence.
pub fn request_to_json(request: &CommitRequest) -> Value {
    write(request_to_dataset(request))
}

/// A result body (the answer to POST or GET). `hierarchical` when the
/// request came in the study/series form: the result then mirrors it, as
/// long as every instance has its study and series.
pub fn result_to_json(result: &CommitResult, hierarchical: bool) -> Value {
    let placed = |r: &SopRef| r.study_uid.is_some() && r.series_uid.is_some();
    let hierarchical = hierarchical
        && result.committed.iter().all(placed)
        && result.failed.iter().all(|f| placed(&f.sop));
    if !hierarchical {
        return write(result_to_dataset(result));
    }
    let mut obj = InMemDicomObject::new_empty();
    if !result.committed.is_empty() {
        let refs: Vec<_> = result.committed.iter().map(|r| (r, None)).collect();
        obj.put(studies(tags::REFERENCED_STUDY_SEQUENCE, &refs));
    }
    if !result.failed.is_empty() {
        let refs: Vec<_> = result
            .failed
            .iter()
            .map(|f| (&f.sop, Some(f.reason)))
            .collect();
        obj.put(studies(tags::FAILED_STUDY_SEQUENCE, &refs));
    }
    write(obj)
}

/// The result in a 200 answer; `transaction_uid` is the one we asked about.
/// A failed item without a readable Failure Reason is a processing failure.
pub fn result_from_json(body: &Value, transaction_uid: &str) -> Result<CommitResult, RequestError> {
    let obj = read(body)?;
    let mut failed = flat(&obj, tags::FAILED_SOP_SEQUENCE, FAILED_SOP)?;
    failed.extend(hierarchy(
        &obj,
        tags::FAILED_STUDY_SEQUENCE,
        FAILED_STUDY_SEQ,
    )?);
    Ok(CommitResult {
        transaction_uid: uid::trim(transaction_uid).to_owned(),
        committed: without_reasons(committed(&obj)?),
        failed: with_reasons(failed),
    })
}

/// The referenced instances, flat and in the hierarchy.
fn committed(obj: &InMemDicomObject) -> Result<Vec<(SopRef, Option<u16>)>, RequestError> {
    let mut refs = flat(obj, tags::REFERENCED_SOP_SEQUENCE, REFERENCED_SOP)?;
    refs.extend(hierarchy(obj, tags::REFERENCED_STUDY_SEQUENCE, STUDY_SEQ)?);
    Ok(refs)
}

fn read(body: &Value) -> Result<InMemDicomObject, RequestError> {
    from_json(body.clone()).map_err(RequestError::Malformed)
}

/// The Transaction UID is in the URL, never in a body.
fn write(mut obj: InMemDicomObject) -> Value {
    obj.remove_element(tags::TRANSACTION_UID);
    to_json(&obj, &Bulk::Inline)
}

/// Every instance under a study sequence, with study and series filled in.
fn hierarchy(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
    name: &'static str,
) -> Result<Vec<(SopRef, Option<u16>)>, RequestError> {
    let mut out = Vec::new();
    let mut n = 0;
    for (s, study) in items(obj, tag).iter().enumerate() {
        let study_uid = text(study, tags::STUDY_INSTANCE_UID)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                RequestError::Malformed(format!("{name} item {s} lacks its Study Instance UID"))
            })?;
        for (e, series) in items(study, tags::REFERENCED_SERIES_SEQUENCE)
            .iter()
            .enumerate()
        {
            let series_uid = text(series, tags::SERIES_INSTANCE_UID)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    RequestError::Malformed(format!(
                        "{name} item {s}, series {e} lacks its Series Instance UID"
                    ))
                })?;
            for class in items(series, tags::REFERENCED_INSTANCES_BY_SOP_CLASS_SEQUENCE) {
                let class_uid = text(class, tags::REFERENCED_SOP_CLASS_UID);
                for instance in items(class, tags::REFERENCED_INSTANCE_SEQUENCE) {
                    let mut r = checked_ref(
                        class_uid.clone(),
                        text(instance, tags::REFERENCED_SOP_INSTANCE_UID),
                        INSTANCE_SEQ,
                        n,
                    )?;
                    if !uid::is_valid(&study_uid) || !uid::is_valid(&series_uid) {
                        return Err(RequestError::BadUid {
                            sequence: INSTANCE_SEQ,
                            index: n,
                        });
                    }
                    r.study_uid = Some(study_uid.clone());
                    r.series_uid = Some(series_uid.clone());
                    out.push((r, failure_reason(instance, INSTANCE_SEQ, n)?));
                    n += 1;
                }
            }
        }
    }
    Ok(out)
}

/// Study > series > SOP class > instance, in order of first appearance.
fn studies(
    tag: dicom_core::Tag,
    refs: &[(&SopRef, Option<u16>)],
) -> dicom_core::DataElement<InMemDicomObject> {
    type Classes<'a> = Vec<(&'a str, Vec<(&'a str, Option<u16>)>)>;
    type Series<'a> = Vec<(&'a str, Classes<'a>)>;
    fn slot<K: PartialEq, V: Default>(v: &mut Vec<(K, V)>, k: K) -> &mut V {
        let i = match v.iter().position(|(x, _)| *x == k) {
            Some(i) => i,
            None => {
                v.push((k, V::default()));
                v.len() - 1
            }
        };
        &mut v[i].1
    }
    let mut tree: Vec<(&str, Series)> = Vec::new();
    for (r, reason) in refs {
        let study = r.study_uid.as_deref().unwrap_or_default();
        let series = r.series_uid.as_deref().unwrap_or_default();
        slot(slot(slot(&mut tree, study), series), r.class_uid.as_str())
            .push((r.instance_uid.as_str(), *reason));
    }
    let item = |elements: Vec<dicom_core::DataElement<InMemDicomObject>>| {
        InMemDicomObject::from_element_iter(elements)
    };
    let studies = tree
        .into_iter()
        .map(|(study, series)| {
            let series = series
                .into_iter()
                .map(|(series, classes)| {
                    let classes = classes
                        .into_iter()
                        .map(|(class, instances)| {
                            let instances = instances
                                .into_iter()
                                .map(|(uid, reason)| {
                                    let i = item(vec![ui(tags::REFERENCED_SOP_INSTANCE_UID, uid)]);
                                    with_reason(i, reason)
                                })
                                .collect();
                            item(vec![
                                ui(tags::REFERENCED_SOP_CLASS_UID, class),
                                sequence(tags::REFERENCED_INSTANCE_SEQUENCE, instances),
                            ])
                        })
                        .collect();
                    item(vec![
                        ui(tags::SERIES_INSTANCE_UID, series),
                        sequence(tags::REFERENCED_INSTANCES_BY_SOP_CLASS_SEQUENCE, classes),
                    ])
                })
                .collect();
            item(vec![
                ui(tags::STUDY_INSTANCE_UID, study),
                sequence(tags::REFERENCED_SERIES_SEQUENCE, series),
            ])
        })
        .collect();
    sequence(tag, studies)
}
