//! The worker of `/commitment-requests`: claims each [`KIND_PACS_COMMIT`]
//! job, sends the N-ACTION to its PACS, and takes the N-EVENT-REPORT when
//! the PACS sends it on the same association. A PACS that reports on a new
//! association reaches [`Commitments::accept_report`] instead; either way
//! the result is recorded once, and the job only waits for it until the
//! deadline.

use super::{key, Commitments, PacsCommitJob};
use crate::dicom::status;
use crate::dimse::client::{Proposal, ScuAssociation};
use crate::dimse::pool::{Pool, Shape};
use crate::jobs::{now_ms, Job, KIND_PACS_COMMIT};
use crate::translate::commitment::{
    reason, request_to_dataset, CommitResult, ACTION_REQUEST_COMMITMENT,
};
use dicom_dictionary_std::uids::{
    STORAGE_COMMITMENT_PUSH_MODEL as SCPM, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// How often an idle worker looks for due jobs.
const POLL: Duration = Duration::from_millis(500);
/// How long the N-ACTION association stays open for a report on it.
const SAME_ASSOCIATION_WAIT: Duration = Duration::from_secs(10);
/// How often a job whose report will come on a new association looks.
const REPORT_CHECK: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct WorkerConfig {
    /// `[[pacs]]` name → how to reach it.
    pub pacs: HashMap<String, Arc<Pool>>,
    pub lease: Duration,
    pub concurrency: usize,
}

pub async fn run_worker(
    commitments: Arc<Commitments>,
    cfg: WorkerConfig,
    shutdown: CancellationToken,
) {
    let owner = format!(
        "pons-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let worker = Arc::new(Worker {
        c: commitments,
        cfg,
        owner,
    });
    let tasks = (0..worker.cfg.concurrency.max(1)).map(|_| {
        let (worker, shutdown) = (worker.clone(), shutdown.clone());
        async move { worker.run(&shutdown).await }
    });
    futures::future::join_all(tasks).await;
}

struct Worker {
    c: Arc<Commitments>,
    cfg: WorkerConfig,
    owner: String,
}

impl Worker {
    async fn run(&self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            let claimed = self
                .c
                .jobs
                .claim(KIND_PACS_COMMIT, &self.owner, 1, self.cfg.lease)
                .await;
            match claimed {
                Ok(jobs) if !jobs.is_empty() => {
                    for job in jobs {
                        let span = tracing::info_span!("pacs commitment", job = job.id);
                        self.step_leased(job).instrument(span).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot claim commitment jobs"),
            }
            tokio::select! {
                _ = self.c.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// [`Self::step`], renewing the lease meanwhile.
    async fn step_leased(&self, job: Job) {
        let (id, lease) = (job.id, self.cfg.lease);
        let work = self.step(job);
        let outcome =
            crate::jobs::while_leased(self.c.jobs.as_ref(), id, &self.owner, lease, work).await;
        let done = match outcome {
            Ok(Next::Done) => self.c.jobs.complete(id).await,
            Ok(Next::Later(delay, why)) => self.c.jobs.retry_later(id, delay, &why).await,
            Err(e) => self.c.jobs.fail(id, &e).await,
        };
        if let Err(e) = done {
            warn!(error = %e, "cannot record the state of a commitment job");
        }
    }

    async fn step(&self, job: Job) -> Result<Next, String> {
        let mut p: PacsCommitJob = serde_json::from_value(job.payload)
            .map_err(|e| format!("payload is not a commitment job: {e}"))?;
        let k = key(&p.pacs, &p.request.transaction_uid);
        let table = |e: crate::jobs::JobError| e.to_string();
        if self.c.settled(&k).await.map_err(table)?.is_some() {
            return Ok(Next::Done);
        }
        let Some(pool) = self.cfg.pacs.get(&p.pacs) else {
            return self
                .settle_failed(&k, &p, "the PACS is no longer in [[pacs]]")
                .await;
        };
        if now_ms() > p.deadline_at {
            let why = "no N-EVENT-REPORT before web.commitment_deadline_secs";
            return self.settle_failed(&k, &p, why).await;
        }
        if p.requested {
            return Ok(self.waiting(&p));
        }
        let shape = Shape::new(vec![Proposal::uncompressed(SCPM)]);
        let mut assoc = match pool.get(shape).await {
            Ok(a) => a,
            Err(e) => return Ok(self.backoff(job.attempts, format!("PACS {}: {e}", p.pacs))),
        };
        let information = request_to_dataset(&p.request);
        let rsp = assoc
            .action(
                SCPM,
                STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
                ACTION_REQUEST_COMMITMENT,
                &information,
            )
            .await;
        let status = match rsp {
            Ok(rsp) => rsp.status.unwrap_or(status::general::PROCESSING_FAILURE),
            Err(e) => {
                assoc.abort().await;
                return Ok(self.backoff(job.attempts, format!("PACS {}: {e}", p.pacs)));
            }
        };
        if status::kind(status) != status::StatusKind::Success
            && status::kind(status) != status::StatusKind::Warning
        {
            assoc.release().await;
            let why = format!("the PACS refused the N-ACTION with status {status:04X}");
            return self.settle_failed(&k, &p, &why).await;
        }
        p.requested = true;
        let payload = serde_json::to_value(&p).map_err(|e| e.to_string())?;
        self.c
            .jobs
            .update_payload(job.id, Some(&self.owner), &payload)
            .await
            .map_err(table)?;
        info!(pacs = %p.pacs, "N-ACTION accepted; awaiting the N-EVENT-REPORT");
        self.report_on(&mut assoc, &k, &p).await?;
        assoc.release().await;
        if self.c.settled(&k).await.map_err(table)?.is_some() {
            return Ok(Next::Done);
        }
        Ok(self.waiting(&p))
    }

    /// Wait on the N-ACTION association for the report, while no report on
    /// a new association has settled the job.
    async fn report_on(
        &self,
        assoc: &mut ScuAssociation,
        k: &str,
        p: &PacsCommitJob,
    ) -> Result<(), String> {
        let ts = assoc
            .accepted_context(SCPM)
            .map(|(_, ts)| ts)
            .unwrap_or_default();
        let settled_elsewhere = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(Some(_)) = self.c.settled(k).await {
                    return;
                }
            }
        };
        let report = tokio::select! {
            r = tokio::time::timeout(SAME_ASSOCIATION_WAIT, assoc.event_report_from_peer(SCPM, status::SUCCESS)) => r,
            _ = settled_elsewhere => return Ok(()),
        };
        let (_, data) = match report {
            Ok(Ok(r)) => r,
            // The PACS will report on a new association (or not at all).
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        let answer = super::decode_report(&data, &ts)?;
        if answer.transaction_uid != p.request.transaction_uid {
            warn!("the PACS reported on another Transaction UID; ignored");
            return Ok(());
        }
        let result = CommitResult::reconcile(&p.request, &answer);
        self.c
            .settle(k, result, "same association")
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The report will come on a new association: look again soon.
    fn waiting(&self, p: &PacsCommitJob) -> Next {
        let left = Duration::from_millis((p.deadline_at - now_ms()).max(0) as u64);
        Next::Later(
            REPORT_CHECK.min(left + Duration::from_millis(100)),
            "waiting for the PACS's N-EVENT-REPORT".into(),
        )
    }

    fn backoff(&self, attempts: u32, why: String) -> Next {
        warn!(error = %why, "cannot ask the PACS for storage commitment yet");
        let delay = Duration::from_secs(1u64 << attempts.min(16)).min(BACKOFF_MAX);
        Next::Later(delay, why)
    }

    /// Every instance failed (0110): the client is never left waiting.
    async fn settle_failed(&self, k: &str, p: &PacsCommitJob, why: &str) -> Result<Next, String> {
        warn!(pacs = %p.pacs, why, "commitment settled as a processing failure");
        let result = CommitResult::settle(&p.request, |_| Some(reason::PROCESSING_FAILURE));
        self.c
            .settle(k, result, why)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Next::Done)
    }
}

enum Next {
    Done,
    Later(Duration, String),
}
