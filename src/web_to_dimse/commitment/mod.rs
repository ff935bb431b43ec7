//! Storage commitment for DICOMweb clients (PS3.18 ch. 13 → PS3.4 J):
//! `POST {base}/commitment-requests/{uid}` becomes a durable job that asks
//! the PACS with N-ACTION ([`worker`]); the PACS's N-EVENT-REPORT, on that
//! association or on a new one to our listener ([`Commitments::accept_report`]),
//! is the result `GET` returns.

mod worker;

pub use worker::{run_worker, WorkerConfig};

use super::{PacsService, WebError};
use crate::dicom::status;
use crate::dicom::uid;
use crate::dimse::handler::{AssociationInfo, Refusal};
use crate::dimse::message::Command;
use crate::dimse::request::RequestContext;
use crate::jobs::{now_ms, JobError, JobTable, KIND_PACS_COMMIT, KIND_PACS_COMMIT_RESULT};
use crate::translate::commitment::json::{request_from_json, result_to_json};
use crate::translate::commitment::{
    result_from_dataset, CommitRequest, CommitResult, EVENT_ALL_COMMITTED, EVENT_FAILURES_PRESENT,
};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use dicom_dictionary_std::uids::STORAGE_COMMITMENT_PUSH_MODEL;
use dicom_encoding::TransferSyntaxIndex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::info;

/// How long a POST waits for the result before answering 202.
const POST_WAIT: Duration = Duration::from_secs(2);
/// What Retry-After tells a client that polls.
const RETRY_AFTER_SECS: u64 = 2;

/// What the routes, the worker and our listener share.
pub struct Commitments {
    pub jobs: Arc<dyn JobTable>,
    /// Rung when a job is added, so the worker claims it at once.
    pub wake: Notify,
    pub deadline: Duration,
    pub retention: Duration,
    /// PACS AE title → `[[pacs]]` names: who may report on a new association.
    pacs_by_ae: HashMap<String, Vec<String>>,
}

/// The payload of a [`KIND_PACS_COMMIT`] job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PacsCommitJob {
    pacs: String,
    request: CommitRequest,
    /// The request came in the study/series form: the result mirrors it.
    hierarchical: bool,
    /// The PACS answered our N-ACTION: now only its report is awaited.
    requested: bool,
    deadline_at: i64,
}

/// The payload of a [`KIND_PACS_COMMIT_RESULT`] job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settled {
    result: CommitResult,
    settled_at: i64,
    /// "same association", "new association" or why Pons settled it itself.
    how: String,
}

fn key(pacs: &str, transaction_uid: &str) -> String {
    format!("{pacs}/{transaction_uid}")
}

impl Commitments {
    /// `pacs`: (name, AE title) of every `[[pacs]]`.
    pub fn new(
        jobs: Arc<dyn JobTable>,
        deadline: Duration,
        retention: Duration,
        pacs: &[(String, String)],
    ) -> Commitments {
        let mut pacs_by_ae: HashMap<String, Vec<String>> = HashMap::new();
        for (name, ae) in pacs {
            pacs_by_ae
                .entry(ae.trim().to_owned())
                .or_default()
                .push(name.clone());
        }
        Commitments {
            jobs,
            wake: Notify::new(),
            deadline,
            retention,
            pacs_by_ae,
        }
    }

    /// Record the result of `key`, once: `false` when it already had one.
    async fn settle(&self, key: &str, result: CommitResult, how: &str) -> Result<bool, JobError> {
        info!(
            key,
            committed = result.committed.len(),
            failed = result.failed.len(),
            how,
            "commitment settled"
        );
        let settled = Settled {
            result,
            settled_at: now_ms(),
            how: how.to_owned(),
        };
        let payload = serde_json::to_value(&settled).map_err(|e| JobError::Query(e.to_string()))?;
        match self
            .jobs
            .insert_unique(KIND_PACS_COMMIT_RESULT, key, &payload)
            .await?
        {
            Some(id) => {
                // Only a record: nobody claims this kind.
                self.jobs.complete(id).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn settled(&self, key: &str) -> Result<Option<Settled>, JobError> {
        let Some(job) = self.jobs.find_by_key(KIND_PACS_COMMIT_RESULT, key).await? else {
            return Ok(None);
        };
        serde_json::from_value(job.payload)
            .map(Some)
            .map_err(|e| JobError::Query(format!("commitment result {key} unreadable: {e}")))
    }

    /// An N-EVENT-REPORT-RQ a PACS sent to our listener on a new association.
    pub async fn accept_report(
        &self,
        assoc: &AssociationInfo,
        rq: Command,
        data_set: Vec<u8>,
        ctx: RequestContext,
    ) {
        let rsp = match self
            .take_report(&assoc.calling_ae, &rq, &data_set, &ctx)
            .await
        {
            Ok(()) => Command::n_event_report_rsp(&rq, status::SUCCESS),
            Err(r) => Command::failure_response(&rq, r.status, r.comment),
        };
        let _ = ctx.respond(rsp, None).await;
    }

    async fn take_report(
        &self,
        calling_ae: &str,
        rq: &Command,
        data_set: &[u8],
        ctx: &RequestContext,
    ) -> Result<(), Refusal> {
        use status::general::{
            INVALID_ARGUMENT_VALUE, NO_SUCH_EVENT_TYPE, NO_SUCH_SOP_CLASS, PROCESSING_FAILURE,
        };
        if rq.sop_class_uid.as_deref() != Some(STORAGE_COMMITMENT_PUSH_MODEL) {
            return Err(Refusal::new(
                NO_SUCH_SOP_CLASS,
                "N-EVENT-REPORT is served for Storage Commitment Push Model only",
            ));
        }
        let Some(names) = self.pacs_by_ae.get(calling_ae.trim()) else {
            return Err(Refusal::new(
                INVALID_ARGUMENT_VALUE,
                format!("{calling_ae} is not a [[pacs]] we asked for storage commitment"),
            ));
        };
        if !matches!(
            rq.event_type_id,
            Some(EVENT_ALL_COMMITTED | EVENT_FAILURES_PRESENT)
        ) {
            return Err(Refusal::new(
                NO_SUCH_EVENT_TYPE,
                "Event Type ID must be 1 or 2 for Storage Commitment",
            ));
        }
        let answer = decode_report(data_set, &ctx.transfer_syntax)
            .map_err(|e| Refusal::new(INVALID_ARGUMENT_VALUE, e))?;
        let uid = answer.transaction_uid.clone();
        for name in names {
            let k = key(name, &uid);
            let job = self
                .jobs
                .find_by_key(KIND_PACS_COMMIT, &k)
                .await
                .map_err(|e| Refusal::new(PROCESSING_FAILURE, e.to_string()))?;
            let Some(job) = job else { continue };
            let p: PacsCommitJob = serde_json::from_value(job.payload)
                .map_err(|e| Refusal::new(PROCESSING_FAILURE, e.to_string()))?;
            let result = CommitResult::reconcile(&p.request, &answer);
            self.settle(&k, result, "new association")
                .await
                .map_err(|e| Refusal::new(PROCESSING_FAILURE, e.to_string()))?;
            return Ok(());
        }
        Err(Refusal::new(
            INVALID_ARGUMENT_VALUE,
            format!("no storage commitment request with Transaction UID {uid} is waiting"),
        ))
    }
}

/// The result an N-EVENT-REPORT-RQ data set carries.
fn decode_report(data_set: &[u8], transfer_syntax: &str) -> Result<CommitResult, String> {
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(uid::trim(transfer_syntax))
        .ok_or_else(|| format!("unsupported transfer syntax {transfer_syntax}"))?;
    let obj = crate::dicom::lengths::read_dataset(data_set, ts)
        .map_err(|e| format!("event information unreadable: {e}"))?;
    result_from_dataset(&obj).map_err(|e| e.to_string())
}

pub fn routes() -> Router<Arc<PacsService>> {
    Router::new().route(
        "/commitment-requests/{uid}",
        post(request_commitment).get(commitment_result),
    )
}

fn internal(e: JobError) -> WebError {
    WebError::Internal(e.to_string())
}

async fn request_commitment(
    State(svc): State<Arc<PacsService>>,
    Path(uid): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Response, WebError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/dicom+json" && media != "application/json" {
        return Err(WebError::UnsupportedMediaType(format!(
            "a commitment request is application/dicom+json, not {:?}",
            media
        )));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            WebError::PayloadTooLarge(format!(
                "the commitment request is larger than web.limits.json_max_kb ({} KiB); \
                 split it into several transactions",
                svc.limits.json_max_kb
            ))
        } else {
            WebError::BadRequest(format!(
                "the request body cannot be read: {}",
                e.body_text()
            ))
        }
    })?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| WebError::BadRequest(format!("the body is not JSON: {e}")))?;
    let request = request_from_json(&json, &uid)
        .map_err(|e| WebError::BadRequest(format!("commitment request {uid}: {e}")))?;
    let c = &svc.commitments;
    let job = PacsCommitJob {
        pacs: svc.name.clone(),
        hierarchical: request.instances.iter().any(|r| r.study_uid.is_some()),
        request,
        requested: false,
        deadline_at: now_ms().saturating_add(c.deadline.as_millis() as i64),
    };
    let k = key(&svc.name, &job.request.transaction_uid);
    let payload = serde_json::to_value(&job).map_err(|e| WebError::Internal(e.to_string()))?;
    if c.jobs
        .insert_unique(KIND_PACS_COMMIT, &k, &payload)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(WebError::Conflict(format!(
            "Transaction UID {} was already used for a commitment request to PACS {}",
            job.request.transaction_uid, svc.name
        )));
    }
    info!(pacs = %svc.name, instances = job.request.instances.len(), "commitment requested");
    c.wake.notify_one();
    let until = tokio::time::Instant::now() + POST_WAIT;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(s) = c.settled(&k).await.map_err(internal)? {
            return Ok(result_response(&s, job.hierarchical));
        }
    }
    let location = format!(
        "{}/commitment-requests/{uid}",
        svc.public_root(&headers, &uri)
    );
    Ok(working(Some(location)))
}

async fn commitment_result(
    State(svc): State<Arc<PacsService>>,
    Path(uid): Path<String>,
) -> Result<Response, WebError> {
    let c = &svc.commitments;
    let k = key(&svc.name, uid.trim());
    let Some(job) = c
        .jobs
        .find_by_key(KIND_PACS_COMMIT, &k)
        .await
        .map_err(internal)?
    else {
        return Err(WebError::NotFound(format!(
            "no commitment request {uid} for PACS {}",
            svc.name
        )));
    };
    let hierarchical = job
        .payload
        .get("hierarchical")
        .and_then(|h| h.as_bool())
        .unwrap_or(false);
    match c.settled(&k).await.map_err(internal)? {
        None => Ok(working(None)),
        Some(s) if now_ms() - s.settled_at > c.retention.as_millis() as i64 => {
            Err(WebError::Gone(format!(
                "the result of commitment request {uid} was kept for {} s (web.commitment_retention_secs) and has expired",
                c.retention.as_secs()
            )))
        }
        Some(s) => Ok(result_response(&s, hierarchical)),
    }
}

fn result_response(s: &Settled, hierarchical: bool) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        result_to_json(&s.result, hierarchical).to_string(),
    )
        .into_response()
}

/// 202: the PACS has not answered yet; poll again.
fn working(location: Option<String>) -> Response {
    let mut rsp = (
        StatusCode::ACCEPTED,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
    )
        .into_response();
    if let Some(l) = location.and_then(|l| l.parse().ok()) {
        rsp.headers_mut().insert(header::CONTENT_LOCATION, l);
    }
    rsp
}
