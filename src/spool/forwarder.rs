//! The forwarder: claims spooled instances from the job table and sends them
//! upstream with STOW-RS, several per request, several requests at a time.

use super::StowPayload;
use crate::dicom::status;
use crate::jobs::{Job, JobId, JobTable};
use crate::web::client::{InstanceOutcome, StowItem, UpstreamClient, UpstreamError};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Instances per STOW-RS request.
    pub batch: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Longest wait between two attempts of one instance.
    pub retry_max: Duration,
    /// How long a claimed job stays ours; must exceed the request timeout,
    /// or another worker may send the same instances again.
    pub lease: Duration,
    /// Where refused files go (`Spool::failed_dir()`).
    pub failed_dir: PathBuf,
    /// The job kind of the spool it drains (`Spool::kind()`).
    pub kind: String,
}

/// Idle poll: commits wake us at once through the Notify, this only bounds
/// the delay for jobs whose retry time has come.
const POLL: Duration = Duration::from_millis(200);
/// Pause after the job table itself failed.
const TABLE_ERROR_PAUSE: Duration = Duration::from_secs(1);
const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// What the forwarder needs of the upstream; a seam for tests.
#[async_trait]
pub(crate) trait StowTarget: Send + Sync {
    async fn stow(&self, items: &[StowItem]) -> Result<Vec<InstanceOutcome>, UpstreamError>;
}

#[async_trait]
impl StowTarget for UpstreamClient {
    async fn stow(&self, items: &[StowItem]) -> Result<Vec<InstanceOutcome>, UpstreamError> {
        UpstreamClient::stow(self, items).await
    }
}

/// Run `cfg.concurrency` workers until `shutdown` fires; requests already
/// sent are allowed to finish.
pub async fn run_forwarder(
    jobs: Arc<dyn JobTable>,
    upstream: Arc<UpstreamClient>,
    cfg: ForwarderConfig,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) {
    run(jobs, upstream, cfg, notify, shutdown).await
}

pub(crate) async fn run(
    jobs: Arc<dyn JobTable>,
    target: Arc<dyn StowTarget>,
    cfg: ForwarderConfig,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let owner = format!(
        "pons-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    tracing::info!(
        owner,
        batch = cfg.batch,
        concurrency = cfg.concurrency,
        "forwarder started"
    );
    let fwd = Arc::new(Forwarder {
        jobs,
        target,
        cfg,
        owner,
        outage: std::sync::Mutex::new(Outage::default()),
    });
    let workers = (0..fwd.cfg.concurrency.max(1)).map(|_| {
        let fwd = fwd.clone();
        let notify = notify.clone();
        let shutdown = shutdown.clone();
        async move { fwd.worker(&notify, &shutdown).await }
    });
    futures::future::join_all(workers).await;
    tracing::info!("forwarder stopped");
}

struct Forwarder {
    jobs: Arc<dyn JobTable>,
    target: Arc<dyn StowTarget>,
    cfg: ForwarderConfig,
    owner: String,
    outage: std::sync::Mutex<Outage>,
}

/// Back-off belongs to the upstream, not to each instance: while it is down,
/// every worker pauses instead of claiming (and failing) job after job, so
/// the delay grows with the outage and resets at the first success.
#[derive(Default)]
struct Outage {
    failures: u32,
    until: Option<tokio::time::Instant>,
}

/// A claimed job and what its payload says.
struct Entry {
    job: Job,
    payload: StowPayload,
}

impl Forwarder {
    async fn worker(&self, notify: &Notify, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            let paused_until = self.outage.lock().map(|o| o.until).unwrap_or(None);
            if let Some(until) = paused_until {
                if until > tokio::time::Instant::now() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            }
            // Not raced against shutdown: a claim dropped half-way would
            // leave jobs leased to nobody until the lease runs out.
            let claimed = self
                .jobs
                .claim(
                    &self.cfg.kind,
                    &self.owner,
                    self.cfg.batch.max(1),
                    self.cfg.lease,
                )
                .await;
            match claimed {
                Ok(jobs) if !jobs.is_empty() => self.process(jobs).await,
                Ok(_) => {
                    tokio::select! {
                        _ = notify.notified() => {}
                        _ = tokio::time::sleep(POLL) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "forwarder cannot claim jobs");
                    tokio::select! {
                        _ = tokio::time::sleep(TABLE_ERROR_PAUSE) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    async fn process(&self, jobs: Vec<Job>) {
        let mut batch = Vec::with_capacity(jobs.len());
        for job in jobs {
            let payload = match serde_json::from_value::<StowPayload>(job.payload.clone()) {
                Ok(p) => p,
                Err(e) => {
                    self.fail(
                        job.id,
                        &format!("job payload is not a spooled instance: {e}"),
                    )
                    .await;
                    continue;
                }
            };
            if !tokio::fs::try_exists(&payload.path).await.unwrap_or(true) {
                let msg = format!("spooled file {} is missing", payload.path.display());
                self.fail(job.id, &msg).await;
                continue;
            }
            batch.push(Entry { job, payload });
        }
        let Some((rest, err)) = self.attempt(batch).await else {
            return;
        };
        // A permanent refusal of the whole request: if several instances
        // were in it, find the culprit(s) by sending them one at a time.
        if rest.len() > 1 {
            tracing::warn!(instances = rest.len(), error = %err, "upstream refused a batch; sending its instances one by one");
            for entry in rest {
                if let Some((single, err)) = self.attempt(vec![entry]).await {
                    for e in single {
                        self.refuse(e, &err).await;
                    }
                }
            }
        } else {
            for e in rest {
                self.refuse(e, &err).await;
            }
        }
    }

    /// Permanent refusal of one instance: job failed, file to failed/ (left
    /// in ready/ it would be queued again by the next `Spool::open`).
    async fn refuse(&self, entry: Entry, err: &UpstreamError) {
        let msg = format!("upstream refused the instance: {err}");
        if self.fail(entry.job.id, &msg).await {
            self.quarantine(&entry.payload.path).await;
        }
    }

    /// One STOW request for `batch`, outcomes settled. Returns the entries
    /// and error when the upstream refused the request as a whole for good.
    async fn attempt(&self, mut batch: Vec<Entry>) -> Option<(Vec<Entry>, UpstreamError)> {
        loop {
            if batch.is_empty() {
                return None;
            }
            let items: Vec<StowItem> = batch
                .iter()
                .map(|e| StowItem {
                    path: e.payload.path.clone(),
                    sop_class_uid: e.payload.meta.sop_class_uid.clone(),
                    sop_instance_uid: e.payload.meta.sop_instance_uid.clone(),
                })
                .collect();
            let ids: Vec<JobId> = batch.iter().map(|e| e.job.id).collect();
            tracing::debug!(jobs = ?ids, "sending STOW-RS batch");
            match self.target.stow(&items).await {
                Ok(outcomes) => {
                    if let Ok(mut o) = self.outage.lock() {
                        *o = Outage::default();
                    }
                    self.settle(batch, outcomes).await;
                    return None;
                }
                Err(UpstreamError::File { path, source }) => {
                    // Our file, not the upstream: drop that job, resend the rest.
                    let Some(pos) = batch.iter().position(|e| e.payload.path == path) else {
                        self.retry_all(&batch, &UpstreamError::File { path, source })
                            .await;
                        return None;
                    };
                    let bad = batch.remove(pos);
                    let msg = format!("cannot read spooled file {}: {source}", path.display());
                    self.fail(bad.job.id, &msg).await;
                }
                Err(e) if e.is_transient() => {
                    self.retry_all(&batch, &e).await;
                    return None;
                }
                Err(e) if refuses_us(&e) => {
                    // Wrong URL or credentials: no instance is at fault, and
                    // failing them all would bury the queue once the token
                    // expires. Keep retrying until the operator fixes it.
                    tracing::error!(error = %e, "upstream refuses our requests; check upstream.url and upstream.auth");
                    self.retry_all(&batch, &e).await;
                    return None;
                }
                Err(e) => return Some((batch, e)),
            }
        }
    }

    async fn retry_all(&self, batch: &[Entry], err: &UpstreamError) {
        tracing::warn!(jobs = batch.len(), error = %err, "STOW-RS failed; will retry");
        let msg = err.to_string();
        let delay = match self.outage.lock() {
            Ok(mut o) => {
                let delay = self.backoff(o.failures, err.retry_after());
                o.failures = o.failures.saturating_add(1);
                o.until = Some(tokio::time::Instant::now() + delay);
                delay
            }
            Err(_) => self.backoff(0, err.retry_after()),
        };
        for e in batch {
            self.retry(e.job.id, delay, &msg).await;
        }
    }

    async fn settle(&self, batch: Vec<Entry>, outcomes: Vec<InstanceOutcome>) {
        let (mut stored, mut failed, mut retried) = (0usize, 0usize, 0usize);
        let mut outcomes = outcomes.into_iter();
        for entry in batch {
            let id = entry.job.id;
            match outcomes.next().unwrap_or(InstanceOutcome::NotAcknowledged) {
                outcome @ (InstanceOutcome::Stored | InstanceOutcome::StoredWithWarning(_)) => {
                    if let InstanceOutcome::StoredWithWarning(w) = outcome {
                        tracing::info!(
                            job = id,
                            warning = format!("0x{w:04X}"),
                            meaning = status::meaning(w),
                            "stored upstream with a warning"
                        );
                    }
                    // Job first, file second: a crash in between resends a
                    // stored instance (harmless) rather than losing track.
                    if self.complete(id).await {
                        remove_file(&entry.payload.path).await;
                    }
                    stored += 1;
                }
                InstanceOutcome::Failed(reason) => {
                    let msg = format!(
                        "upstream Failure Reason 0x{reason:04X} ({})",
                        status::meaning(reason)
                    );
                    if self.fail(id, &msg).await {
                        self.quarantine(&entry.payload.path).await;
                    }
                    failed += 1;
                }
                InstanceOutcome::NotAcknowledged => {
                    let delay = self.backoff(entry.job.attempts, None);
                    self.retry(id, delay, "upstream did not acknowledge the instance")
                        .await;
                    retried += 1;
                }
            }
        }
        tracing::info!(stored, failed, retried, "STOW-RS batch settled");
    }

    /// 1 s, 2 s, 4 s… by attempts so far; at least what the upstream asked
    /// for; never more than retry_max (the operator's bound wins).
    fn backoff(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let exp =
            BACKOFF_BASE.saturating_mul(1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX));
        exp.max(retry_after.unwrap_or_default())
            .min(self.cfg.retry_max)
    }

    async fn quarantine(&self, path: &std::path::Path) {
        let dest = self
            .cfg
            .failed_dir
            .join(path.file_name().unwrap_or_default());
        if let Err(e) = tokio::fs::rename(path, &dest).await {
            tracing::warn!(file = %path.display(), error = %e, "cannot move refused file to failed/");
            return;
        }
        // Its age in failed/ counts from now: retention purges by it.
        let _ = std::fs::File::options()
            .write(true)
            .open(&dest)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }

    // Job-table errors are logged, not propagated: the lease runs out and the
    // job is claimed again, which is the right recovery.
    async fn complete(&self, id: JobId) -> bool {
        log_table(id, self.jobs.complete(id).await)
    }
    async fn fail(&self, id: JobId, msg: &str) -> bool {
        tracing::warn!(job = id, error = msg, "job failed for good");
        crate::metrics::get().spool_failures.inc();
        log_table(id, self.jobs.fail(id, msg).await)
    }
    async fn retry(&self, id: JobId, delay: Duration, msg: &str) -> bool {
        log_table(id, self.jobs.retry_later(id, delay, msg).await)
    }
}

/// 401, 403, 404 and 405 on POST /studies are about us (credentials,
/// permissions, URL), never about a particular instance.
fn refuses_us(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Status {
            status: 401 | 403 | 404 | 405,
            ..
        }
    )
}

fn log_table(id: JobId, r: Result<(), crate::jobs::JobError>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(job = id, error = %e, "cannot update job");
            false
        }
    }
}

async fn remove_file(path: &std::path::Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove forwarded file")
        }
    }
}
