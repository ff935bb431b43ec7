//! Job-table housekeeping: finished jobs leave after `[jobs]
//! retention_days` (with the refused files kept in the spool's failed/ as
//! long), and an operator sends a failed instance again once the cause is
//! fixed (`pons jobs purge`, `pons jobs retry`).

use super::{StowPayload, FAILED};
use crate::jobs::{JobId, JobState, JobTable, KIND_STOW};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Delete finished jobs and refused files older than `age`: (jobs, files).
pub async fn purge(
    jobs: &dyn JobTable,
    spool_dirs: &[PathBuf],
    age: Duration,
) -> Result<(u64, u64), String> {
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let cutoff_ms = cutoff
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let rows = jobs
        .purge_finished(cutoff_ms)
        .await
        .map_err(|e| e.to_string())?;
    let mut files = 0;
    for spool_dir in spool_dirs {
        let Ok(mut dir) = tokio::fs::read_dir(spool_dir.join(FAILED)).await else {
            continue;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let old = entry
                .metadata()
                .await
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
                files += 1;
            }
        }
    }
    Ok((rows, files))
}

/// Make failed job `id` pending again; for a refused spooled instance, its
/// file goes back from failed/ to where the job expects it.
pub async fn retry_failed(jobs: &dyn JobTable, id: JobId) -> Result<String, String> {
    let job = jobs
        .get(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no job {id}"))?;
    if job.state != JobState::Failed {
        return Err(format!(
            "job {id} is {}, not failed: nothing to retry",
            job.state.as_str()
        ));
    }
    let mut moved = None;
    if job.kind.starts_with(KIND_STOW) {
        let payload: StowPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| format!("job {id} has no spooled file: {e}"))?;
        if !payload.path.exists() {
            // ready/x.dcm went to failed/x.dcm of the same spool.
            let name = payload.path.file_name().unwrap_or_default();
            let spool_dir = payload
                .path
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."));
            let refused = spool_dir.join(FAILED).join(name);
            moved = Some((payload.path.clone(), refused.clone()));
            tokio::fs::rename(&refused, &payload.path)
                .await
                .map_err(|e| {
                    format!(
                        "the file of job {id} is neither at {} nor at {}: {e}",
                        payload.path.display(),
                        refused.display()
                    )
                })?;
        }
    }
    if !jobs.requeue_failed(id).await.unwrap_or(false) {
        // Put the file back: ready/ would send it again at the next start.
        if let Some((back, refused)) = moved {
            let _ = tokio::fs::rename(back, refused).await;
        }
        return Err(format!(
            "job {id} could not be requeued (changed meanwhile?); look again"
        ));
    }
    Ok(format!("job {id} ({}) is pending again", job.kind))
}

/// Bytes waiting in ready/, and how long the oldest has waited (for the
/// metrics).
pub async fn backlog(spool_dir: &Path) -> (u64, Duration) {
    let (mut bytes, mut oldest) = (0, Duration::ZERO);
    if let Ok(mut dir) = tokio::fs::read_dir(spool_dir.join(super::READY)).await {
        while let Ok(Some(entry)) = dir.next_entry().await {
            if let Ok(meta) = entry.metadata().await {
                bytes += meta.len();
                let age = meta.modified().ok().and_then(|t| t.elapsed().ok());
                oldest = oldest.max(age.unwrap_or_default());
            }
        }
    }
    (bytes, oldest)
}
