//! Getting instances from the PACS into the cache: C-GET (or C-MOVE to our
//! own AE), every instance streamed to a cache file and handed on the moment
//! it has landed, so a response can start before the retrieval ends.

mod flight;
mod pacs;
mod sink;

pub use flight::{Flights, Retrieval};

use super::{PacsService, WebError};
use crate::cache::{CachedInstance, InstanceUids, Variant};
use crate::config::RetrieveMode;
use crate::dicom::status::{self, StatusKind};
use crate::dicom::uid;
use crate::dimse::client::RetrieveOutcome;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs::Job;
use sink::{CacheTarget, TargetState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// What to retrieve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Study(String),
    Series(String, String),
    Instance(String, String, String),
}

impl Scope {
    pub fn study(&self) -> &str {
        match self {
            Scope::Study(s) | Scope::Series(s, _) | Scope::Instance(s, _, _) => s,
        }
    }

    pub fn series(&self) -> Option<&str> {
        match self {
            Scope::Study(_) => None,
            Scope::Series(_, se) | Scope::Instance(_, se, _) => Some(se),
        }
    }

    fn instance(&self) -> Option<&str> {
        match self {
            Scope::Instance(_, _, i) => Some(i),
            _ => None,
        }
    }

    /// "study 1.2.3", "series 1.2.3.4 of study 1.2.3", … for messages.
    pub fn describe(&self) -> String {
        match self {
            Scope::Study(s) => format!("study {s}"),
            Scope::Series(s, se) => format!("series {se} of study {s}"),
            Scope::Instance(s, se, i) => format!("instance {i} of series {se} of study {s}"),
        }
    }

    /// Every UID of the URL must be a UID: 400 naming it otherwise.
    pub fn check(&self) -> Result<(), WebError> {
        let named = [
            ("study", Some(self.study())),
            ("series", self.series()),
            ("instance", self.instance()),
        ];
        for (what, uid) in named {
            if let Some(u) = uid.filter(|u| !uid::is_valid(u)) {
                return Err(WebError::BadRequest(format!(
                    "{what} UID {u:?} is not a valid UID (digits and dots, at most 64)"
                )));
            }
        }
        Ok(())
    }

    /// Does a landed instance belong here?
    fn contains(&self, u: &InstanceUids) -> bool {
        u.study == self.study()
            && self.series().is_none_or(|se| se == u.series)
            && self.instance().is_none_or(|i| i == u.sop_instance)
    }

    fn identifier(&self) -> InMemDicomObject {
        let level = match self {
            Scope::Study(_) => "STUDY",
            Scope::Series(..) => "SERIES",
            Scope::Instance(..) => "IMAGE",
        };
        let mut obj = InMemDicomObject::new_empty();
        obj.put(text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level));
        obj.put(text(tags::STUDY_INSTANCE_UID, VR::UI, self.study()));
        if let Some(se) = self.series() {
            obj.put(text(tags::SERIES_INSTANCE_UID, VR::UI, se));
        }
        if let Some(i) = self.instance() {
            obj.put(text(tags::SOP_INSTANCE_UID, VR::UI, i));
        }
        obj
    }
}

pub(super) fn text(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

/// The instance as a cached PS3.10 file (as stored when it has to be
/// retrieved; a copy the PACS converted to Explicit VR LE serves too when
/// that is what the cache holds), retrieved from the PACS when absent.
pub async fn instance_file(
    svc: &PacsService,
    study: &str,
    series: &str,
    instance: &str,
) -> Result<CachedInstance, WebError> {
    let scope = Scope::Instance(study.into(), series.into(), instance.into());
    let mut found = instances(svc, &scope, |_| true, Variant::Stored).await?;
    match found.next().await {
        Some(r) => r,
        None => Err(not_found(svc, &scope)),
    }
}

/// The instances of a scope: from the cache when it holds every one of
/// them in a `usable` form, otherwise retrieved as `variant` and handed on
/// as they land. Returns once the first is there (or it is clear that none
/// will come), so errors can still become HTTP statuses.
pub async fn instances(
    svc: &PacsService,
    scope: &Scope,
    usable: impl Fn(&CachedInstance) -> bool,
    variant: Variant,
) -> Result<Instances, WebError> {
    scope.check()?;
    if let Some(all) = cached(svc, scope, &usable) {
        debug!(instances = all.len(), "served from the cache");
        return Ok(Instances {
            cached: all.into_iter(),
            live: None,
        });
    }
    let mut variant = variant;
    loop {
        let mut r = retrieve(svc, scope.clone(), variant);
        return match r.next().await {
            Some(Ok(first)) => Ok(Instances {
                cached: vec![first].into_iter(),
                live: Some(r),
            }),
            Some(Err(e)) => Err(e),
            // The PACS could not convert them (no codec): as stored then;
            // the caller tells whether it can use that.
            None if variant == Variant::ExplicitLe
                && r.outcome().is_some_and(|o| o.counts.failed > 0) =>
            {
                variant = Variant::Stored;
                continue;
            }
            None => Err(r.nothing_landed(svc, scope)),
        };
    }
}

fn cached(
    svc: &PacsService,
    scope: &Scope,
    usable: &impl Fn(&CachedInstance) -> bool,
) -> Option<Vec<CachedInstance>> {
    let members = match scope {
        Scope::Instance(study, series, sop) => vec![InstanceUids {
            study: study.clone(),
            series: series.clone(),
            sop_instance: sop.clone(),
        }],
        _ => svc.cache.members(scope.study(), scope.series())?,
    };
    let metrics = crate::metrics::get();
    members
        .iter()
        .map(|m| {
            let found = [Variant::Stored, Variant::ExplicitLe]
                .into_iter()
                .filter_map(|v| svc.cache.get(&m.sop_instance, v))
                .find(|c| c.uids == *m && usable(c));
            match found {
                Some(_) => metrics.cache_hits.inc(),
                None => metrics.cache_misses.inc(),
            };
            found
        })
        .collect()
}

/// See [`instances`].
pub struct Instances {
    cached: std::vec::IntoIter<CachedInstance>,
    live: Option<Retrieval>,
}

impl Instances {
    pub async fn next(&mut self) -> Option<Result<CachedInstance, WebError>> {
        if let Some(c) = self.cached.next() {
            return Some(Ok(c));
        }
        let r = self.live.as_mut()?;
        let next = r.next().await;
        if next.is_none() {
            if let Some(o) = r.outcome().filter(|o| o.counts.failed > 0) {
                warn!(
                    failed = o.counts.failed,
                    status = format_args!("{:04X}", o.status),
                    "the PACS could not send some instances; the answer lacks them"
                );
            }
        }
        next
    }

    /// The first instance, when it is already at hand.
    pub fn first(&self) -> Option<&CachedInstance> {
        self.cached.as_slice().first()
    }
}

pub fn not_found(svc: &PacsService, scope: &Scope) -> WebError {
    WebError::NotFound(format!(
        "{} not found on PACS {}",
        scope.describe(),
        svc.name
    ))
}

#[derive(Clone)]
pub(super) enum Event {
    Landed(CachedInstance),
    Done(Result<RetrieveOutcome, WebError>),
}

impl Retrieval {
    /// Why nothing came (call once `next` gave None before any instance).
    pub fn nothing_landed(&self, svc: &PacsService, scope: &Scope) -> WebError {
        match self.outcome() {
            Some(o) if o.counts.failed > 0 || status::kind(o.status) == StatusKind::Failure => {
                WebError::PacsFailed {
                    pacs: svc.name.clone(),
                    detail: format!(
                        "no instance of {} arrived: status {:04X}H, {} failed{}",
                        scope.describe(),
                        o.status,
                        o.counts.failed,
                        o.error_comment
                            .as_deref()
                            .map(|c| format!(" ({c})"))
                            .unwrap_or_default()
                    ),
                }
            }
            _ => not_found(svc, scope),
        }
    }
}

/// Start retrieving `scope` into the cache as `variant`.
pub fn retrieve(svc: &PacsService, scope: Scope, variant: Variant) -> Retrieval {
    // Our listener accepts every syntax: a C-MOVE brings instances as stored.
    let variant = match svc.retrieve {
        RetrieveMode::CGet => variant,
        RetrieveMode::CMove => Variant::Stored,
    };
    let (reader, new) = svc.flights.join(&scope, variant);
    let Some(flight) = new else {
        debug!(scope = %scope.describe(), "joined a retrieval in progress");
        return reader;
    };
    let target = Arc::new(CacheTarget(Arc::new(TargetState {
        cache: svc.cache.clone(),
        pacs_ae: svc.scu().called_ae.clone(),
        scope: scope.clone(),
        variant,
        flight: flight.clone(),
        landed: Mutex::new(Vec::new()),
        commits: TaskTracker::new(),
        commit_slots: Arc::new(Semaphore::new(sink::COMMITS_IN_FLIGHT)),
        commit_failed: AtomicBool::new(false),
    })));
    let job = Job {
        name: svc.name.clone(),
        pool: svc.pool.clone(),
        mode: svc.retrieve,
        our_ae: svc.scu().calling_ae.clone(),
        moves: svc.moves.clone(),
        scope,
        variant,
        cancel: flight.cancel.clone(),
    };
    let flights = svc.flights.clone();
    tokio::spawn(async move {
        let mut result = job.run(target.clone()).await;
        // Every instance the PACS sent is in the cache (or failed) first.
        let state = &target.0;
        state.commits.close();
        state.commits.wait().await;
        if result.is_ok() && state.commit_failed.load(Ordering::Relaxed) {
            result = Err(WebError::Internal(
                "Pons could not write retrieved instances to its cache".into(),
            ));
        }
        if let Ok(o) = &result {
            let cancelled = job.cancel.is_cancelled() || o.status == status::CANCEL;
            if !cancelled && status::kind(o.status) == StatusKind::Success && o.counts.failed == 0 {
                let landed =
                    std::mem::take(&mut *target.0.landed.lock().unwrap_or_else(|p| p.into_inner()));
                if !landed.is_empty() && job.scope.instance().is_none() {
                    let study = job.scope.study().to_owned();
                    let series = job.scope.series().map(str::to_owned);
                    let cache = target.0.cache.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        cache.record_members(&study, series.as_deref(), landed)
                    })
                    .await;
                }
            }
        }
        flights.land(&flight);
        flight.push(Event::Done(result));
    });
    reader
}
