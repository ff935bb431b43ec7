//! In-memory job table: for tests and for `spool.mode = "direct"`, where
//! nothing has to survive a restart.

use super::{duration_ms, now_ms, Job, JobError, JobId, JobState, JobTable};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub(super) struct MemoryJobs {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: JobId,
    rows: BTreeMap<JobId, Row>,
}

struct Row {
    job: Job,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
}

impl MemoryJobs {
    /// Never held across an await; a poisoned lock only means another
    /// thread panicked mid-update, and the map itself is still consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, id: JobId, f: impl FnOnce(&mut Row, i64)) -> Result<(), JobError> {
        let mut inner = self.lock();
        let row = inner.rows.get_mut(&id).ok_or(JobError::NotFound(id))?;
        let now = now_ms();
        f(row, now);
        row.job.updated_at = now;
        Ok(())
    }
}

#[async_trait]
impl JobTable for MemoryJobs {
    async fn insert(&self, kind: &str, payload: &serde_json::Value) -> Result<JobId, JobError> {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let now = now_ms();
        inner.rows.insert(
            id,
            Row {
                job: Job {
                    id,
                    kind: kind.to_owned(),
                    state: JobState::Pending,
                    payload: payload.clone(),
                    attempts: 0,
                    last_error: None,
                    created_at: now,
                    updated_at: now,
                    next_attempt_at: now,
                },
                lease_owner: None,
                lease_until: None,
            },
        );
        Ok(id)
    }

    async fn claim(
        &self,
        kind: &str,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, JobError> {
        let mut inner = self.lock();
        let now = now_ms();
        let until = now.saturating_add(duration_ms(lease));
        let mut due: Vec<&mut Row> = inner
            .rows
            .values_mut()
            .filter(|r| {
                r.job.kind == kind
                    && match r.job.state {
                        JobState::Pending => r.job.next_attempt_at <= now,
                        JobState::Running => r.lease_until.is_none_or(|u| u <= now),
                        _ => false,
                    }
            })
            .collect();
        // Same order as the SQL back end: oldest due first.
        due.sort_by_key(|r| (r.job.next_attempt_at, r.job.id));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|r| {
                r.job.state = JobState::Running;
                r.job.updated_at = now;
                r.lease_owner = Some(owner.to_owned());
                r.lease_until = Some(until);
                r.job.clone()
            })
            .collect())
    }

    async fn complete(&self, id: JobId) -> Result<(), JobError> {
        self.update(id, |r, _| {
            r.job.state = JobState::Done;
            r.lease_owner = None;
            r.lease_until = None;
        })
    }

    async fn retry_later(&self, id: JobId, delay: Duration, error: &str) -> Result<(), JobError> {
        self.update(id, |r, now| {
            r.job.state = JobState::Pending;
            r.job.attempts += 1;
            r.job.last_error = Some(error.to_owned());
            r.job.next_attempt_at = now.saturating_add(duration_ms(delay));
            r.lease_owner = None;
            r.lease_until = None;
        })
    }

    async fn fail(&self, id: JobId, error: &str) -> Result<(), JobError> {
        self.update(id, |r, _| {
            r.job.state = JobState::Failed;
            r.job.last_error = Some(error.to_owned());
            r.lease_owner = None;
            r.lease_until = None;
        })
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, JobError> {
        Ok(self.lock().rows.get(&id).map(|r| r.job.clone()))
    }

    async fn list(
        &self,
        kind: Option<&str>,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>, JobError> {
        Ok(self
            .lock()
            .rows
            .values()
            .rev()
            .filter(|r| kind.is_none_or(|k| r.job.kind == k))
            .filter(|r| state.is_none_or(|s| r.job.state == s))
            .take(limit)
            .map(|r| r.job.clone())
            .collect())
    }

    async fn count(&self, kind: &str, state: JobState) -> Result<u64, JobError> {
        Ok(self
            .lock()
            .rows
            .values()
            .filter(|r| r.job.kind == kind && r.job.state == state)
            .count() as u64)
    }
}
