//! The commitment worker: claims KIND_COMMIT jobs and takes each a step
//! further. First the instances that came through our spools must have
//! reached their archives (or been refused); then each archive an instance
//! was routed to is asked (committed means: by every one of them); then the
//! N-EVENT-REPORT is delivered. Every outcome is saved in the job
//! payload before the next step, so a restart resumes where it stopped.

use super::archive::{Archive, Asked};
use super::{ArchivePart, CommitJob, OpenAssociations, ReportRoute};
use crate::config::{AeConfig, CommitmentMode};
use crate::dicom::status::{self, StatusKind};
use crate::dimse::client::{ScuAssociation, ScuConfig};
use crate::dimse::message::Command;
use crate::dimse_to_web::route::{RoutedLog, Router, StoreFacts};
use crate::jobs::{Job, JobState, JobTable, KIND_COMMIT};
use crate::translate::commitment::{reason, CommitRequest};
use crate::translate::commitment::{result_to_dataset, CommitResult};
use crate::web::client::UpstreamClient;
use dicom_dictionary_std::uids;
use dicom_encoding::TransferSyntaxIndex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// An upstream as the commitment worker sees it.
pub struct CommitArchive {
    pub name: String,
    /// The job kind of its spool.
    pub kind: String,
    pub upstream: Arc<UpstreamClient>,
    /// Its `commitment` setting.
    pub mode: CommitmentMode,
}

#[derive(Clone)]
pub struct CommitWorkerConfig {
    /// Which archives a called AE's instances went to.
    pub router: Arc<Router>,
    pub routed: Option<Arc<RoutedLog>>,
    /// Our AE title: the calling AE of report associations.
    pub our_ae: String,
    /// `[[ae]]`: where requesters are when their association has gone.
    pub peers: Vec<AeConfig>,
    pub max_pdu: u32,
    /// For report associations: to associate, and for the response.
    pub dimse_timeout: Duration,
    /// Longest wait between two attempts.
    pub retry_max: Duration,
    /// How long a claimed job stays ours between two steps.
    pub lease: Duration,
    /// Jobs worked at once.
    pub concurrency: usize,
}

/// Idle poll: new jobs wake us at once, this bounds the wait for retries.
const POLL: Duration = Duration::from_millis(500);
/// While spooled instances are still on their way.
const SPOOL_WAIT: Duration = Duration::from_millis(500);
const TABLE_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How long a report waits for its N-ACTION-RSP to be sent first.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Work commitment jobs until `shutdown` fires.
pub async fn run_commit_worker(
    jobs: Arc<dyn JobTable>,
    archives: Vec<CommitArchive>,
    open: Arc<OpenAssociations>,
    wake: Arc<Notify>,
    cfg: CommitWorkerConfig,
    shutdown: CancellationToken,
) {
    let owner = format!(
        "pons-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    info!(
        owner,
        archives = archives.len(),
        "commitment worker started"
    );
    let worker = Arc::new(Worker {
        archives: archives
            .into_iter()
            .map(|a| Upstream {
                archive: Archive::new(a.upstream, a.mode, cfg.retry_max),
                name: a.name,
                kind: a.kind,
            })
            .collect(),
        jobs,
        open,
        cfg,
        owner,
    });
    let tasks = (0..worker.cfg.concurrency.max(1)).map(|_| {
        let (worker, wake, shutdown) = (worker.clone(), wake.clone(), shutdown.clone());
        async move { worker.run(&wake, &shutdown).await }
    });
    futures::future::join_all(tasks).await;
    info!("commitment worker stopped");
}

struct Upstream {
    name: String,
    kind: String,
    archive: Archive,
}

struct Worker {
    jobs: Arc<dyn JobTable>,
    archives: Vec<Upstream>,
    open: Arc<OpenAssociations>,
    cfg: CommitWorkerConfig,
    owner: String,
}

impl Worker {
    async fn run(&self, wake: &Notify, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            let claimed = self
                .jobs
                .claim(KIND_COMMIT, &self.owner, 1, self.cfg.lease)
                .await;
            let pause = match claimed {
                Ok(jobs) if !jobs.is_empty() => {
                    for job in jobs {
                        let span = tracing::info_span!("commitment", job = job.id);
                        self.step_leased(job).instrument(span).await;
                    }
                    continue;
                }
                Ok(_) => POLL,
                Err(e) => {
                    warn!(error = %e, "cannot claim commitment jobs");
                    TABLE_ERROR_PAUSE
                }
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn step_leased(&self, job: Job) {
        let (id, lease) = (job.id, self.cfg.lease);
        crate::jobs::while_leased(self.jobs.as_ref(), id, &self.owner, lease, self.step(job)).await
    }

    /// Take one job as far as it goes now.
    async fn step(&self, job: Job) {
        let mut p: CommitJob = match serde_json::from_value(job.payload.clone()) {
            Ok(p) => p,
            Err(e) => {
                self.fail(&job, &format!("payload is not a commitment job: {e}"))
                    .await;
                return;
            }
        };
        let uid = p.request.transaction_uid.clone();
        if crate::jobs::now_ms() > p.deadline_at {
            let msg = "deadline passed (dimse.commitment_report_deadline_secs) before the N-EVENT-REPORT was delivered";
            self.fail(&job, msg).await;
            self.open.remove(&uid);
            return;
        }
        if p.result.is_none() {
            // Every spool counts: until nothing of the request is on its way
            // anywhere, where it went is not settled.
            let kinds: Vec<String> = self.archives.iter().map(|u| u.kind.clone()).collect();
            let uids: HashSet<&str> = p
                .request
                .instances
                .iter()
                .map(|r| r.instance_uid.as_str())
                .collect();
            match crate::spool::in_flight(self.jobs.as_ref(), &kinds, &uids).await {
                Ok(0) => {}
                Ok(n) => {
                    let msg = format!("waiting for {n} spooled instance(s) to reach the archive");
                    self.retry(&job, SPOOL_WAIT, &msg).await;
                    return;
                }
                Err(e) => {
                    self.retry(&job, TABLE_ERROR_PAUSE, &e.to_string()).await;
                    return;
                }
            }
            if p.parts.is_none() {
                let refused = match self.refused_by(&uids).await {
                    Ok(r) => r,
                    Err(e) => {
                        self.retry(&job, TABLE_ERROR_PAUSE, &e.to_string()).await;
                        return;
                    }
                };
                p.parts = Some(self.plan(&p, &refused));
                if !self.save(&job, &p).await {
                    return;
                }
            }
            let mut parts = p.parts.take().unwrap_or_default();
            let mut later: Option<(Duration, String)> = None;
            for part in parts.iter_mut().filter(|part| part.ask.result.is_none()) {
                let Some(upstream) = self.upstream(&part.upstream) else {
                    warn!(upstream = %part.upstream, "an archive of this commitment is no longer configured");
                    let gone = Some(reason::PROCESSING_FAILURE);
                    part.ask.result = Some(CommitResult::settle(&part.ask.request, |_| gone));
                    continue;
                };
                match upstream.archive.ask(&mut part.ask).await {
                    Asked::Done(result) => part.ask.result = Some(result),
                    Asked::Later(delay, why) => {
                        let sooner = later.as_ref().is_none_or(|(d, _)| delay < *d);
                        if sooner {
                            later = Some((delay, format!("{}: {why}", part.upstream)));
                        }
                    }
                }
            }
            let result = merge(&p.request, &parts);
            let asked = parts.len();
            p.parts = Some(parts);
            if let Some((delay, why)) = later {
                if self.save(&job, &p).await {
                    self.retry(&job, delay, &why).await;
                }
                return;
            }
            info!(
                transaction_uid = %uid,
                committed = result.committed.len(),
                failed = result.failed.len(),
                archives = asked,
                "archive answered"
            );
            p.result = Some(result);
            if !self.save(&job, &p).await {
                return;
            }
        }
        let Some(result) = p.result.as_ref() else {
            return;
        };
        match self.deliver(&p, result).await {
            Ok(how) => {
                info!(
                    transaction_uid = %uid,
                    event_type = result.event_type(),
                    to = %p.calling_ae,
                    how,
                    "N-EVENT-REPORT delivered"
                );
                if let Err(e) = self.jobs.complete(job.id).await {
                    warn!(error = %e, "cannot mark the commitment job done");
                }
                self.open.remove(&uid);
            }
            Err(why) => {
                p.deliveries = p.deliveries.saturating_add(1);
                let delay =
                    Duration::from_secs(1u64 << p.deliveries.min(20)).min(self.cfg.retry_max);
                warn!(error = %why, retry_in_secs = delay.as_secs(), "N-EVENT-REPORT not delivered");
                if self.save(&job, &p).await {
                    self.retry(&job, delay, &why).await;
                }
            }
        }
    }

    fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.archives.iter().find(|u| u.name == name)
    }

    /// The archives (indices) whose spool refused each of these instances:
    /// they must be asked too, whatever the routes say.
    async fn refused_by(
        &self,
        uids: &HashSet<&str>,
    ) -> Result<HashMap<String, Vec<usize>>, crate::jobs::JobError> {
        let mut refused: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, upstream) in self.archives.iter().enumerate() {
            let failed = self
                .jobs
                .list(Some(&upstream.kind), Some(JobState::Failed), usize::MAX)
                .await?;
            for job in failed {
                let uid = job.payload.get("sop_instance_uid").and_then(|u| u.as_str());
                if let Some(uid) = uid.filter(|u| uids.contains(u)) {
                    refused.entry(uid.to_owned()).or_default().push(index);
                }
            }
        }
        Ok(refused)
    }

    /// Which archive must hold which instances: where each was stored
    /// (remembered), else where its called AE, calling AE and SOP class
    /// route it; and any archive that refused it. A job from before
    /// routing goes to the first archive as it was, progress included.
    fn plan(&self, p: &CommitJob, refused: &HashMap<String, Vec<usize>>) -> Vec<ArchivePart> {
        let first = || {
            self.archives
                .first()
                .map(|u| u.name.clone())
                .unwrap_or_default()
        };
        if p.called_ae.is_empty() {
            let mut ask = p.clone();
            ask.parts = None;
            return vec![ArchivePart {
                upstream: first(),
                ask,
            }];
        }
        let mut parts: Vec<ArchivePart> = Vec::new();
        for sop in &p.request.instances {
            let mut targets = self
                .cfg
                .routed
                .as_ref()
                .and_then(|log| log.get(&sop.instance_uid))
                .unwrap_or_else(|| {
                    let facts = StoreFacts {
                        calling_ae: &p.calling_ae,
                        sop_class_uid: &sop.class_uid,
                        modality: None,
                    };
                    self.cfg.router.store_targets(&p.called_ae, &facts)
                });
            for index in refused.get(&sop.instance_uid).into_iter().flatten() {
                if !targets.contains(index) {
                    targets.push(*index);
                }
            }
            if targets.is_empty() {
                targets.push(0);
            }
            for index in targets {
                let name = self
                    .archives
                    .get(index)
                    .map(|u| u.name.clone())
                    .unwrap_or_else(first);
                let part = match parts.iter_mut().position(|part| part.upstream == name) {
                    Some(i) => &mut parts[i],
                    None => {
                        let mut ask = p.clone();
                        ask.request = CommitRequest {
                            transaction_uid: p.request.transaction_uid.clone(),
                            instances: Vec::new(),
                        };
                        (ask.archive, ask.posted, ask.errors, ask.parts) = (None, false, 0, None);
                        parts.push(ArchivePart {
                            upstream: name,
                            ask,
                        });
                        parts.last_mut().expect("just pushed")
                    }
                };
                part.ask.request.instances.push(sop.clone());
            }
        }
        parts
    }

    /// On the N-ACTION's association while it is open, else on a new one.
    /// Returns how it went out.
    async fn deliver(&self, p: &CommitJob, result: &CommitResult) -> Result<&'static str, String> {
        let uid = &p.request.transaction_uid;
        if let Some(route) = self.open.get(uid) {
            match self.on_same(route, result).await {
                Ok(()) => return Ok("same association"),
                Err(e) => {
                    info!(error = %e, "report not delivered on the requesting association; opening a new one")
                }
            }
            self.open.remove(uid);
        }
        let ae = crate::config::find_ae(&self.cfg.peers, &p.calling_ae).ok_or_else(|| {
            format!(
                "{} is not in [[ae]]: no address for a new association",
                p.calling_ae
            )
        })?;
        let scu = ScuConfig {
            calling_ae: self.cfg.our_ae.clone(),
            called_ae: ae.title.clone(),
            address: format!("{}:{}", ae.host, ae.port),
            max_pdu: self.cfg.max_pdu,
            timeout: self.cfg.dimse_timeout,
            tls: ae.tls_client.clone(),
        };
        let mut assoc = ScuAssociation::connect_as_scp(&scu, uids::STORAGE_COMMITMENT_PUSH_MODEL)
            .await
            .map_err(|e| e.to_string())?;
        let rsp = assoc
            .event_report(
                uids::STORAGE_COMMITMENT_PUSH_MODEL,
                uids::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
                result.event_type(),
                &result_to_dataset(result),
            )
            .await;
        let _ = match &rsp {
            Ok(_) => assoc.release().await,
            Err(_) => assoc.abort().await,
        };
        accepted(&rsp.map_err(|e| e.to_string())?)?;
        Ok("new association")
    }

    async fn on_same(&self, mut route: ReportRoute, result: &CommitResult) -> Result<(), String> {
        if !route.answered(ANSWER_WAIT).await {
            return Err("the N-ACTION-RSP did not go out".into());
        }
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
            .get(&route.transfer_syntax)
            .ok_or("unknown transfer syntax")?;
        let mut data = Vec::new();
        result_to_dataset(result)
            .write_dataset_with_ts(&mut data, ts)
            .map_err(|e| e.to_string())?;
        let rq = Command::n_event_report_rq(
            route.handle.next_message_id(),
            uids::STORAGE_COMMITMENT_PUSH_MODEL,
            uids::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
            result.event_type(),
        );
        let rsp = route
            .handle
            .request(route.pc_id, rq, data, self.cfg.dimse_timeout)
            .await
            .map_err(|e| e.to_string())?;
        accepted(&rsp)
    }

    /// Save progress; false when the job is no longer ours (then another
    /// worker has it, and we must leave it alone).
    async fn save(&self, job: &Job, p: &CommitJob) -> bool {
        let value = match serde_json::to_value(p) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot encode commitment progress");
                return false;
            }
        };
        match self
            .jobs
            .update_payload(job.id, Some(&self.owner), &value)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                warn!("commitment job taken over by another worker; leaving it");
                false
            }
            Err(e) => {
                warn!(error = %e, "cannot save commitment progress");
                false
            }
        }
    }

    async fn retry(&self, job: &Job, delay: Duration, why: &str) {
        if let Err(e) = self.jobs.retry_later(job.id, delay, why).await {
            warn!(error = %e, "cannot reschedule the commitment job");
        }
    }

    async fn fail(&self, job: &Job, why: &str) {
        warn!(error = why, "commitment job failed for good");
        if let Err(e) = self.jobs.fail(job.id, why).await {
            warn!(error = %e, "cannot mark the commitment job failed");
        }
    }
}

/// Committed when every archive asked about an instance committed it;
/// otherwise failed with the first archive's reason.
fn merge(request: &CommitRequest, parts: &[ArchivePart]) -> CommitResult {
    CommitResult::settle(request, |sop| {
        parts.iter().find_map(|part| {
            part.ask
                .result
                .as_ref()?
                .failed
                .iter()
                .find_map(|f| (f.sop.instance_uid == sop.instance_uid).then_some(f.reason))
        })
    })
}

/// The requester took the report (success or warning status).
fn accepted(rsp: &Command) -> Result<(), String> {
    match rsp.status.map(status::kind) {
        Some(StatusKind::Success | StatusKind::Warning) => Ok(()),
        _ => Err(format!(
            "the requester answered the N-EVENT-REPORT with status {:04X}H {}",
            rsp.status.unwrap_or(0xFFFF),
            rsp.error_comment.as_deref().unwrap_or("")
        )),
    }
}
