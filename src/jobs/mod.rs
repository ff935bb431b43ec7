//! The persistent job table: one trait, three back ends (memory, SQLite,
//! PostgreSQL). Every kind of asynchronous work is a row: spooled C-STOREs,
//! storage commitment, retrieve progress. Several Pons instances may share
//! one PostgreSQL table: jobs are claimed with leases, and a job bound to a
//! node (files on one machine's disk) is only claimed by that node.

use async_trait::async_trait;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod memory;
pub mod report;
mod sql;

pub type JobId = i64;

/// The kind of a spooled C-STORE waiting to be sent upstream with STOW-RS.
pub const KIND_STOW: &str = "stow";
/// A storage commitment asked of us with N-ACTION (direction A), keyed by
/// its Transaction UID, until its N-EVENT-REPORT is delivered.
pub const KIND_COMMIT: &str = "commit";
/// A storage commitment asked of a PACS with N-ACTION for a DICOMweb
/// client (direction B), keyed by PACS name and Transaction UID.
pub const KIND_PACS_COMMIT: &str = "pacs_commit";
/// The PACS's answer to a [`KIND_PACS_COMMIT`], under the same key: written
/// once, by whichever side receives the N-EVENT-REPORT (or by the deadline).
pub const KIND_PACS_COMMIT_RESULT: &str = "pacs_commit_result";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: JobId,
    pub kind: String,
    pub state: JobState,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Unique among the jobs of this kind (e.g. a Transaction UID).
    pub key: Option<String>,
    /// Only this node may claim the job; `None`: any node.
    pub node: Option<String>,
    /// Who holds the lease while running.
    pub owner: Option<String>,
    /// Unix milliseconds.
    pub lease_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub next_attempt_at: i64,
}

/// A job to record: `NewJob::new(kind, &payload)` plus the optional parts.
#[derive(Debug, Clone, Copy)]
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub payload: &'a serde_json::Value,
    /// Refuse the job when another of this kind already has this key.
    pub key: Option<&'a str>,
    /// Only the instance whose `JobTable::node()` is this may claim it.
    pub node: Option<&'a str>,
    /// Not claimable before this much time has passed.
    pub delay: Duration,
}

impl<'a> NewJob<'a> {
    pub fn new(kind: &'a str, payload: &'a serde_json::Value) -> Self {
        NewJob {
            kind,
            payload,
            key: None,
            node: None,
            delay: Duration::ZERO,
        }
    }
    pub fn key(self, key: &'a str) -> Self {
        NewJob {
            key: Some(key),
            ..self
        }
    }
    pub fn node(self, node: &'a str) -> Self {
        NewJob {
            node: Some(node),
            ..self
        }
    }
    pub fn delay(self, delay: Duration) -> Self {
        NewJob { delay, ..self }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot open job table {url}: {message}")]
    Open { url: String, message: String },
    #[error("job table query failed: {0}")]
    Query(String),
    #[error("no job {0}")]
    NotFound(JobId),
}

#[async_trait]
pub trait JobTable: Send + Sync {
    /// This instance's node id: `claim` takes jobs without a node or with this one.
    fn node(&self) -> &str;
    /// Record new pending work; durable when this returns. `None` when
    /// `job.key` is already used by a job of the same kind: of two
    /// concurrent adds with one key exactly one succeeds.
    async fn add(&self, job: &NewJob<'_>) -> Result<Option<JobId>, JobError>;
    /// Record new pending work any node may claim.
    async fn insert(&self, kind: &str, payload: &serde_json::Value) -> Result<JobId, JobError> {
        self.add(&NewJob::new(kind, payload))
            .await?
            .ok_or_else(|| JobError::Query("insert without key was refused".into()))
    }
    /// Record new pending work unless `key` is taken (`None` then).
    async fn insert_unique(
        &self,
        kind: &str,
        key: &str,
        payload: &serde_json::Value,
    ) -> Result<Option<JobId>, JobError> {
        self.add(&NewJob::new(kind, payload).key(key)).await
    }
    async fn find_by_key(&self, kind: &str, key: &str) -> Result<Option<Job>, JobError>;
    /// Take up to `limit` due jobs of `kind` for this node (pending with
    /// next_attempt_at <= now, or running with an expired lease), oldest
    /// first, and mark them running for `owner` until the lease ends. Two
    /// claimers, in one process or in several sharing the table, never get
    /// the same job while its lease runs.
    async fn claim(
        &self,
        kind: &str,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, JobError>;
    /// Make this node's running jobs of `kind` pending again at once, for a
    /// node starting up: a node runs one process at a time, so they are
    /// left over from its previous life, and their leases may run for
    /// minutes. Returns how many.
    async fn requeue_node(&self, kind: &str) -> Result<u64, JobError>;
    /// Keep a running job leased to `owner` for `lease` from now. `false`
    /// when it is no longer ours (finished, or taken over after expiry).
    async fn renew(&self, id: JobId, owner: &str, lease: Duration) -> Result<bool, JobError>;
    /// Replace the payload (the progress of a multi-step job). With
    /// `Some(owner)` only while that owner holds the job running; `false`
    /// when no row was changed (unknown id, or not held by `owner`).
    async fn update_payload(
        &self,
        id: JobId,
        owner: Option<&str>,
        payload: &serde_json::Value,
    ) -> Result<bool, JobError>;
    /// The work is done.
    async fn complete(&self, id: JobId) -> Result<(), JobError>;
    /// Transient failure: pending again after `delay`, attempts + 1, error kept.
    async fn retry_later(&self, id: JobId, delay: Duration, error: &str) -> Result<(), JobError>;
    /// Permanent failure, error kept for operators.
    async fn fail(&self, id: JobId, error: &str) -> Result<(), JobError>;
    async fn get(&self, id: JobId) -> Result<Option<Job>, JobError>;
    /// Newest first.
    async fn list(
        &self,
        kind: Option<&str>,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>, JobError>;
    async fn count(&self, kind: &str, state: JobState) -> Result<u64, JobError>;
    /// Delete finished jobs (done or failed) last changed before
    /// `before_ms` (Unix milliseconds); how many went.
    async fn purge_finished(&self, before_ms: i64) -> Result<u64, JobError>;
    /// A failed job pending again at once, attempts reset; `false` when
    /// `id` is not a failed job.
    async fn requeue_failed(&self, id: JobId) -> Result<bool, JobError>;
    /// Fails when a write would fail now (locked, read-only, disk full):
    /// /readyz asks, as a table that can be read may still refuse writes.
    async fn check_writable(&self) -> Result<(), JobError> {
        Ok(())
    }
}

/// Run `work` while renewing job `id`'s lease for `owner` every third of
/// `lease`: the lease can be short (a job whose process died is soon taken
/// over) whatever the work takes.
pub async fn while_leased<T>(
    jobs: &dyn JobTable,
    id: JobId,
    owner: &str,
    lease: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let keep = async {
        loop {
            tokio::time::sleep(lease / 3).await;
            if let Err(e) = jobs.renew(id, owner, lease).await {
                tracing::warn!(error = %e, job = id, "cannot renew a job's lease");
            }
        }
    };
    tokio::select! {
        r = work => r,
        _ = keep => unreachable!("the lease loop never ends"),
    }
}

/// Open the table named by `[jobs] url` (`memory`, `sqlite:///path`,
/// `postgres://...`) as node `node`.
pub async fn open(url: &str, node: &str) -> Result<Arc<dyn JobTable>, JobError> {
    if url == "memory" {
        return Ok(Arc::new(memory::MemoryJobs::new(node)));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(JobError::Open {
                url: url.to_owned(),
                message: "no file path after sqlite://".into(),
            });
        }
        return Ok(Arc::new(
            sql::SqlJobs::open_sqlite(url, Path::new(path), node).await?,
        ));
    }
    if is_postgres_url(url) {
        return Ok(Arc::new(sql::SqlJobs::open_postgres(url, node).await?));
    }
    Err(JobError::Open {
        url: redact(url),
        message: "expected \"memory\", sqlite:///path or postgres://...".into(),
    })
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let userinfo = rest[..authority_end]
        .rfind('@')
        .and_then(|at| Some((at, rest[..at].split_once(':')?.0)));
    let url = match userinfo {
        Some((at, user)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    };
    // libpq also takes ?password=...
    match url.find("password=") {
        Some(i) => {
            let end = url[i..].find('&').map_or(url.len(), |e| i + e);
            format!("{}password=***{}", &url[..i], &url[end..])
        }
        None => url,
    }
}

impl JobState {
    /// The spelling stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "pending" => JobState::Pending,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }
}

/// Wall clock in Unix milliseconds: rows are shared across restarts (and,
/// with PostgreSQL, across hosts), so a monotonic clock would not do.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests;
