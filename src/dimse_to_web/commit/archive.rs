//! Asking the archive whether it has taken responsibility for the
//! instances: with its own storage commitment service (`POST` then `GET
//! /commitment-requests/{transactionUID}`), or by looking each instance up
//! with QIDO-RS (UID list matching in batches; present with the same SOP
//! class counts as committed).

use super::{ArchiveMode, CommitJob};
use crate::config::CommitmentMode;
use crate::dicom::uid;
use crate::translate::commitment::json::{request_to_json, result_from_json};
use crate::translate::commitment::{reason, CommitResult};
use crate::web::client::{CommitmentAnswer, UpstreamClient, UpstreamError};
use dicom_dictionary_std::tags;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// SOP Instance UIDs per QIDO-RS request: about 6.5 KB of URL, which
/// every server we know takes.
const VERIFY_BATCH: usize = 100;
/// Poll interval when a 202 carries no Retry-After.
const POLL_DEFAULT: Duration = Duration::from_secs(5);
const BACKOFF_BASE: Duration = Duration::from_secs(1);

pub(super) struct Archive {
    pub upstream: Arc<UpstreamClient>,
    pub mode: CommitmentMode,
    /// Longest wait between two attempts.
    pub retry_max: Duration,
    /// What `auto` found out at its probe; kept for the process's life.
    probed: Mutex<Option<ArchiveMode>>,
}

/// The outcome of one attempt.
pub(super) enum Asked {
    Done(CommitResult),
    /// Ask again after this long; why, for the job's last error.
    Later(Duration, String),
}

impl Archive {
    pub fn new(upstream: Arc<UpstreamClient>, mode: CommitmentMode, retry_max: Duration) -> Self {
        Archive {
            upstream,
            mode,
            retry_max,
            probed: Mutex::new(None),
        }
    }

    /// One attempt at the verdict; `job` records what changed (mode
    /// decided, request posted, error count).
    pub async fn ask(&self, job: &mut CommitJob) -> Asked {
        let mode = match (job.archive, self.mode) {
            (Some(m), _) => m,
            (None, CommitmentMode::Verify) => ArchiveMode::Verify,
            (None, CommitmentMode::Dicomweb) => ArchiveMode::Dicomweb,
            (None, CommitmentMode::Auto) => self
                .probed
                .lock()
                .ok()
                .and_then(|p| *p)
                .unwrap_or(ArchiveMode::Dicomweb),
        };
        job.archive = Some(mode);
        let outcome = match mode {
            ArchiveMode::Verify => self.verify(job).await,
            ArchiveMode::Dicomweb => {
                match self.dicomweb(job).await {
                    Err(Unsupported) if self.mode == CommitmentMode::Auto => {
                        info!("the archive has no /commitment-requests; verifying with QIDO-RS instead");
                        if let Ok(mut p) = self.probed.lock() {
                            *p = Some(ArchiveMode::Verify);
                        }
                        job.archive = Some(ArchiveMode::Verify);
                        self.verify(job).await
                    }
                    Err(Unsupported) => Err(Trouble::Retry(
                        None,
                        "the archive has no /commitment-requests (404); \
                     set upstream.commitment = \"verify\""
                            .into(),
                    )),
                    Ok(step) => {
                        if self.mode == CommitmentMode::Auto {
                            if let Ok(mut p) = self.probed.lock() {
                                p.get_or_insert(ArchiveMode::Dicomweb);
                            }
                        }
                        step
                    }
                }
            }
        };
        match outcome {
            Ok(Step::Result(result)) => {
                job.errors = 0;
                Asked::Done(result)
            }
            Ok(Step::Wait(delay, why)) => {
                job.errors = 0;
                Asked::Later(delay.clamp(BACKOFF_BASE, self.retry_max), why)
            }
            Err(Trouble::Retry(retry_after, why)) => {
                let exp = BACKOFF_BASE
                    .saturating_mul(1u32.checked_shl(job.errors.min(20)).unwrap_or(u32::MAX));
                job.errors = job.errors.saturating_add(1);
                let delay = exp.max(retry_after.unwrap_or_default()).min(self.retry_max);
                warn!(error = %why, retry_in_secs = delay.as_secs(), "cannot ask the archive yet");
                Asked::Later(delay, why)
            }
            Err(Trouble::Refused(why)) => {
                // A definite no: the requester keeps its copies.
                warn!(error = %why, "the archive refused the commitment request; reporting processing failures");
                job.errors = 0;
                Asked::Done(CommitResult::settle(&job.request, |_| {
                    Some(reason::PROCESSING_FAILURE)
                }))
            }
        }
    }

    /// Sup 234: POST the request once, then GET until there is a result.
    async fn dicomweb(&self, job: &mut CommitJob) -> Result<Result<Step, Trouble>, Unsupported> {
        let uid = job.request.transaction_uid.clone();
        let answer = if job.posted {
            self.upstream.commitment_result(&uid).await
        } else {
            let body = request_to_json(&job.request);
            self.upstream.commitment_request(&uid, &body).await
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return Ok(Err(trouble(e))),
        };
        Ok(Ok(match answer {
            CommitmentAnswer::Done(body) => match result_from_json(&body, &uid) {
                Ok(answer) => Step::Result(CommitResult::reconcile(&job.request, &answer)),
                Err(e) => return Ok(Err(Trouble::Retry(None, format!("unreadable result: {e}")))),
            },
            CommitmentAnswer::Working { retry_after } => {
                job.posted = true;
                Step::Wait(
                    retry_after.unwrap_or(POLL_DEFAULT),
                    "the archive is working on it".into(),
                )
            }
            // Ours from before a restart, most likely: ask for its result.
            CommitmentAnswer::Conflict if !job.posted => {
                job.posted = true;
                Step::Wait(
                    Duration::ZERO,
                    "request known to the archive; polling".into(),
                )
            }
            CommitmentAnswer::NotFound if !job.posted => return Err(Unsupported),
            CommitmentAnswer::NotFound | CommitmentAnswer::Gone | CommitmentAnswer::Conflict => {
                job.posted = false;
                Step::Wait(
                    Duration::ZERO,
                    "the archive lost the request; asking again".into(),
                )
            }
        }))
    }

    /// QIDO-RS `instances?SOPInstanceUID=a,b,…` in batches.
    async fn verify(&self, job: &CommitJob) -> Result<Step, Trouble> {
        let mut seen = HashSet::new();
        let wanted: Vec<&str> = job
            .request
            .instances
            .iter()
            .map(|r| r.instance_uid.as_str())
            .filter(|u| seen.insert(*u))
            .collect();
        // UID → SOP Class UID (empty when the archive did not say).
        let mut found: HashMap<String, String> = HashMap::new();
        for batch in wanted.chunks(VERIFY_BATCH) {
            let params = vec![
                ("00080018".to_owned(), batch.join(",")),
                ("includefield".to_owned(), "00080016".to_owned()),
            ];
            let mut offset = 0;
            loop {
                let page = self
                    .upstream
                    .qido_page("instances", &params, offset, VERIFY_BATCH)
                    .await
                    .map_err(trouble)?;
                offset += page.len();
                for m in &page {
                    let text = |tag| {
                        m.get(tag)
                            .and_then(|e| e.to_str().ok())
                            .map(|s| uid::trim(&s).to_owned())
                    };
                    if let Some(uid) = text(tags::SOP_INSTANCE_UID) {
                        found.insert(uid, text(tags::SOP_CLASS_UID).unwrap_or_default());
                    }
                }
                if page.len() < VERIFY_BATCH {
                    break;
                }
            }
        }
        Ok(Step::Result(CommitResult::settle(
            &job.request,
            |r| match found.get(&r.instance_uid) {
                None => Some(reason::NO_SUCH_INSTANCE),
                Some(class) if !class.is_empty() && *class != r.class_uid => {
                    Some(reason::CLASS_INSTANCE_CONFLICT)
                }
                Some(_) => None,
            },
        )))
    }
}

/// What one contact with the archive gave.
enum Step {
    Result(CommitResult),
    Wait(Duration, String),
}

/// The archive could not be asked this time.
enum Trouble {
    /// Try again (after at least this long, when the archive said).
    Retry(Option<Duration>, String),
    /// It refused the request for good.
    Refused(String),
}

/// POST /commitment-requests answered 404: the archive lacks the service.
struct Unsupported;

fn trouble(e: UpstreamError) -> Trouble {
    // Our URL or credentials (401, 403, 404) may be fixed by the operator:
    // keep trying until the deadline rather than fail every instance.
    let ours = matches!(
        e,
        UpstreamError::Status {
            status: 401 | 403 | 404,
            ..
        }
    );
    // Without the URL: a verification's carries a hundred UIDs.
    let why = match &e {
        UpstreamError::Status {
            status, message, ..
        } => format!("archive answered HTTP {status}: {message}"),
        other => crate::dimse_to_web::upstream_comment(other),
    };
    if e.is_transient() || ours {
        Trouble::Retry(e.retry_after(), why)
    } else {
        Trouble::Refused(why)
    }
}
