//! Modality Worklist C-FIND identifier → a search of the origin's worklist
//! (`modality-scheduled-procedure-steps`, or UPS-RS `workitems` through
//! [`super::ups`]), and each answer back into a C-FIND response with exactly
//! the requested keys. The origin's matching is not trusted: every matching
//! key is checked again here (PS3.4 K.2.2.1), inside Scheduled Procedure
//! Step Sequence and inside the items of other sequence keys (one level of
//! sequence matching, C.2.2.2.6; deeper sequences are returned whole).

use super::json::tag_key;
use super::matching::matches;
use super::query::{declare_utf8, is_control_key, origin_safe, QueryError};
use super::ups::{self, Place};
use dicom_core::header::{HasLength, Header};
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

const SPS: Tag = tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE;

/// One key of the identifier: at the top or in the Scheduled Procedure Step.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    in_sps: bool,
    tag: Tag,
    vr: VR,
    /// The matching value; empty for a return key.
    value: String,
    /// A sequence key's item: the keys each returned item holds, matched
    /// item by item. Empty: the whole sequence is returned.
    item: Vec<Key>,
}

impl Key {
    fn place(&self) -> Place {
        if self.in_sps {
            Place::In(SPS, self.tag)
        } else {
            Place::Top(self.tag)
        }
    }

    fn matching(&self) -> bool {
        match self.vr {
            VR::SQ => self.item.iter().any(Key::matching),
            _ => !self.value.is_empty(),
        }
    }

    /// One key of the identifier; a sequence's first item is read one level
    /// deep (`nested`: below that, sequences are return keys only).
    fn parse(
        in_sps: bool,
        element: &dicom_object::mem::InMemElement,
        nested: bool,
    ) -> Result<Key, QueryError> {
        let (tag, vr) = (element.tag(), element.vr());
        let mut item = Vec::new();
        let value = match (vr, element.value()) {
            (VR::SQ, Value::Sequence(s)) if !nested => {
                for inner in s.items().first().into_iter().flat_map(|i| i.iter()) {
                    item.push(Key::parse(in_sps, inner, true)?);
                }
                String::new()
            }
            (VR::SQ, _) => String::new(),
            (VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN, _) => {
                if !element.is_empty() {
                    return Err(QueryError::Key(
                        tag.group(),
                        tag.element(),
                        "binary values cannot be matched",
                    ));
                }
                String::new()
            }
            _ => element
                .to_str()
                .map(|v| v.trim().trim_end_matches('\0').to_owned())
                .unwrap_or_default(),
        };
        Ok(Key {
            in_sps,
            tag,
            vr,
            value,
            item,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorklistQuery {
    keys: Vec<Key>,
    /// Scheduled Procedure Step Sequence was asked for (with or without an item).
    wants_sps: bool,
}

impl WorklistQuery {
    pub fn from_identifier(identifier: &InMemDicomObject) -> Result<WorklistQuery, QueryError> {
        let mut keys = Vec::new();
        let mut wants_sps = false;
        for element in identifier.iter() {
            let tag = element.tag();
            if is_control_key(tag) {
                continue;
            }
            if tag == SPS {
                wants_sps = true;
                if let Value::Sequence(s) = element.value() {
                    for inner in s.items().first().into_iter().flat_map(|i| i.iter()) {
                        keys.push(Key::parse(true, inner, false)?);
                    }
                }
                continue;
            }
            keys.push(Key::parse(false, element, false)?);
        }
        Ok(WorklistQuery { keys, wants_sps })
    }

    /// The search parameters for `modality-scheduled-procedure-steps`.
    pub fn mwl_params(&self) -> Vec<(String, String)> {
        let mut params = Vec::new();
        for key in self.keys.iter().filter(|k| k.matching()) {
            if let Some(value) = origin_value(key) {
                params.push((ups::path(key.place()), value));
            }
        }
        for key in self.keys.iter().filter(|k| !k.in_sps) {
            params.push(("includefield".into(), tag_key(key.tag)));
        }
        if self.wants_sps {
            params.push(("includefield".into(), tag_key(SPS)));
        }
        params
    }

    /// The search parameters for UPS-RS `workitems`: the same keys at their
    /// workitem places, scheduled steps only.
    pub fn ups_params(&self) -> Vec<(String, String)> {
        let mut params = vec![("ProcedureStepState".to_owned(), "SCHEDULED".to_owned())];
        let mut include = Vec::new();
        for key in &self.keys {
            let Some(place) = ups::ups_place(key.place()).or(match key.place() {
                Place::Top(t) => Some(Place::Top(t)),
                Place::In(..) => None,
            }) else {
                continue;
            };
            let top = match place {
                Place::Top(t) | Place::In(t, _) => t,
            };
            if !include.contains(&top) {
                include.push(top);
            }
            if key.matching() {
                if let Some(value) = origin_value(key) {
                    params.push((ups::path(place), value));
                }
            }
        }
        let date = self.sps_value(tags::SCHEDULED_PROCEDURE_STEP_START_DATE);
        let time = self.sps_value(tags::SCHEDULED_PROCEDURE_STEP_START_TIME);
        if let Some(range) = start_datetime(date, time) {
            params.push(("ScheduledProcedureStepStartDateTime".into(), range));
        }
        include.push(tags::SCHEDULED_PROCEDURE_STEP_START_DATE_TIME);
        include.push(tags::SCHEDULED_PROCEDURE_STEP_PRIORITY);
        params.extend(
            include
                .into_iter()
                .map(|t| ("includefield".into(), tag_key(t))),
        );
        params
    }

    fn sps_value(&self, tag: Tag) -> &str {
        self.keys
            .iter()
            .find(|k| k.in_sps && k.tag == tag)
            .map(|k| k.value.as_str())
            .unwrap_or("")
    }

    /// The C-FIND responses for one worklist entry: none if it does not
    /// match, else one per matching Scheduled Procedure Step.
    pub fn responses(&self, entry: &InMemDicomObject) -> Vec<InMemDicomObject> {
        let top_ok = self
            .keys
            .iter()
            .filter(|k| !k.in_sps && k.matching())
            .all(|k| key_matches(k, entry));
        if !top_ok {
            return vec![];
        }
        let steps: Vec<&InMemDicomObject> = match entry.get(SPS).map(|e| e.value()) {
            Some(Value::Sequence(s)) => s.items().iter().collect(),
            _ => vec![],
        };
        let sps_keys: Vec<&Key> = self.keys.iter().filter(|k| k.in_sps).collect();
        let matching: Vec<&InMemDicomObject> = steps
            .into_iter()
            .filter(|step| {
                sps_keys
                    .iter()
                    .filter(|k| k.matching())
                    .all(|k| key_matches(k, step))
            })
            .collect();
        let asks_in_sps = sps_keys.iter().any(|k| k.matching());
        if matching.is_empty() && asks_in_sps {
            return vec![];
        }
        let top = self.response_top(entry);
        if !self.wants_sps {
            return vec![declare_utf8(top)];
        }
        if matching.is_empty() {
            let mut out = top;
            out.put(empty_sequence(SPS));
            return vec![declare_utf8(out)];
        }
        matching
            .into_iter()
            .map(|step| {
                let mut out = top.clone();
                let item = if sps_keys.is_empty() {
                    step.clone() // an empty item (or none): the whole step
                } else {
                    pick(step, sps_keys.iter().copied())
                };
                out.put(DataElement::new(
                    SPS,
                    VR::SQ,
                    DataSetSequence::from(vec![item]),
                ));
                declare_utf8(out)
            })
            .collect()
    }

    fn response_top(&self, entry: &InMemDicomObject) -> InMemDicomObject {
        pick(entry, self.keys.iter().filter(|k| !k.in_sps))
    }
}

/// Exactly these keys from `from`, empty where it has none. A sequence key
/// with item keys returns its matching items, each with exactly those keys.
fn pick<'a>(from: &InMemDicomObject, keys: impl Iterator<Item = &'a Key>) -> InMemDicomObject {
    let mut out = InMemDicomObject::new_empty();
    for key in keys {
        out.put(match from.get(key.tag) {
            Some(e) if key.vr == VR::SQ && !key.item.is_empty() => {
                let items = sequence_items(e)
                    .iter()
                    .filter(|i| item_matches(&key.item, i))
                    .map(|i| pick(i, key.item.iter()))
                    .collect::<Vec<_>>();
                DataElement::new(key.tag, VR::SQ, DataSetSequence::from(items))
            }
            Some(e) => e.clone(),
            None if key.vr == VR::SQ => empty_sequence(key.tag),
            None => DataElement::new(key.tag, key.vr, PrimitiveValue::Empty),
        });
    }
    out
}

fn sequence_items(element: &dicom_object::mem::InMemElement) -> &[InMemDicomObject] {
    match element.value() {
        Value::Sequence(s) => s.items(),
        _ => &[],
    }
}

/// Every matching key of a sequence key's item matches this item.
fn item_matches(keys: &[Key], item: &InMemDicomObject) -> bool {
    keys.iter()
        .filter(|k| k.matching())
        .all(|k| key_matches(k, item))
}

fn empty_sequence(tag: Tag) -> dicom_object::mem::InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::<InMemDicomObject>::empty())
}

fn key_matches(key: &Key, obj: &InMemDicomObject) -> bool {
    if key.vr == VR::SQ {
        // C.2.2.2.6: a match when one of the items matches every item key.
        return obj
            .get(key.tag)
            .is_some_and(|e| sequence_items(e).iter().any(|i| item_matches(&key.item, i)));
    }
    let value = obj
        .get(key.tag)
        .and_then(|e| e.to_str().ok())
        .map(|v| v.into_owned())
        .unwrap_or_default();
    matches(key.vr, &key.value, &value)
}

/// The value to send the origin: UID lists comma-separated; a value the
/// origin may not decode is widened (checked here on the answers anyway).
fn origin_value(key: &Key) -> Option<String> {
    match key.vr {
        VR::SQ => None, // matched here only
        VR::UI => Some(
            key.value
                .split('\\')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(","),
        ),
        VR::DA | VR::TM | VR::DT => Some(key.value.clone()),
        _ => match origin_safe(&key.value) {
            Some(safe) if safe == "*" => None,
            Some(safe) => Some(safe),
            None => Some(key.value.clone()),
        },
    }
}

/// Scheduled Procedure Step Start DateTime range for a start date (and,
/// on a single day, time) key; the exact match is checked on the answers.
fn start_datetime(date: &str, time: &str) -> Option<String> {
    if date.is_empty() {
        return None;
    }
    let (from, to) = date.split_once('-').unwrap_or((date, date));
    let (t_from, t_to) = match time.split_once('-') {
        _ if time.is_empty() || from != to => ("", ""),
        Some((a, b)) => (a, b),
        None => (time, time),
    };
    let bound = |day: &str, t: &str, fill: char| {
        if day.is_empty() {
            return String::new();
        }
        let mut t: String = t.split('.').next().unwrap_or("").replace(':', "");
        while t.len() < 6 {
            t.push(fill);
        }
        if fill == '9' {
            // 23:59:59 at most: a time of 99 minutes is no time.
            t = clamp_time(&t);
        }
        format!("{day}{t}")
    };
    Some(format!(
        "{}-{}",
        bound(from, t_from, '0'),
        bound(to, t_to, '9')
    ))
}

fn clamp_time(t: &str) -> String {
    let part = |i: usize, max: u32| {
        t.get(i..i + 2)
            .and_then(|p| p.parse::<u32>().ok())
            .map_or(max, |v| v.min(max))
    };
    format!("{:02}{:02}{:02}", part(0, 23), part(2, 59), part(4, 59))
}

#[cfg(test)]
mod tests;
