//! The persistent job table: one trait, several back ends (memory, SQLite;
//! PostgreSQL later). Every kind of asynchronous work is a row: spooled
//! C-STOREs now, storage commitment and retrieve progress later.

use async_trait::async_trait;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod memory;
mod sqlite;

pub type JobId = i64;

/// The kind of a spooled C-STORE waiting to be sent upstream with STOW-RS.
pub const KIND_STOW: &str = "stow";

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
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub next_attempt_at: i64,
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
    /// Record new pending work; durable when this returns.
    async fn insert(&self, kind: &str, payload: &serde_json::Value) -> Result<JobId, JobError>;
    /// Take up to `limit` due jobs of `kind` (pending with next_attempt_at <= now,
    /// or running with an expired lease), mark them running for `owner` until the lease ends.
    async fn claim(
        &self,
        kind: &str,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, JobError>;
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
}

/// Open the table named by `[jobs] url`: `memory` or `sqlite:///path`.
pub async fn open(url: &str) -> Result<Arc<dyn JobTable>, JobError> {
    if url == "memory" {
        return Ok(Arc::new(memory::MemoryJobs::default()));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(JobError::Open {
                url: url.to_owned(),
                message: "no file path after sqlite://".into(),
            });
        }
        return Ok(Arc::new(
            sqlite::SqliteJobs::open(url, Path::new(path)).await?,
        ));
    }
    Err(JobError::Open {
        url: url.to_owned(),
        message: "expected \"memory\" or sqlite:///path".into(),
    })
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
