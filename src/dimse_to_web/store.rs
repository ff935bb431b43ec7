//! C-STORE → STOW-RS. Every instance is streamed into a PS3.10 file in the
//! spool's incoming/ directory while its structure is checked on the fly;
//! then, depending on `[spool] mode`, it is either committed to the spool
//! (acknowledged once durable) or sent upstream at once (acknowledged with the
//! archive's verdict).

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
        let mut incoming = self.spool.create_incoming().await.map_err(|e| {
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
    file: Option<WriteBehind>,
    scanner: Option<DatasetScanner>,
    meta: InstanceMeta,
}

impl SpoolSink {
    /// Check what arrived against what the command announced.
    fn verify(&mut self) -> Result<(), Refusal> {
        let Some(scanner) = self.scanner.take() else {
            return Ok(()); // unknown transfer syntax: stored as received, unchecked
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
        Ok(())
    }

    async fn send_direct(&self, mut file: WriteBehind) -> StoreOutcome {
        if let Err(e) = file.flush().await {
            return write_refusal(&e).into();
        }
        let item = StowItem {
            path: file.path().to_owned(),
            sop_class_uid: self.meta.sop_class_uid.clone(),
            sop_instance_uid: self.meta.sop_instance_uid.clone(),
        };
        let result = self.store.upstream.stow(std::slice::from_ref(&item)).await;
        drop(file); // deletes it: the archive has it, or the modality will retry
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
        if let Err(r) = self.verify() {
            debug!(comment = %r.comment, "instance refused after transfer");
            drop(file);
            return r.into();
        }
        match self.store.mode {
            SpoolMode::Spool => match self.store.spool.commit(file, &self.meta).await {
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
            SpoolMode::Direct => self.send_direct(file).await,
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
