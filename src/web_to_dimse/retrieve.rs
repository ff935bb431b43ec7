//! Getting instances from the PACS into the cache: C-GET (or C-MOVE to our
//! own AE), every instance streamed to a cache file and handed on the moment
//! it has landed, so a response can start before the retrieval ends.

use super::{PacsService, WebError};
use crate::cache::{is_uid, CachedInstance, InstanceUids, PendingFile, Variant};
use crate::config::RetrieveMode;
use crate::dimse::client::{Proposal, RetrieveOutcome, ScuAssociation};
use crate::dimse::listener::{Refusal, StoreOutcome, StoreSink, StoreTarget};
use crate::dimse::message::Command;
use crate::dimse::scan::DatasetScanner;
use crate::dimse::status::{self, StatusKind};
use crate::web::part10;
use async_trait::async_trait;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

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
            if let Some(u) = uid.filter(|u| !is_uid(u)) {
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

fn text(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
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
    members
        .iter()
        .map(|m| {
            [Variant::Stored, Variant::ExplicitLe]
                .into_iter()
                .filter_map(|v| svc.cache.get(&m.sop_instance, v))
                .find(|c| c.uids == *m && usable(c))
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

enum Event {
    Landed(CachedInstance),
    Done(Result<RetrieveOutcome, WebError>),
}

/// A running retrieval; dropping it cancels it (C-CANCEL).
pub struct Retrieval {
    rx: mpsc::UnboundedReceiver<Event>,
    outcome: Option<RetrieveOutcome>,
    _cancel: DropGuard,
}

impl Retrieval {
    /// The next instance to land; None once the PACS has finished.
    pub async fn next(&mut self) -> Option<Result<CachedInstance, WebError>> {
        match self.rx.recv().await? {
            Event::Landed(c) => Some(Ok(c)),
            Event::Done(Ok(outcome)) => {
                self.outcome = Some(outcome);
                None
            }
            Event::Done(Err(e)) => Some(Err(e)),
        }
    }

    /// Why nothing came (call once `next` gave None before any instance).
    pub fn nothing_landed(&self, svc: &PacsService, scope: &Scope) -> WebError {
        match &self.outcome {
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

    /// The PACS's final word, once `next` gave None.
    pub fn outcome(&self) -> Option<&RetrieveOutcome> {
        self.outcome.as_ref()
    }
}

/// Start retrieving `scope` into the cache as `variant`.
pub fn retrieve(svc: &PacsService, scope: Scope, variant: Variant) -> Retrieval {
    // Our listener accepts every syntax: a C-MOVE brings instances as stored.
    let variant = match svc.retrieve {
        RetrieveMode::CGet => variant,
        RetrieveMode::CMove => Variant::Stored,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let target = Arc::new(CacheTarget(Arc::new(TargetState {
        cache: svc.cache.clone(),
        pacs_ae: svc.scu.called_ae.clone(),
        scope: scope.clone(),
        variant,
        tx: tx.clone(),
        landed: Mutex::new(Vec::new()),
    })));
    let job = Job {
        name: svc.name.clone(),
        scu: svc.scu.clone(),
        mode: svc.retrieve,
        our_ae: svc.scu.calling_ae.clone(),
        moves: svc.moves.clone(),
        scope,
        variant,
        cancel: cancel.clone(),
    };
    tokio::spawn(async move {
        let result = job.run(target.clone()).await;
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
        let _ = tx.send(Event::Done(result));
    });
    Retrieval {
        rx,
        outcome: None,
        _cancel: cancel.drop_guard(),
    }
}

struct Job {
    name: String,
    scu: crate::dimse::client::ScuConfig,
    mode: RetrieveMode,
    our_ae: String,
    moves: Arc<crate::dimse::move_inbox::MoveInbox>,
    scope: Scope,
    variant: Variant,
    cancel: CancellationToken,
}

/// Syntaxes proposed, one context each, when the instances should come as
/// stored: the PACS picks the context that matches what it holds.
#[allow(deprecated)]
const AS_STORED: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEG_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::RLE_LOSSLESS,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_BIG_ENDIAN,
    uids::HTJ2K_LOSSLESS,
    uids::HTJ2K,
];

/// When the PACS names no SOP classes: the ones most studies hold.
const COMMON_CLASSES: &[&str] = &[
    uids::CT_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_IMAGE_STORAGE,
    uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::DIGITAL_MAMMOGRAPHY_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::ULTRASOUND_IMAGE_STORAGE,
    uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_BYTE_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_TRUE_COLOR_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::X_RAY_ANGIOGRAPHIC_IMAGE_STORAGE,
    uids::NUCLEAR_MEDICINE_IMAGE_STORAGE,
    uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
    uids::RT_IMAGE_STORAGE,
    uids::RT_DOSE_STORAGE,
    uids::RT_STRUCTURE_SET_STORAGE,
    uids::RT_PLAN_STORAGE,
    uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
    uids::BASIC_TEXT_SR_STORAGE,
    uids::ENHANCED_SR_STORAGE,
    uids::COMPREHENSIVE_SR_STORAGE,
    uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE,
    uids::ENCAPSULATED_PDF_STORAGE,
    uids::SEGMENTATION_STORAGE,
    uids::VL_PHOTOGRAPHIC_IMAGE_STORAGE,
];

/// Presentation context ids are odd numbers below 256: 128 contexts at most.
const MAX_CONTEXTS: usize = 128;

/// An identifier's match answers this many at most (SOP class discovery).
const MAX_DISCOVERY_MATCHES: usize = 100_000;

impl Job {
    fn err(&self, e: crate::dimse::DimseError) -> WebError {
        WebError::from_dimse(&self.name, e)
    }

    async fn run(&self, target: Arc<CacheTarget>) -> Result<RetrieveOutcome, WebError> {
        let started = std::time::Instant::now();
        let outcome = match self.mode {
            RetrieveMode::CGet => self.c_get(&*target).await?,
            RetrieveMode::CMove => self.c_move(target.clone()).await?,
        };
        info!(
            pacs = %self.name,
            status = format_args!("{:04X}", outcome.status),
            completed = outcome.counts.completed,
            failed = outcome.counts.failed,
            ms = started.elapsed().as_millis() as u64,
            "retrieve finished"
        );
        Ok(outcome)
    }

    async fn c_get(&self, target: &dyn StoreTarget) -> Result<RetrieveOutcome, WebError> {
        let classes = self.discover_classes().await?;
        let Some(classes) = classes else {
            return Ok(RetrieveOutcome {
                status: status::SUCCESS,
                counts: Default::default(),
                error_comment: None,
            });
        };
        let model = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET;
        let mut proposals = vec![Proposal {
            abstract_syntax: model.to_owned(),
            transfer_syntaxes: vec![
                uids::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
                uids::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            ],
        }];
        proposals.extend(storage_proposals(&classes, self.variant));
        let mut assoc = ScuAssociation::connect_with_roles(&self.scu, &proposals, &classes)
            .await
            .map_err(|e| self.err(e))?;
        let result = assoc
            .get(model, &self.scope.identifier(), target, &self.cancel)
            .await;
        finish(assoc, result.is_ok()).await;
        result.map_err(|e| self.err(e))
    }

    async fn c_move(&self, target: Arc<CacheTarget>) -> Result<RetrieveOutcome, WebError> {
        let ticket = self
            .moves
            .register(&self.scu.called_ae, target)
            .ok_or_else(|| WebError::Internal("too many C-MOVEs waiting".into()))?;
        let model = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE;
        let proposals = [Proposal {
            abstract_syntax: model.to_owned(),
            transfer_syntaxes: vec![
                uids::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
                uids::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            ],
        }];
        let mut assoc = ScuAssociation::connect(&self.scu, &proposals)
            .await
            .map_err(|e| self.err(e))?;
        let result = assoc
            .move_to(
                model,
                &self.scope.identifier(),
                &self.our_ae,
                ticket.message_id,
                &self.cancel,
            )
            .await;
        finish(assoc, result.is_ok()).await;
        let outcome = result.map_err(|e| self.err(e))?;
        if outcome.status == status::query_retrieve::MOVE_DESTINATION_UNKNOWN {
            return Err(WebError::PacsFailed {
                pacs: self.name.clone(),
                detail: format!(
                    "it does not know our AE title {} as a C-MOVE destination",
                    self.our_ae
                ),
            });
        }
        Ok(outcome)
    }

    /// The storage SOP classes to propose, learnt with C-FIND; None when
    /// the scope matches nothing.
    async fn discover_classes(&self) -> Result<Option<Vec<String>>, WebError> {
        let model = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
        let proposals = [Proposal {
            abstract_syntax: model.to_owned(),
            transfer_syntaxes: vec![
                uids::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
                uids::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            ],
        }];
        let mut assoc = ScuAssociation::connect(&self.scu, &proposals)
            .await
            .map_err(|e| self.err(e))?;
        let result = self.find_classes(&mut assoc, model).await;
        finish(assoc, result.is_ok()).await;
        let classes = result.map_err(|e| self.err(e))?;
        Ok(classes.map(|c| {
            if c.is_empty() {
                COMMON_CLASSES.iter().map(|s| s.to_string()).collect()
            } else {
                c.into_iter().collect()
            }
        }))
    }

    async fn find_classes(
        &self,
        assoc: &mut ScuAssociation,
        model: &str,
    ) -> Result<Option<BTreeSet<String>>, crate::dimse::DimseError> {
        // A study answers with SOP Classes in Study in one match; when the
        // PACS leaves it empty, ask instance by instance.
        if let Scope::Study(_) = self.scope {
            let mut q = self.scope.identifier();
            q.put(DataElement::new(
                tags::SOP_CLASSES_IN_STUDY,
                VR::UI,
                PrimitiveValue::Empty,
            ));
            let matches = assoc.find(model, &q, 1).await?;
            let Some(m) = matches.first() else {
                return Ok(None);
            };
            let classes = strings(m, tags::SOP_CLASSES_IN_STUDY);
            if !classes.is_empty() {
                return Ok(Some(classes));
            }
        }
        let mut q = self.scope.identifier();
        q.put(text(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"));
        q.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::Empty,
        ));
        if self.scope.instance().is_none() {
            q.put(DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::Empty,
            ));
        }
        let matches = assoc.find(model, &q, MAX_DISCOVERY_MATCHES).await?;
        if matches.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            matches
                .iter()
                .flat_map(|m| strings(m, tags::SOP_CLASS_UID))
                .collect(),
        ))
    }
}

fn strings(obj: &InMemDicomObject, tag: Tag) -> BTreeSet<String> {
    obj.get(tag)
        .and_then(|e| e.to_multi_str().ok())
        .map(|v| {
            v.iter()
                .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_owned())
                .filter(|s| is_uid(s))
                .collect()
        })
        .unwrap_or_default()
}

/// Release after a clean end; abort after a failure.
async fn finish(assoc: ScuAssociation, ok: bool) {
    let _ = if ok {
        assoc.release().await
    } else {
        assoc.abort().await
    };
}

/// One context per (class, syntax) for instances as stored, one Explicit
/// VR LE context per class when the PACS is to convert them.
fn storage_proposals(classes: &[String], variant: Variant) -> Vec<Proposal> {
    let syntaxes: &[&str] = match variant {
        Variant::Stored => AS_STORED,
        Variant::ExplicitLe => &[uids::EXPLICIT_VR_LITTLE_ENDIAN],
    };
    let room = MAX_CONTEXTS - 1; // the C-GET context
    let classes = &classes[..classes.len().min(room)];
    let per_class = (room / classes.len().max(1)).clamp(1, syntaxes.len());
    classes
        .iter()
        .flat_map(|c| {
            syntaxes[..per_class].iter().map(move |ts| Proposal {
                abstract_syntax: c.clone(),
                transfer_syntaxes: vec![(*ts).to_owned()],
            })
        })
        .collect()
}

/// Sub-operations of one retrieval land in the cache.
struct CacheTarget(Arc<TargetState>);

struct TargetState {
    cache: Arc<crate::cache::Cache>,
    pacs_ae: String,
    scope: Scope,
    variant: Variant,
    tx: mpsc::UnboundedSender<Event>,
    /// What landed, to record the members of a study or series.
    landed: Mutex<Vec<InstanceUids>>,
}

#[async_trait]
impl StoreTarget for CacheTarget {
    async fn begin_store(
        &self,
        rq: &Command,
        transfer_syntax_uid: &str,
    ) -> Result<Box<dyn StoreSink>, Refusal> {
        let (Some(class), Some(instance)) = (&rq.sop_class_uid, &rq.sop_instance_uid) else {
            return Err(Refusal::new(
                status::storage::CANNOT_UNDERSTAND,
                "C-STORE-RQ lacks the Affected SOP Class or Instance UID",
            ));
        };
        let Some(scanner) = DatasetScanner::new(transfer_syntax_uid) else {
            return Err(Refusal::new(
                status::storage::CANNOT_UNDERSTAND,
                "unknown transfer syntax",
            ));
        };
        let header = part10::file_header(class, instance, transfer_syntax_uid, &self.0.pacs_ae)
            .map_err(|e| Refusal::new(status::storage::CANNOT_UNDERSTAND, e))?;
        let mut file = self.0.cache.begin();
        file.write(&header).await.map_err(|e| write_refusal(&e))?;
        Ok(Box::new(CacheSink {
            target: self.0.clone(),
            file,
            scanner,
            sop_class_uid: class.clone(),
            sop_instance_uid: instance.clone(),
            transfer_syntax: transfer_syntax_uid.to_owned(),
        }))
    }
}

fn write_refusal(e: &std::io::Error) -> Refusal {
    warn!(error = %e, "cannot write to the cache");
    Refusal::new(
        status::storage::OUT_OF_RESOURCES,
        "Pons cannot write to its cache",
    )
}

/// One instance streaming into a cache file.
struct CacheSink {
    target: Arc<TargetState>,
    file: PendingFile,
    scanner: DatasetScanner,
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax: String,
}

impl CacheSink {
    /// What arrived is whole, is what the command announced, and belongs
    /// to what we asked for.
    fn verify(
        scanner: DatasetScanner,
        sop_class: &str,
        sop_instance: &str,
        scope: &Scope,
    ) -> Result<InstanceUids, Refusal> {
        let mismatch =
            |what: &str| Refusal::new(status::storage::DATA_SET_MISMATCH, what.to_owned());
        let found = scanner
            .finish()
            .map_err(|e| Refusal::new(status::storage::CANNOT_UNDERSTAND, e))?;
        if found.sop_instance_uid.as_deref() != Some(sop_instance) {
            return Err(mismatch(
                "SOP Instance UID in data set differs from C-STORE-RQ",
            ));
        }
        if found.sop_class_uid.as_deref() != Some(sop_class) {
            return Err(mismatch(
                "SOP Class UID in data set differs from C-STORE-RQ",
            ));
        }
        let (Some(study), Some(series)) = (found.study_instance_uid, found.series_instance_uid)
        else {
            return Err(mismatch("data set lacks its Study or Series Instance UID"));
        };
        let uids = InstanceUids {
            study,
            series,
            sop_instance: sop_instance.to_owned(),
        };
        if !scope.contains(&uids) {
            return Err(mismatch("instance is not part of what was retrieved"));
        }
        Ok(uids)
    }
}

#[async_trait]
impl StoreSink for CacheSink {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        self.scanner.feed(chunk);
        self.file.write(chunk).await.map_err(|e| write_refusal(&e))
    }

    async fn finish(self: Box<Self>) -> StoreOutcome {
        let CacheSink {
            target,
            file,
            scanner,
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax,
        } = *self;
        let uids = match Self::verify(scanner, &sop_class_uid, &sop_instance_uid, &target.scope) {
            Ok(u) => u,
            Err(r) => {
                debug!(comment = %r.comment, "retrieved instance refused");
                return r.into();
            }
        };
        let committed = target
            .cache
            .commit(
                file,
                uids.clone(),
                sop_class_uid,
                transfer_syntax,
                target.variant,
            )
            .await;
        match committed {
            Ok(handle) => {
                if let Ok(mut l) = target.landed.lock() {
                    l.push(uids);
                }
                let _ = target.tx.send(Event::Landed(handle));
                StoreOutcome {
                    status: status::SUCCESS,
                    comment: None,
                }
            }
            Err(e) => write_refusal(&e).into(),
        }
    }

    async fn abort(self: Box<Self>) {
        // Dropping the pending file deletes it.
    }
}
