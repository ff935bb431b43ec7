//! SQLite job table (the embedded default). The SQL is kept portable
//! (`$n` placeholders, `UPDATE ... WHERE id IN (SELECT ...) RETURNING`) so the
//! PostgreSQL back end can share it, adding `FOR UPDATE SKIP LOCKED` to the
//! claim's inner SELECT.

use super::{duration_ms, now_ms, Job, JobError, JobId, JobState, JobTable};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use std::path::Path;
use std::time::Duration;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        lease_owner TEXT,
        lease_until BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS jobs_due ON jobs (kind, state, next_attempt_at)",
];

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

const COLUMNS: &str =
    "id, kind, state, payload, attempts, last_error, created_at, updated_at, next_attempt_at";

pub(super) struct SqliteJobs {
    pool: SqlitePool,
}

impl SqliteJobs {
    pub(super) async fn open(url: &str, path: &Path) -> Result<SqliteJobs, JobError> {
        let open_err = |message: String| JobError::Open {
            url: url.to_owned(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| open_err(format!("cannot create {}: {e}", parent.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL + NORMAL: a commit survives a crash of Pons at once and a
            // power loss after the next checkpoint. That is enough for the
            // spool, whose fsynced ready/ files are the durable record (open()
            // rebuilds any row they lack); FULL would add an fsync to every
            // C-STORE and every forwarder update.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        for stmt in SCHEMA {
            sqlx::query(stmt)
                .execute(&pool)
                .await
                .map_err(|e| open_err(e.to_string()))?;
        }
        Ok(SqliteJobs { pool })
    }

    /// An UPDATE of one row by id; NotFound when no row matched.
    async fn update_one(&self, id: JobId, query: SqliteQuery<'_>) -> Result<(), JobError> {
        let done = query.execute(&self.pool).await.map_err(query_err)?;
        if done.rows_affected() == 0 {
            Err(JobError::NotFound(id))
        } else {
            Ok(())
        }
    }
}

fn query_err(e: sqlx::Error) -> JobError {
    JobError::Query(e.to_string())
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn row_to_job(row: &SqliteRow) -> Result<Job, JobError> {
    let state: String = row.try_get("state").map_err(query_err)?;
    let payload: String = row.try_get("payload").map_err(query_err)?;
    let id: i64 = row.try_get("id").map_err(query_err)?;
    let attempts: i64 = row.try_get("attempts").map_err(query_err)?;
    Ok(Job {
        id,
        kind: row.try_get("kind").map_err(query_err)?,
        state: JobState::parse(&state)
            .ok_or_else(|| JobError::Query(format!("job {id} has unknown state {state:?}")))?,
        // A damaged payload must not jam the whole table: hand it on as
        // null and let the consumer fail that one job.
        payload: serde_json::from_str(&payload).unwrap_or_else(|e| {
            tracing::warn!(job = id, error = %e, "job payload is not valid JSON");
            serde_json::Value::Null
        }),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        last_error: row.try_get("last_error").map_err(query_err)?,
        created_at: row.try_get("created_at").map_err(query_err)?,
        updated_at: row.try_get("updated_at").map_err(query_err)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(query_err)?,
    })
}

#[async_trait]
impl JobTable for SqliteJobs {
    async fn insert(&self, kind: &str, payload: &serde_json::Value) -> Result<JobId, JobError> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO jobs (kind, state, payload, attempts, created_at, updated_at, next_attempt_at)
             VALUES ($1, 'pending', $2, 0, $3, $3, $3) RETURNING id",
        )
        .bind(kind)
        .bind(payload.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(query_err)?;
        row.try_get("id").map_err(query_err)
    }

    async fn claim(
        &self,
        kind: &str,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, JobError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let until = now.saturating_add(duration_ms(lease));
        // One statement, hence atomic: SQLite takes the write lock before
        // reading, so two claimers can never take the same row.
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, updated_at = $3
             WHERE id IN (
                 SELECT id FROM jobs
                 WHERE kind = $4
                   AND ((state = 'pending' AND next_attempt_at <= $3)
                     OR (state = 'running' AND (lease_until IS NULL OR lease_until <= $3)))
                 ORDER BY next_attempt_at, id
                 LIMIT $5)
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(until)
            .bind(now)
            .bind(kind)
            .bind(limit_i64(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err)?;
        let mut jobs = rows.iter().map(row_to_job).collect::<Result<Vec<_>, _>>()?;
        // RETURNING order is unspecified.
        jobs.sort_by_key(|j| (j.next_attempt_at, j.id));
        Ok(jobs)
    }

    async fn complete(&self, id: JobId) -> Result<(), JobError> {
        self.update_one(
            id,
            sqlx::query(
                "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_until = NULL,
                 updated_at = $1 WHERE id = $2",
            )
            .bind(now_ms())
            .bind(id),
        )
        .await
    }

    async fn retry_later(&self, id: JobId, delay: Duration, error: &str) -> Result<(), JobError> {
        let now = now_ms();
        self.update_one(
            id,
            sqlx::query(
                "UPDATE jobs SET state = 'pending', attempts = attempts + 1, last_error = $1,
                 lease_owner = NULL, lease_until = NULL, updated_at = $2, next_attempt_at = $3
                 WHERE id = $4",
            )
            .bind(error)
            .bind(now)
            .bind(now.saturating_add(duration_ms(delay)))
            .bind(id),
        )
        .await
    }

    async fn fail(&self, id: JobId, error: &str) -> Result<(), JobError> {
        self.update_one(
            id,
            sqlx::query(
                "UPDATE jobs SET state = 'failed', last_error = $1, lease_owner = NULL,
                 lease_until = NULL, updated_at = $2 WHERE id = $3",
            )
            .bind(error)
            .bind(now_ms())
            .bind(id),
        )
        .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, JobError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err)?;
        row.as_ref().map(row_to_job).transpose()
    }

    async fn list(
        &self,
        kind: Option<&str>,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>, JobError> {
        // NULL parameters mean "any", which keeps this one static statement.
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs
             WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR state = $2)
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(kind)
        .bind(state.map(JobState::as_str))
        .bind(limit_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err)?;
        rows.iter().map(row_to_job).collect()
    }

    async fn count(&self, kind: &str, state: JobState) -> Result<u64, JobError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = $1 AND state = $2")
            .bind(kind)
            .bind(state.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(query_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
