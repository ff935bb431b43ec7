//! The DIMSE side of one retrieval: C-FIND for the SOP classes to propose,
//! then C-GET (instances back on the same association) or C-MOVE to our own
//! AE (instances into our listener, found by the move inbox).

use super::sink::CacheTarget;
use super::{text, Scope};
use crate::cache::Variant;
use crate::config::RetrieveMode;
use crate::dicom::status;
use crate::dicom::{syntaxes, uid};
use crate::dimse::client::{Proposal, RetrieveOutcome, ScuAssociation};
use crate::dimse::handler::StoreTarget;
use crate::dimse::pool::{Pool, Shape};
use crate::web_to_dimse::WebError;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub(super) struct Job {
    pub(super) name: String,
    pub(super) pool: Arc<Pool>,
    pub(super) mode: RetrieveMode,
    pub(super) our_ae: String,
    pub(super) moves: Arc<crate::dimse::move_inbox::MoveInbox>,
    pub(super) scope: Scope,
    pub(super) variant: Variant,
    pub(super) cancel: CancellationToken,
}

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

    pub(super) async fn run(&self, target: Arc<CacheTarget>) -> Result<RetrieveOutcome, WebError> {
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
        let mut proposals = vec![Proposal::uncompressed(model)];
        proposals.extend(storage_proposals(&classes, self.variant));
        let shape = Shape {
            proposals,
            scp_classes: classes,
        };
        let mut assoc = self.pool.get(shape).await.map_err(|e| self.err(e))?;
        let result = assoc
            .get(model, &self.scope.identifier(), target, &self.cancel)
            .await;
        assoc.finish(result.is_ok()).await;
        result.map_err(|e| self.err(e))
    }

    async fn c_move(&self, target: Arc<CacheTarget>) -> Result<RetrieveOutcome, WebError> {
        let ticket = self
            .moves
            .register(&self.pool.scu().called_ae, target)
            .ok_or_else(|| WebError::Internal("too many C-MOVEs waiting".into()))?;
        let model = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE;
        let shape = Shape::new(vec![Proposal::uncompressed(model)]);
        let mut assoc = self.pool.get(shape).await.map_err(|e| self.err(e))?;
        let result = assoc
            .move_to(
                model,
                &self.scope.identifier(),
                &self.our_ae,
                ticket.message_id,
                &self.cancel,
            )
            .await;
        assoc.finish(result.is_ok()).await;
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
        let shape = Shape::new(vec![Proposal::uncompressed(model)]);
        let mut assoc = self.pool.get(shape).await.map_err(|e| self.err(e))?;
        let result = self.find_classes(&mut assoc, model).await;
        assoc.finish(result.is_ok()).await;
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
                .map(|s| uid::trim(s).to_owned())
                .filter(|s| uid::is_valid(s))
                .collect()
        })
        .unwrap_or_default()
}

/// One context per (class, syntax) for instances as stored, one Explicit
/// VR LE context per class when the PACS is to convert them.
fn storage_proposals(classes: &[String], variant: Variant) -> Vec<Proposal> {
    let syntaxes: &[&str] = match variant {
        Variant::Stored => syntaxes::AS_STORED,
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
