//! Storage commitment, Push Model SCP (PS3.4 J.3): N-ACTION → a durable job
//! → the archive → N-EVENT-REPORT.
//!
//! Here the N-ACTION is checked and recorded (one job per Transaction UID,
//! refused when the UID was used before) and answered at once; the
//! [`worker`] then waits for the spool, asks the archive ([`archive`]) and
//! delivers the report: on the requester's association while it is open,
//! else on a new association to the requester's `[[ae]]` entry. The job
//! payload ([`CommitJob`]) holds every step's outcome, so a restart resumes
//! where it stopped.

mod archive;
mod worker;

pub use worker::{run_commit_worker, CommitArchive, CommitWorkerConfig};

use crate::dicom::status::{self, general};
use crate::dimse::handler::{AssociationInfo, Refusal};
use crate::dimse::message::Command;
use crate::dimse::request::{AssociationHandle, RequestContext};
use crate::jobs::{JobTable, KIND_COMMIT};
use crate::translate::commitment::{
    request_from_dataset, CommitRequest, CommitResult, ACTION_REQUEST_COMMITMENT,
};
use dicom_dictionary_std::uids;
use dicom_encoding::TransferSyntaxIndex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

/// How the archive is asked, once decided for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveMode {
    Dicomweb,
    Verify,
}

/// The payload of a KIND_COMMIT job: the request, who asked, and how far
/// the work has come.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitJob {
    pub request: CommitRequest,
    /// The requester: the report goes back to it.
    pub calling_ae: String,
    /// Unix milliseconds after which we stop trying.
    pub deadline_at: i64,
    /// Decided at the first contact with the archive (`auto` probes).
    #[serde(default)]
    pub archive: Option<ArchiveMode>,
    /// The request was POSTed to /commitment-requests: poll with GET.
    #[serde(default)]
    pub posted: bool,
    /// Upstream failures in a row, for the back-off.
    #[serde(default)]
    pub errors: u32,
    /// The archive's verdict, once known; then only the report is left.
    #[serde(default)]
    pub result: Option<CommitResult>,
    /// Delivery attempts that failed so far.
    #[serde(default)]
    pub deliveries: u32,
    /// The AE title the N-ACTION called: its routes say which archives the
    /// instances went to.
    #[serde(default)]
    pub called_ae: String,
    /// Each archive asked, with the instances it must hold and its own
    /// progress; decided at the first step.
    #[serde(default)]
    pub parts: Option<Vec<ArchivePart>>,
}

/// One archive's share of a commitment request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivePart {
    /// The `[[upstream]]` name.
    pub upstream: String,
    /// The request for just these instances, and the archive's progress.
    pub ask: CommitJob,
}

/// Where a report can go on the association of its N-ACTION.
#[derive(Clone)]
pub struct ReportRoute {
    pub handle: AssociationHandle,
    pub pc_id: u8,
    pub transfer_syntax: String,
    /// True once the N-ACTION-RSP has gone out: the report must follow it.
    answered: watch::Receiver<bool>,
}

impl ReportRoute {
    /// Wait (up to `limit`) until the N-ACTION-RSP is out; false if it
    /// never went out.
    pub async fn answered(&mut self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.answered.wait_for(|a| *a)).await,
            Ok(Ok(_))
        )
    }
}

/// The associations of N-ACTIONs whose report is still due, by Transaction
/// UID. In memory: after a restart every report goes on a new association.
#[derive(Default)]
pub struct OpenAssociations {
    routes: Mutex<HashMap<String, ReportRoute>>,
}

impl OpenAssociations {
    /// False when a live route for this Transaction UID exists already.
    fn add(&self, transaction_uid: &str, route: ReportRoute) -> bool {
        let Ok(mut routes) = self.routes.lock() else {
            return false;
        };
        routes.retain(|_, r| r.handle.is_open());
        if routes.contains_key(transaction_uid) {
            return false;
        }
        routes.insert(transaction_uid.to_owned(), route);
        true
    }

    /// The route, if its association is still open; it stays registered.
    pub fn get(&self, transaction_uid: &str) -> Option<ReportRoute> {
        let routes = self.routes.lock().ok()?;
        routes
            .get(transaction_uid)
            .filter(|r| r.handle.is_open())
            .cloned()
    }

    pub fn remove(&self, transaction_uid: &str) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(transaction_uid);
        }
    }
}

/// The N-ACTION side: check, record, answer.
pub struct Commit {
    pub jobs: Arc<dyn JobTable>,
    pub open: Arc<OpenAssociations>,
    /// Wakes the worker when a job is recorded.
    pub wake: Arc<Notify>,
    /// `[dimse] commitment_report_deadline_secs`.
    pub deadline: Duration,
}

impl Commit {
    pub async fn run(
        &self,
        assoc: &AssociationInfo,
        rq: Command,
        data_set: Vec<u8>,
        ctx: RequestContext,
    ) {
        let (answered_tx, answered) = watch::channel(false);
        let outcome = self.accept(assoc, &rq, &data_set, &ctx, answered).await;
        let rsp = match &outcome {
            Ok(_) => Command::n_action_rsp(&rq, status::SUCCESS),
            Err(r) => {
                info!(status = format_args!("{:04X}", r.status), comment = %r.comment, "N-ACTION refused");
                Command::failure_response(&rq, r.status, r.comment.clone())
            }
        };
        if ctx.respond(rsp, None).await.is_ok() {
            let _ = answered_tx.send(true);
        }
        if let Ok(uid) = outcome {
            info!(transaction_uid = %uid, "storage commitment request accepted");
        }
    }

    /// The Transaction UID of the recorded job, or why it was refused.
    async fn accept(
        &self,
        assoc: &AssociationInfo,
        rq: &Command,
        data_set: &[u8],
        ctx: &RequestContext,
        answered: watch::Receiver<bool>,
    ) -> Result<String, Refusal> {
        if rq.sop_class_uid.as_deref() != Some(uids::STORAGE_COMMITMENT_PUSH_MODEL) {
            return Err(Refusal::new(
                general::NO_SUCH_SOP_CLASS,
                "N-ACTION is served for Storage Commitment Push Model only",
            ));
        }
        if rq.sop_instance_uid.as_deref() != Some(uids::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE) {
            return Err(Refusal::new(
                general::INVALID_OBJECT_INSTANCE,
                "Requested SOP Instance must be 1.2.840.10008.1.20.1.1",
            ));
        }
        if rq.action_type_id != Some(ACTION_REQUEST_COMMITMENT) {
            return Err(Refusal::new(
                general::NO_SUCH_ACTION,
                "only Action Type 1 (request commitment) exists",
            ));
        }
        let request = decode(data_set, &ctx.transfer_syntax)?;
        let uid = request.transaction_uid.clone();
        let payload = CommitJob {
            request,
            calling_ae: assoc.calling_ae.clone(),
            deadline_at: crate::jobs::now_ms()
                .saturating_add(i64::try_from(self.deadline.as_millis()).unwrap_or(i64::MAX / 4)),
            archive: None,
            posted: false,
            errors: 0,
            result: None,
            deliveries: 0,
            called_ae: assoc.called_ae.clone(),
            parts: None,
        };
        let value = serde_json::to_value(&payload).map_err(|e| {
            warn!(error = %e, "cannot encode a commitment job");
            Refusal::new(
                general::RESOURCE_LIMITATION,
                "Pons cannot record the request",
            )
        })?;
        let duplicate = || {
            Refusal::new(
                general::INVALID_ARGUMENT_VALUE,
                "Transaction UID (0008,1195) already used",
            )
        };
        // The route first, so that the worker finds it as soon as it can
        // claim the job; it waits for `answered` before using it.
        let route = ReportRoute {
            handle: ctx.association.clone(),
            pc_id: ctx.pc_id,
            transfer_syntax: ctx.transfer_syntax.clone(),
            answered,
        };
        if !self.open.add(&uid, route) {
            return Err(duplicate());
        }
        match self.jobs.insert_unique(KIND_COMMIT, &uid, &value).await {
            Ok(Some(_)) => {
                self.wake.notify_one();
                Ok(uid)
            }
            Ok(None) => {
                self.open.remove(&uid);
                Err(duplicate())
            }
            Err(e) => {
                self.open.remove(&uid);
                warn!(error = %e, "cannot record a commitment job");
                Err(Refusal::new(
                    general::RESOURCE_LIMITATION,
                    "Pons cannot record the request; retry later",
                ))
            }
        }
    }
}

/// The request in an N-ACTION data set, or the refusal that says why not.
fn decode(data_set: &[u8], transfer_syntax: &str) -> Result<CommitRequest, Refusal> {
    if data_set.is_empty() {
        return Err(Refusal::new(
            general::INVALID_ARGUMENT_VALUE,
            "N-ACTION-RQ without a data set",
        ));
    }
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| Refusal::new(general::MISTYPED_ARGUMENT, "unsupported transfer syntax"))?;
    let obj = crate::dicom::lengths::read_dataset(data_set, ts)
        .map_err(|_| Refusal::new(general::MISTYPED_ARGUMENT, "N-ACTION data set unreadable"))?;
    request_from_dataset(&obj)
        .map_err(|e| Refusal::new(general::INVALID_ARGUMENT_VALUE, e.to_string()))
}

#[cfg(test)]
mod tests;
