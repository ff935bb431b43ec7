//! C-STORE → STOW-RS. Every instance is streamed into a PS3.10 file in the
//! spool's incoming/ directory while its structure is checked on the fly;
//! then, depending on `[spool] mode`, it is either committed to the spool
//! (acknowledged once durable) or sent upstream at once (acknowledged with the
//! archive's verdict). With routes, an instance may go to several archives:
//! one file, a spool entry (hard link) per archive.

use super::route::{RoutedLog, Router, StoreFacts};
use crate::config::SpoolMode;
use crate::dicom::part10;
use crate::dicom::scan::DatasetScanner;
use crate::dicom::status;
use crate::dimse::handler::{store_uids, AssociationInfo, Refusal, StoreOutcome, StoreSink};
use crate::dimse::message::Command;
use crate::spool::{InstanceMeta, Spool, SpoolError};
use crate::translate::stow::dimse_status_for_failure;
use crate::web::client::{InstanceOutcome, StowItem, UpstreamClient};
use crate::write_behind::WriteBehind;
use async_trait::async_trait;
use std::sync::Arc;
use tracing::{debug, warn};

pub struct Store {
    pub mode: SpoolMode,
    /// One per upstream, in `[[upstream]]` order.
    pub targets: Vec<StoreTarget>,
    pub router: Arc<Router>,
    /// Where each instance went, for storage commitment (several upstreams only).
    pub routed: Option<Arc<RoutedLog>>,
}

pub struct StoreTarget {
    pub spool: Arc<Spool>,
    pub upstream: Arc<UpstreamClient>,
}

impl Store {
    pub async fn begin(
        self: &Arc<Self>,
        assoc: &AssociationInfo,
        rq: &Command,
        transfer_syntax_uid: &str,
    ) -> Result<Box<dyn StoreSink>, Refusal> {
        let (class, instance) = store_uids(rq)?;
        let header = file_header(class, instance, transfer_syntax_uid, &assoc.calling_ae)?;
        let primary = self.router.primary(&assoc.called_ae).unwrap_or(0);
        let Some(target) = self.targets.get(primary) else {
            return Err(Refusal::new(
                status::general::PROCESSING_FAILURE,
                "internal: no archive for this called AE title",
            ));
        };
        let mut incoming = target.spool.create_incoming().await.map_err(|e| {
            warn!(error = %e, "cannot create a spool file");
            Refusal::new(
                status::storage::OUT_OF_RESOURCES,
                "Pons cannot create a spool file",
            )
        })?;
        // On error the file is dropped, which deletes it.
        incoming
            .write(&header)
            .await
            .map_err(|e| write_refusal(&e))?;
        Ok(Box::new(SpoolSink {
            store: self.clone(),
            called_ae: assoc.called_ae.clone(),
            file: Some(incoming),
            scanner: DatasetScanner::new(transfer_syntax_uid),
            meta: InstanceMeta {
                sop_class_uid: class.to_owned(),
                sop_instance_uid: instance.to_owned(),
                transfer_syntax_uid: transfer_syntax_uid.to_owned(),
                calling_ae: assoc.calling_ae.clone(),
            },
        }))
    }
}

fn file_header(
    class: &str,
    instance: &str,
    ts: &str,
    calling_ae: &str,
) -> Result<Vec<u8>, Refusal> {
    part10::file_header(class, instance, ts, calling_ae)
        .map_err(|e| Refusal::new(status::storage::CANNOT_UNDERSTAND, format!("bad UIDs: {e}")))
}

fn write_refusal(e: &std::io::Error) -> Refusal {
    let comment = if e.raw_os_error() == Some(libc::ENOSPC) {
        "Pons is out of spool space (its spool disk is full)".to_owned()
    } else {
        warn!(error = %e, "spool write failed");
        "Pons cannot write its spool file".to_owned()
    };
    Refusal::new(status::storage::OUT_OF_RESOURCES, comment)
}

struct SpoolSink {
    store: Arc<Store>,
    called_ae: String,
    file: Option<WriteBehind>,
    scanner: Option<DatasetScanner>,
    meta: InstanceMeta,
}

impl SpoolSink {
    /// Check what arrived against what the command announced; the
    /// data set's Modality, for routing.
    fn verify(&mut self) -> Result<Option<String>, Refusal> {
        let Some(scanner) = self.scanner.take() else {
            return Ok(None); // unknown transfer syntax: stored as received, unchecked
        };
        let found = scanner
            .finish()
            .map_err(|e| Refusal::new(status::storage::CANNOT_UNDERSTAND, e))?;
        let Some(instance) = found.sop_instance_uid else {
            return Err(Refusal::new(
                status::storage::DATA_SET_MISMATCH,
                "data set has no SOP Instance UID",
            ));
        };
        if instance != self.meta.sop_instance_uid {
            return Err(Refusal::new(
                status::storage::DATA_SET_MISMATCH,
                "SOP Instance UID in data set differs from C-STORE-RQ",
            ));
        }
        if found.sop_class_uid.as_deref() != Some(self.meta.sop_class_uid.as_str()) {
            return Err(Refusal::new(
                status::storage::DATA_SET_MISMATCH,
                "SOP Class UID in data set differs from C-STORE-RQ",
            ));
        }
        Ok(found.modality)
    }

    /// To each archive in turn; the answer is the worst of theirs.
    async fn send_direct(&self, mut file: WriteBehind, targets: &[usize]) -> StoreOutcome {
        if let Err(e) = file.flush().await {
            return write_refusal(&e).into();
        }
        let item = StowItem {
            path: file.path().to_owned(),
            sop_class_uid: self.meta.sop_class_uid.clone(),
            sop_instance_uid: self.meta.sop_instance_uid.clone(),
        };
        let mut worst = success();
        for target in targets.iter().filter_map(|i| self.store.targets.get(*i)) {
            let outcome = stow_one(&target.upstream, &item).await;
            let rank = |o: &StoreOutcome| match status::kind(o.status) {
                status::StatusKind::Success => 0,
                status::StatusKind::Warning => 1,
                _ => 2,
            };
            if rank(&outcome) > rank(&worst) {
                worst = outcome;
            }
        }
        drop(file); // deletes it: the archives have it, or the modality will retry
        worst
    }
}

async fn stow_one(upstream: &UpstreamClient, item: &StowItem) -> StoreOutcome {
    {
        let result = upstream.stow(std::slice::from_ref(item)).await;
        match result {
            Ok(outcomes) => match outcomes.first() {
                Some(InstanceOutcome::Stored) => success(),
                Some(InstanceOutcome::StoredWithWarning(w)) => StoreOutcome {
                    status: status::as_warning(*w),
                    comment: Some(format!("archive warning {w:04X}H")),
                },
                Some(InstanceOutcome::Failed(reason)) => StoreOutcome {
                    status: dimse_status_for_failure(*reason),
                    comment: Some(format!(
                        "archive refused: {reason:04X}H {}",
                        status::meaning(*reason)
                    )),
                },
                Some(InstanceOutcome::NotAcknowledged) | None => Refusal::new(
                    status::storage::OUT_OF_RESOURCES,
                    "archive did not confirm the instance; retry",
                )
                .into(),
            },
            Err(e) => {
                warn!(error = %e, "direct STOW-RS failed");
                Refusal::new(
                    status::storage::OUT_OF_RESOURCES,
                    super::upstream_comment(&e),
                )
                .into()
            }
        }
    }
}

fn success() -> StoreOutcome {
    StoreOutcome {
        status: status::SUCCESS,
        comment: None,
    }
}

#[async_trait]
impl StoreSink for SpoolSink {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        if let Some(s) = self.scanner.as_mut() {
            s.feed(chunk);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(Refusal::new(
                status::general::PROCESSING_FAILURE,
                "internal: no spool file",
            ));
        };
        file.write(chunk).await.map_err(|e| write_refusal(&e))
    }

    async fn finish(mut self: Box<Self>) -> StoreOutcome {
        let Some(file) = self.file.take() else {
            return Refusal::new(
                status::general::PROCESSING_FAILURE,
                "internal: no spool file",
            )
            .into();
        };
        let modality = match self.verify() {
            Ok(m) => m,
            Err(r) => {
                debug!(comment = %r.comment, "instance refused after transfer");
                drop(file);
                return r.into();
            }
        };
        let facts = StoreFacts {
            calling_ae: &self.meta.calling_ae,
            sop_class_uid: &self.meta.sop_class_uid,
            modality: modality.as_deref(),
        };
        let targets = self.store.router.store_targets(&self.called_ae, &facts);
        if let Some(log) = &self.store.routed {
            log.record(&self.meta.sop_instance_uid, &targets);
        }
        let spools: Vec<&Spool> = targets
            .iter()
            .filter_map(|i| self.store.targets.get(*i))
            .map(|t| t.spool.as_ref())
            .collect();
        let Some((first, others)) = spools.split_first() else {
            return Refusal::new(
                status::general::PROCESSING_FAILURE,
                "internal: no archive for this called AE title",
            )
            .into();
        };
        match self.store.mode {
            SpoolMode::Spool => match first.commit_with(file, &self.meta, others).await {
                Ok(_) => success(),
                Err(SpoolError::Io { source, .. }) => write_refusal(&source).into(),
                Err(e) => {
                    warn!(error = %e, "spool commit failed");
                    Refusal::new(
                        status::storage::OUT_OF_RESOURCES,
                        "Pons cannot record the instance in its job table",
                    )
                    .into()
                }
            },
            SpoolMode::Direct => self.send_direct(file, &targets).await,
        }
    }

    async fn abort(self: Box<Self>) {
        // Dropping the spool file deletes it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_header_is_a_valid_ps3_10_preamble_and_meta() {
        let h = file_header(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3.4",
            "1.2.840.10008.1.2.1",
            "CT01",
        )
        .unwrap();
        assert_eq!(&h[128..132], b"DICM");
        let meta = dicom_object::meta::FileMetaTable::from_reader(&h[128..]).unwrap();
        assert_eq!(meta.media_storage_sop_instance_uid(), "1.2.3.4");
        assert_eq!(meta.transfer_syntax(), "1.2.840.10008.1.2.1");
        assert_eq!(meta.source_application_entity_title(), Some("CT01"));
    }
}
