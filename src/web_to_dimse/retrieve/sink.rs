//! Where the instances of one retrieval land: each C-STORE sub-operation
//! streams into a cache file, checked as it passes, and is handed on the
//! moment it is committed.

use super::{Event, Scope};
use crate::cache::{InstanceUids, Variant};
use crate::dicom::part10;
use crate::dicom::scan::DatasetScanner;
use crate::dicom::status;
use crate::dimse::handler::{store_uids, Refusal, StoreOutcome, StoreSink, StoreTarget};
use crate::dimse::message::Command;
use crate::write_behind::WriteBehind;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Sub-operations of one retrieval land in the cache.
pub(super) struct CacheTarget(pub(super) Arc<TargetState>);

pub(super) struct TargetState {
    pub(super) cache: Arc<crate::cache::Cache>,
    pub(super) pacs_ae: String,
    pub(super) scope: Scope,
    pub(super) variant: Variant,
    pub(super) flight: Arc<super::flight::Flight>,
    /// What landed, to record the members of a study or series.
    pub(super) landed: Mutex<Vec<InstanceUids>>,
    /// Commits run beside the association: the PACS sends the next instance
    /// while the last one is written. At most COMMITS_IN_FLIGHT at once.
    pub(super) commits: TaskTracker,
    pub(super) commit_slots: Arc<Semaphore>,
    pub(super) commit_failed: AtomicBool,
}

/// Instances received but not yet in the cache, at most (each in memory
/// when it is small).
pub(super) const COMMITS_IN_FLIGHT: usize = 8;

#[async_trait]
impl StoreTarget for CacheTarget {
    async fn begin_store(
        &self,
        rq: &Command,
        transfer_syntax_uid: &str,
    ) -> Result<Box<dyn StoreSink>, Refusal> {
        let (class, instance) = store_uids(rq)?;
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
            sop_class_uid: class.to_owned(),
            sop_instance_uid: instance.to_owned(),
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
    file: WriteBehind,
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
        // The PACS may send the next instance now; the commit follows on
        // its own (a failed one fails the retrieval: see `retrieve`).
        let Ok(slot) = target.commit_slots.clone().acquire_owned().await else {
            return write_refusal(&std::io::Error::other("cache closed")).into();
        };
        let t = target.clone();
        target.commits.spawn(async move {
            let _slot = slot;
            let committed = t
                .cache
                .commit(
                    file,
                    uids.clone(),
                    sop_class_uid,
                    transfer_syntax,
                    t.variant,
                )
                .await;
            match committed {
                Ok(handle) => {
                    if let Ok(mut l) = t.landed.lock() {
                        l.push(uids);
                    }
                    t.flight.push(Event::Landed(handle));
                }
                Err(e) => {
                    warn!(error = %e, "cannot write a retrieved instance to the cache");
                    t.commit_failed.store(true, Ordering::Relaxed);
                }
            }
        });
        StoreOutcome {
            status: status::SUCCESS,
            comment: None,
        }
    }

    async fn abort(self: Box<Self>) {
        // Dropping the pending file deletes it.
    }
}
