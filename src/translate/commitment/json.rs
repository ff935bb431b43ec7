//! Storage commitment in DICOM JSON (PS3.18 ch. 13, Annex J): the body of
//! `POST /commitment-requests/{transactionUID}` and of its result.
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
    check_transaction_uid, checked_ref, reason, CommitRequest, CommitResult, FailedRef,
    RequestError, SopRef, FAILED_SOP, REFERENCED_SOP,
};
use crate::dicom::uid;
use serde_json::{json, Map, Value};

const REFERENCED_SOP_SEQUENCE: &str = "00081199";
const FAILED_SOP_SEQUENCE: &str = "00081198";
const REFERENCED_SOP_CLASS_UID: &str = "00081150";
const REFERENCED_SOP_INSTANCE_UID: &str = "00081155";
const FAILURE_REASON: &str = "00081197";
const REFERENCED_STUDY_SEQUENCE: &str = "00081110";
const FAILED_STUDY_SEQUENCE: &str = "0008119B";
const REFERENCED_SERIES_SEQUENCE: &str = "00081115";
const REFERENCED_INSTANCES_BY_CLASS: &str = "00081112";
const REFERENCED_INSTANCE_SEQUENCE: &str = "0008114A";
const STUDY_INSTANCE_UID: &str = "0020000D";
const SERIES_INSTANCE_UID: &str = "0020000E";

const STUDY_SEQ: &str = "Referenced Study Sequence";
const FAILED_STUDY_SEQ: &str = "Failed Study Sequence";
const INSTANCE_SEQ: &str = "Referenced Instance Sequence";

type Object = Map<String, Value>;

/// The request in a POST body; `transaction_uid` comes from the URL.
pub fn request_from_json(
    body: &Value,
    transaction_uid: &str,
) -> Result<CommitRequest, RequestError> {
    let transaction_uid = uid::trim(transaction_uid).to_owned();
    check_transaction_uid(&transaction_uid)?;
    let obj = dataset(body)?;
    let mut instances = flat(obj, REFERENCED_SOP_SEQUENCE, REFERENCED_SOP)?
        .into_iter()
        .map(|(r, _)| r)
        .collect::<Vec<_>>();
    instances.extend(
        hierarchy(obj, REFERENCED_STUDY_SEQUENCE, STUDY_SEQ)?
            .into_iter()
            .map(|(r, _)| r),
    );
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
    let items: Vec<Value> = request
        .instances
        .iter()
        .map(|r| Value::Object(ref_item(r)))
        .collect();
    json!({ REFERENCED_SOP_SEQUENCE: sq(items) })
}

/// A result body (the answer to POST or GET). `hierarchical` when the
/// request came in the study/series form: the result then mirrors it, as
/// long as every instance has its study and series.
pub fn result_to_json(result: &CommitResult, hierarchical: bool) -> Value {
    let placed = |r: &SopRef| r.study_uid.is_some() && r.series_uid.is_some();
    let hierarchical = hierarchical
        && result.committed.iter().all(placed)
        && result.failed.iter().all(|f| placed(&f.sop));
    let mut body = Map::new();
    if hierarchical {
        if !result.committed.is_empty() {
            let refs: Vec<(&SopRef, Option<u16>)> =
                result.committed.iter().map(|r| (r, None)).collect();
            body.insert(REFERENCED_STUDY_SEQUENCE.into(), studies(&refs));
        }
        if !result.failed.is_empty() {
            let refs: Vec<(&SopRef, Option<u16>)> = result
                .failed
                .iter()
                .map(|f| (&f.sop, Some(f.reason)))
                .collect();
            body.insert(FAILED_STUDY_SEQUENCE.into(), studies(&refs));
        }
    } else {
        if !result.committed.is_empty() {
            let items = result
                .committed
                .iter()
                .map(|r| Value::Object(ref_item(r)))
                .collect();
            body.insert(REFERENCED_SOP_SEQUENCE.into(), sq(items));
        }
        if !result.failed.is_empty() {
            let items = result
                .failed
                .iter()
                .map(|f| {
                    let mut item = ref_item(&f.sop);
                    item.insert(FAILURE_REASON.into(), us(f.reason));
                    Value::Object(item)
                })
                .collect();
            body.insert(FAILED_SOP_SEQUENCE.into(), sq(items));
        }
    }
    Value::Object(body)
}

/// The result in a 200 answer; `transaction_uid` is the one we asked about.
/// A failed item without a readable Failure Reason is a processing failure.
pub fn result_from_json(body: &Value, transaction_uid: &str) -> Result<CommitResult, RequestError> {
    let obj = dataset(body)?;
    let mut committed: Vec<SopRef> = flat(obj, REFERENCED_SOP_SEQUENCE, REFERENCED_SOP)?
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    committed.extend(
        hierarchy(obj, REFERENCED_STUDY_SEQUENCE, STUDY_SEQ)?
            .into_iter()
            .map(|(r, _)| r),
    );
    let mut failed = Vec::new();
    for (sop, reason) in flat(obj, FAILED_SOP_SEQUENCE, FAILED_SOP)?
        .into_iter()
        .chain(hierarchy(obj, FAILED_STUDY_SEQUENCE, FAILED_STUDY_SEQ)?)
    {
        failed.push(FailedRef {
            sop,
            reason: reason.unwrap_or(reason::PROCESSING_FAILURE),
        });
    }
    Ok(CommitResult {
        transaction_uid: uid::trim(transaction_uid).to_owned(),
        committed,
        failed,
    })
}

/// The data set of a body; some servers wrap it in a one-element array.
fn dataset(body: &Value) -> Result<&Object, RequestError> {
    let v = match body {
        Value::Array(items) if items.len() == 1 => &items[0],
        v => v,
    };
    v.as_object()
        .ok_or_else(|| RequestError::Malformed("body is not a DICOM JSON object".into()))
}

/// The items of an SQ attribute; an absent attribute or "Value" is none.
fn items<'a>(obj: &'a Object, key: &str, name: &str) -> Result<Vec<&'a Object>, RequestError> {
    let Some(attr) = obj.get(key) else {
        return Ok(Vec::new());
    };
    let Some(value) = attr.get("Value") else {
        return Ok(Vec::new());
    };
    let malformed = || RequestError::Malformed(format!("{name} ({key}) is not a sequence"));
    value
        .as_array()
        .ok_or_else(malformed)?
        .iter()
        .map(|v| v.as_object().ok_or_else(malformed))
        .collect()
}

/// The first value of a string attribute, unpadded.
fn string(obj: &Object, key: &str) -> Option<String> {
    let v = obj.get(key)?.get("Value")?.get(0)?.as_str()?;
    Some(uid::trim(v).to_owned())
}

/// A US value: a number per PS3.18 F.2.3; a decimal string is tolerated.
fn number(obj: &Object, key: &str) -> Option<Result<u16, ()>> {
    let v = obj.get(key)?.get("Value")?.get(0)?;
    Some(match v {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or(()),
        Value::String(s) => s.trim().parse().map_err(|_| ()),
        _ => Err(()),
    })
}

fn failure_reason(
    item: &Object,
    sequence: &'static str,
    index: usize,
) -> Result<Option<u16>, RequestError> {
    number(item, FAILURE_REASON)
        .transpose()
        .map_err(|_| RequestError::BadFailureReason { sequence, index })
}

fn flat(
    obj: &Object,
    key: &str,
    name: &'static str,
) -> Result<Vec<(SopRef, Option<u16>)>, RequestError> {
    items(obj, key, name)?
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let r = checked_ref(
                string(item, REFERENCED_SOP_CLASS_UID),
                string(item, REFERENCED_SOP_INSTANCE_UID),
                name,
                i,
            )?;
            Ok((r, failure_reason(item, name, i)?))
        })
        .collect()
}

/// Every instance under a study sequence, with study and series filled in.
fn hierarchy(
    obj: &Object,
    key: &str,
    name: &'static str,
) -> Result<Vec<(SopRef, Option<u16>)>, RequestError> {
    let mut out = Vec::new();
    let mut n = 0;
    for (s, study) in items(obj, key, name)?.into_iter().enumerate() {
        let study_uid = string(study, STUDY_INSTANCE_UID)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                RequestError::Malformed(format!("{name} item {s} lacks its Study Instance UID"))
            })?;
        for (e, series) in items(
            study,
            REFERENCED_SERIES_SEQUENCE,
            "Referenced Series Sequence",
        )?
        .into_iter()
        .enumerate()
        {
            let series_uid = string(series, SERIES_INSTANCE_UID)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    RequestError::Malformed(format!(
                        "{name} item {s}, series {e} lacks its Series Instance UID"
                    ))
                })?;
            let classes = items(
                series,
                REFERENCED_INSTANCES_BY_CLASS,
                "Referenced Instances by SOP Class Sequence",
            )?;
            for class in classes {
                let class_uid = string(class, REFERENCED_SOP_CLASS_UID);
                for instance in items(class, REFERENCED_INSTANCE_SEQUENCE, INSTANCE_SEQ)? {
                    let mut r = checked_ref(
                        class_uid.clone(),
                        string(instance, REFERENCED_SOP_INSTANCE_UID),
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

fn sq(items: Vec<Value>) -> Value {
    json!({"vr": "SQ", "Value": items})
}

fn ui(uid: &str) -> Value {
    json!({"vr": "UI", "Value": [uid]})
}

fn us(n: u16) -> Value {
    json!({"vr": "US", "Value": [n]})
}

fn ref_item(r: &SopRef) -> Object {
    let mut item = Map::new();
    item.insert(REFERENCED_SOP_CLASS_UID.into(), ui(&r.class_uid));
    item.insert(REFERENCED_SOP_INSTANCE_UID.into(), ui(&r.instance_uid));
    item
}

/// Study > series > SOP class > instance, in order of first appearance.
fn studies(refs: &[(&SopRef, Option<u16>)]) -> Value {
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
                                    let mut item = Map::new();
                                    item.insert(REFERENCED_SOP_INSTANCE_UID.into(), ui(uid));
                                    if let Some(reason) = reason {
                                        item.insert(FAILURE_REASON.into(), us(reason));
                                    }
                                    Value::Object(item)
                                })
                                .collect();
                            json!({
                                REFERENCED_SOP_CLASS_UID: ui(class),
                                REFERENCED_INSTANCE_SEQUENCE: sq(instances),
                            })
                        })
                        .collect();
                    json!({
                        SERIES_INSTANCE_UID: ui(series),
                        REFERENCED_INSTANCES_BY_CLASS: sq(classes),
                    })
                })
                .collect();
            json!({
                STUDY_INSTANCE_UID: ui(study),
                REFERENCED_SERIES_SEQUENCE: sq(series),
            })
        })
        .collect();
    sq(studies)
}
