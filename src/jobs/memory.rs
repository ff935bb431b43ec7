//! In-memory job table: for tests and for `spool.mode = "direct"`, where
//! nothing has to survive a restart.

use super::{duration_ms, now_ms, Job, JobError, JobId, JobState, JobTable, NewJob};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

pub(super) struct MemoryJobs {
    node: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: JobId,
    rows: BTreeMap<JobId, Job>,
}

impl MemoryJobs {
    pub(super) fn new(node: &str) -> MemoryJobs {
        MemoryJobs {
            node: node.to_owned(),
            inner: Mutex::default(),
        }
    }

    /// Never held across an await; a poisoned lock only means another
    /// thread panicked mid-update, and the map itself is still consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply `f` to row `id` if `guard` accepts it; whether it did.
    fn update_if(
        &self,
        id: JobId,
        guard: impl FnOnce(&Job) -> bool,
        f: impl FnOnce(&mut Job, i64),
    ) -> bool {
        let mut inner = self.lock();
        match inner.rows.get_mut(&id) {
            Some(job) if guard(job) => {
                let now = now_ms();
                f(job, now);
                job.updated_at = now;
                true
            }
            _ => false,
        }
    }

    fn update(&self, id: JobId, f: impl FnOnce(&mut Job, i64)) -> Result<(), JobError> {
        if self.update_if(id, |_| true, f) {
            Ok(())
        } else {
            Err(JobError::NotFound(id))
        }
    }
}

fn release(job: &mut Job) {
    job.owner = None;
    job.lease_until = None;
}

#[async_trait]
impl JobTable for MemoryJobs {
    fn node(&self) -> &str {
        &self.node
    }

    async fn add(&self, new: &NewJob<'_>) -> Result<Option<JobId>, JobError> {
        let mut inner = self.lock();
        if let Some(key) = new.key {
            let taken = inner
                .rows
                .values()
                .any(|j| j.kind == new.kind && j.key.as_deref() == Some(key));
            if taken {
                return Ok(None);
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let now = now_ms();
        inner.rows.insert(
            id,
            Job {
                id,
                kind: new.kind.to_owned(),
                state: JobState::Pending,
                payload: new.payload.clone(),
                attempts: 0,
                last_error: None,
                key: new.key.map(str::to_owned),
                node: new.node.map(str::to_owned),
                owner: None,
                lease_until: None,
                created_at: now,
                updated_at: now,
                next_attempt_at: now.saturating_add(duration_ms(new.delay)),
            },
        );
        Ok(Some(id))
    }

    async fn find_by_key(&self, kind: &str, key: &str) -> Result<Option<Job>, JobError> {
        Ok(self
            .lock()
            .rows
            .values()
            .find(|j| j.kind == kind && j.key.as_deref() == Some(key))
            .cloned())
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
        let mut due: Vec<&mut Job> = inner
            .rows
            .values_mut()
            .filter(|j| {
                j.kind == kind
                    && j.node.as_ref().is_none_or(|n| *n == self.node)
                    && match j.state {
                        JobState::Pending => j.next_attempt_at <= now,
                        JobState::Running => j.lease_until.is_none_or(|u| u <= now),
                        _ => false,
                    }
            })
            .collect();
        // Same order as the SQL back ends: oldest due first.
        due.sort_by_key(|j| (j.next_attempt_at, j.id));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|j| {
                j.state = JobState::Running;
                j.updated_at = now;
                j.owner = Some(owner.to_owned());
                j.lease_until = Some(until);
                j.clone()
            })
            .collect())
    }

    async fn requeue_node(&self, kind: &str) -> Result<u64, JobError> {
        let mut inner = self.lock();
        let now = now_ms();
        let mut n = 0;
        for j in inner.rows.values_mut() {
            if j.kind == kind && j.state == JobState::Running && j.node.as_ref() == Some(&self.node)
            {
                j.state = JobState::Pending;
                j.updated_at = now;
                release(j);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn renew(&self, id: JobId, owner: &str, lease: Duration) -> Result<bool, JobError> {
        Ok(self.update_if(
            id,
            |j| j.state == JobState::Running && j.owner.as_deref() == Some(owner),
            |j, now| j.lease_until = Some(now.saturating_add(duration_ms(lease))),
        ))
    }

    async fn update_payload(
        &self,
        id: JobId,
        owner: Option<&str>,
        payload: &serde_json::Value,
    ) -> Result<bool, JobError> {
        Ok(self.update_if(
            id,
            |j| owner.is_none_or(|o| j.state == JobState::Running && j.owner.as_deref() == Some(o)),
            |j, _| j.payload = payload.clone(),
        ))
    }

    async fn complete(&self, id: JobId) -> Result<(), JobError> {
        self.update(id, |j, _| {
            j.state = JobState::Done;
            release(j);
        })
    }

    async fn retry_later(&self, id: JobId, delay: Duration, error: &str) -> Result<(), JobError> {
        self.update(id, |j, now| {
            j.state = JobState::Pending;
            j.attempts += 1;
            j.last_error = Some(error.to_owned());
            j.next_attempt_at = now.saturating_add(duration_ms(delay));
            release(j);
        })
    }

    async fn fail(&self, id: JobId, error: &str) -> Result<(), JobError> {
        self.update(id, |j, _| {
            j.state = JobState::Failed;
            j.last_error = Some(error.to_owned());
            release(j);
        })
    }

    async fn purge_finished(&self, before_ms: i64) -> Result<u64, JobError> {
        let mut inner = self.lock();
        let before = inner.rows.len();
        inner.rows.retain(|_, j| {
            !(matches!(j.state, JobState::Done | JobState::Failed) && j.updated_at < before_ms)
        });
        Ok((before - inner.rows.len()) as u64)
    }

    async fn requeue_failed(&self, id: JobId) -> Result<bool, JobError> {
        Ok(self.update_if(
            id,
            |j| j.state == JobState::Failed,
            |j, now| {
                j.state = JobState::Pending;
                j.attempts = 0;
                j.next_attempt_at = now;
                release(j);
            },
        ))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, JobError> {
        Ok(self.lock().rows.get(&id).cloned())
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
            .filter(|j| kind.is_none_or(|k| j.kind == k))
            .filter(|j| state.is_none_or(|s| j.state == s))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn count(&self, kind: &str, state: JobState) -> Result<u64, JobError> {
        Ok(self
            .lock()
            .rows
            .values()
            .filter(|j| j.kind == kind && j.state == state)
            .count() as u64)
    }
}
