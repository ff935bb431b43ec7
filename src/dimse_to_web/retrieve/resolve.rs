//! What a C-MOVE/C-GET identifier names, as WADO-RS resources, found with
//! QIDO-RS. Study and series retrievals are counted with one series-level
//! query (NumberOfSeriesRelatedInstances): an instance-level query costs the
//! origin a file read per instance (Orthanc: ~1 ms each), so instances are
//! listed only when they must be — IMAGE level, an origin that gives no
//! counts, a C-MOVE whose SOP classes are not known otherwise, or a
//! retrieval that delivered fewer than counted.

use super::Retrieve;
use crate::dicom::status::query_retrieve::{
    IDENTIFIER_MISMATCH, TOO_MANY_SUB_OPERATIONS, UNABLE_TO_PROCESS,
};
use crate::dimse_to_web::upstream_comment;
use crate::translate::query::Level;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::collections::BTreeSet;
use tracing::warn;

/// One instance, as QIDO described it.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub study: String,
    pub series: String,
    pub instance: String,
    pub class: String,
}

/// One WADO-RS resource to fetch, and what it holds.
#[derive(Debug)]
pub(super) struct Resource {
    /// `studies/{s}`, `studies/{s}/series/{se}` or an instance's path.
    pub path: String,
    /// Exactly these instances, when they were listed.
    pub listed: Option<Vec<Target>>,
    /// How many instances QIDO counted.
    pub count: usize,
}

pub(super) struct Plan {
    pub resources: Vec<Resource>,
    /// The SOP classes to propose to a move destination.
    pub classes: BTreeSet<String>,
    /// Every resource's classes are known (listed, or one per series).
    pub classes_known: bool,
}

type Failure = (u16, String);

const SERIES_COUNT: &str = "00201209";

impl Retrieve {
    /// Every resource the identifier names. `need_classes`: a C-MOVE,
    /// which must propose each SOP class before the first instance.
    pub(super) async fn plan(
        &self,
        identifier: &InMemDicomObject,
        level: Level,
        need_classes: bool,
    ) -> Result<Plan, Failure> {
        let list = |tag| uid_list(identifier, tag);
        let mut plan = Plan {
            resources: Vec::new(),
            classes: BTreeSet::new(),
            classes_known: true,
        };
        match level {
            Level::Patient => {
                let ids = list(tags::PATIENT_ID);
                if ids.is_empty() {
                    return Err((
                        IDENTIFIER_MISMATCH,
                        "PATIENT level needs a PatientID".into(),
                    ));
                }
                for id in ids {
                    let params = vec![("00100020".to_owned(), id)];
                    for study in self.qido_all("studies", &params).await? {
                        if let Some(s) = string(&study, tags::STUDY_INSTANCE_UID) {
                            self.plan_study(&s, need_classes, &mut plan).await?;
                        }
                    }
                }
            }
            Level::Study => {
                for s in list(tags::STUDY_INSTANCE_UID) {
                    self.plan_study(&s, need_classes, &mut plan).await?;
                }
            }
            Level::Series => {
                let studies = list(tags::STUDY_INSTANCE_UID);
                for se in list(tags::SERIES_INSTANCE_UID) {
                    match studies.as_slice() {
                        [s] => self.plan_series(s, &se, need_classes, &mut plan).await?,
                        _ => {
                            let params = vec![("0020000E".to_owned(), se)];
                            let found = self.instances("instances", params).await?;
                            group_by_series(found, &mut plan);
                        }
                    }
                }
            }
            Level::Image => {
                for i in list(tags::SOP_INSTANCE_UID) {
                    let params = vec![("00080018".to_owned(), i)];
                    for t in self.instances("instances", params).await? {
                        plan.classes.insert(t.class.clone());
                        plan.resources.push(Resource {
                            path: format!(
                                "studies/{}/series/{}/instances/{}",
                                t.study, t.series, t.instance
                            ),
                            listed: Some(vec![t]),
                            count: 1,
                        });
                    }
                }
            }
        }
        if plan.resources.is_empty() && !has_unique_key(identifier, level) {
            return Err((
                IDENTIFIER_MISMATCH,
                format!("{} level needs its unique key", level.code()),
            ));
        }
        if need_classes && !plan.classes_known {
            // The origin did not say which classes: list every instance.
            for r in &mut plan.resources {
                if r.listed.is_none() {
                    let found = self.instances(&instances_path(&r.path), vec![]).await?;
                    plan.classes.extend(found.iter().map(|t| t.class.clone()));
                    r.count = found.len();
                    r.listed = Some(found);
                }
            }
            plan.classes_known = true;
        }
        Ok(plan)
    }

    /// A study: counted per series, fetched whole.
    async fn plan_study(
        &self,
        study: &str,
        need_classes: bool,
        plan: &mut Plan,
    ) -> Result<(), Failure> {
        let path = format!("studies/{study}/series");
        let series = self.qido_all(&path, &series_fields(need_classes)).await?;
        let counts: Option<usize> = series.iter().map(series_count).sum();
        match counts {
            Some(count) => {
                note_classes(&series, need_classes, plan);
                if count > 0 {
                    plan.resources.push(Resource {
                        path: format!("studies/{study}"),
                        listed: None,
                        count,
                    });
                }
            }
            None => {
                let found = self
                    .instances(&format!("studies/{study}/instances"), vec![])
                    .await?;
                group_by_series(found, plan);
            }
        }
        Ok(())
    }

    async fn plan_series(
        &self,
        study: &str,
        series: &str,
        need_classes: bool,
        plan: &mut Plan,
    ) -> Result<(), Failure> {
        let mut params = series_fields(need_classes);
        params.push(("0020000E".into(), series.to_owned()));
        let found = self
            .qido_all(&format!("studies/{study}/series"), &params)
            .await?;
        let path = format!("studies/{study}/series/{series}");
        match found.iter().map(series_count).sum::<Option<usize>>() {
            Some(count) => {
                note_classes(&found, need_classes, plan);
                if count > 0 {
                    plan.resources.push(Resource {
                        path,
                        listed: None,
                        count,
                    });
                }
            }
            None => {
                let listed = self.instances(&instances_path(&path), vec![]).await?;
                group_by_series(listed, plan);
            }
        }
        Ok(())
    }

    /// The instances at a QIDO path, with their UIDs and class.
    pub(super) async fn instances(
        &self,
        path: &str,
        params: Vec<(String, String)>,
    ) -> Result<Vec<Target>, Failure> {
        self.instances_with(path, params, true).await
    }

    /// The same, without the SOP Class UID when `with_class` is false (an
    /// origin may read each file for it, and fail on one it lost).
    pub(super) async fn instances_with(
        &self,
        path: &str,
        mut params: Vec<(String, String)>,
        with_class: bool,
    ) -> Result<Vec<Target>, Failure> {
        let class = with_class.then_some("00080016");
        for tag in ["0020000D", "0020000E", "00080018"]
            .into_iter()
            .chain(class)
        {
            params.push(("includefield".into(), tag.into()));
        }
        let found = self.qido_all(path, &params).await?;
        Ok(found
            .iter()
            .filter_map(|r| {
                let t = Target {
                    study: string(r, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
                    series: string(r, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
                    instance: string(r, tags::SOP_INSTANCE_UID).unwrap_or_default(),
                    class: string(r, tags::SOP_CLASS_UID).unwrap_or_default(),
                };
                (!t.instance.is_empty() && !t.study.is_empty() && !t.series.is_empty()).then_some(t)
            })
            .collect())
    }

    /// Refused before the first sub-operation: the instance list is held
    /// in memory while the retrieve runs.
    pub(super) fn too_many(&self) -> Failure {
        (
            TOO_MANY_SUB_OPERATIONS,
            format!(
                "the request names more than {} instances (dimse.max_sub_operations); \
                 retrieve it in parts, e.g. by series",
                self.max_sub_operations
            ),
        )
    }

    async fn qido_all(
        &self,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Vec<InMemDicomObject>, Failure> {
        let mut all = Vec::new();
        loop {
            let page = self
                .upstream
                .qido_page(path, params, all.len(), self.page_size)
                .await
                .map_err(|e| {
                    warn!(error = %e, "QIDO-RS failed");
                    (UNABLE_TO_PROCESS, upstream_comment(&e))
                })?;
            let n = page.len();
            all.extend(page);
            if all.len() > self.max_sub_operations {
                return Err(self.too_many());
            }
            if n < self.page_size {
                return Ok(all);
            }
        }
    }
}

/// The QIDO path listing a WADO-RS resource's instances.
pub(super) fn instances_path(resource: &str) -> String {
    format!("{resource}/instances")
}

/// A series's SOP Class UID costs Orthanc a file read: asked for only when
/// a C-MOVE must propose the classes.
fn series_fields(with_class: bool) -> Vec<(String, String)> {
    let class = with_class.then_some("00080016");
    [SERIES_COUNT, "0020000E"]
        .into_iter()
        .chain(class)
        .map(|t| ("includefield".to_owned(), t.to_owned()))
        .collect()
}

fn series_count(series: &InMemDicomObject) -> Option<usize> {
    let tag = Tag(0x0020, 0x1209);
    series.get(tag)?.to_str().ok()?.trim().parse().ok()
}

/// A series's SOP Class UID, when the origin gives one (Orthanc does; it is
/// not a standard series attribute, so a part of another class is still
/// taken: the move association is reopened for it).
fn note_classes(series: &[InMemDicomObject], need_classes: bool, plan: &mut Plan) {
    if !need_classes {
        plan.classes_known = false;
        return;
    }
    for s in series {
        match string(s, tags::SOP_CLASS_UID) {
            Some(c) if !c.is_empty() => {
                plan.classes.insert(c);
            }
            _ => plan.classes_known = false,
        }
    }
}

/// Listed instances as one resource per series.
fn group_by_series(found: Vec<Target>, plan: &mut Plan) {
    for t in found {
        plan.classes.insert(t.class.clone());
        let path = format!("studies/{}/series/{}", t.study, t.series);
        match plan.resources.iter_mut().find(|r| r.path == path) {
            Some(r) => {
                r.count += 1;
                if let Some(l) = r.listed.as_mut() {
                    l.push(t);
                }
            }
            None => plan.resources.push(Resource {
                path,
                listed: Some(vec![t]),
                count: 1,
            }),
        }
    }
}

fn uid_list(identifier: &InMemDicomObject, tag: Tag) -> Vec<String> {
    identifier
        .get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|v| {
            v.split('\\')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn has_unique_key(identifier: &InMemDicomObject, level: Level) -> bool {
    let tag = match level {
        Level::Patient => tags::PATIENT_ID,
        Level::Study => tags::STUDY_INSTANCE_UID,
        Level::Series => tags::SERIES_INSTANCE_UID,
        Level::Image => tags::SOP_INSTANCE_UID,
    };
    !uid_list(identifier, tag).is_empty()
}

fn string(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)?.to_str().ok().map(|s| s.trim().to_owned())
}
