//! Durable store-and-forward of received instances: PS3.10 files on disk plus
//! a job row each; a forwarder sends them upstream with STOW-RS.
//!
//! Layout under `dir`:
//! - `incoming/<uuid>.part`: being received, never acknowledged (deleted on open);
//! - `ready/<uuid>.dcm`: acknowledged to the sender, waiting for the upstream;
//! - `failed/<uuid>.dcm`: permanently refused upstream, kept for operators.

mod forwarder;

pub use forwarder::{run_forwarder, ForwarderConfig};

use crate::jobs::{JobError, JobId, JobState, JobTable, NewJob, KIND_STOW};
use crate::write_behind::WriteBehind;
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;

mod housekeeping;
pub use housekeeping::{backlog, purge, retry_failed};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Jobs(#[from] crate::jobs::JobError),
}

/// What the job row records about a spooled instance.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InstanceMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub calling_ae: String,
}

/// The payload of a KIND_STOW job: `{path, sop_class_uid, sop_instance_uid,
/// transfer_syntax_uid, calling_ae}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StowPayload {
    pub path: PathBuf,
    #[serde(flatten)]
    pub meta: InstanceMeta,
}

pub struct Spool {
    dir: PathBuf,
    jobs: Arc<dyn JobTable>,
    notify: Arc<Notify>,
}

const INCOMING: &str = "incoming";
const READY: &str = "ready";
const FAILED: &str = "failed";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Spool {
    /// Create incoming/, ready/, failed/ under `dir`; delete unacknowledged
    /// partial files; record any ready file that has no job row.
    pub async fn open(dir: &Path, jobs: Arc<dyn JobTable>) -> Result<Spool, SpoolError> {
        // Absolute, so job payloads stay valid whatever the working directory.
        let dir = std::path::absolute(dir).map_err(io_err(dir))?;
        for sub in [INCOMING, READY, FAILED] {
            let p = dir.join(sub);
            tokio::fs::create_dir_all(&p).await.map_err(io_err(&p))?;
        }
        let spool = Spool {
            dir,
            jobs,
            notify: Arc::new(Notify::new()),
        };
        let removed = spool.clean_incoming().await?;
        // Sent by nobody else (they are bound to this node), and our
        // previous process is gone: no need to wait for its leases.
        let requeued = spool.jobs.requeue_node(KIND_STOW).await?;
        let (recovered, quarantined) = spool.recover_ready().await?;
        tracing::info!(
            dir = %spool.dir.display(),
            removed_partial = removed,
            requeued,
            recovered,
            quarantined,
            "spool opened"
        );
        Ok(spool)
    }

    /// The spool directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where permanently refused instances are kept.
    pub fn failed_dir(&self) -> PathBuf {
        self.dir.join(FAILED)
    }

    /// Woken on every commit, so the forwarder need not wait for its poll.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// A new temporary file in incoming/.
    pub async fn create_incoming(&self) -> Result<WriteBehind, SpoolError> {
        let path = self
            .dir
            .join(INCOMING)
            .join(format!("{}.part", uuid::Uuid::new_v4()));
        Ok(WriteBehind::new(path))
    }

    /// fsync, move into ready/, fsync the directory, insert the job row.
    /// When this returns Ok the instance survives a crash.
    pub async fn commit(
        &self,
        file: WriteBehind,
        meta: &InstanceMeta,
    ) -> Result<JobId, SpoolError> {
        let path = file.path().to_owned();
        let mut name: OsString = path.file_stem().unwrap_or(path.as_os_str()).to_owned();
        name.push(".dcm");
        let ready_dir = self.dir.join(READY);
        let ready = ready_dir.join(name);
        // Rest of the data, fsync, rename, directory fsync: one blocking hop.
        let (to, dir) = (ready.clone(), ready_dir.clone());
        let result = file
            .finish(move |handle, from| {
                handle.sync_all()?;
                std::fs::rename(from, &to)?;
                std::fs::File::open(&dir)?.sync_all()
            })
            .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(io_err(&path)(e));
        }
        let payload = StowPayload {
            path: ready.clone(),
            meta: meta.clone(),
        };
        match self.insert(&payload).await {
            Ok(id) => {
                tracing::debug!(job = id, "instance spooled");
                self.notify.notify_one();
                Ok(id)
            }
            Err(e) => {
                // Not acknowledged, so it must not be sent later either
                // (open() would otherwise recover it).
                if let Err(rm) = tokio::fs::remove_file(&ready).await {
                    tracing::warn!(path = %ready.display(), error = %rm, "cannot remove unrecorded spool file");
                }
                Err(e.into())
            }
        }
    }

    /// The job row of a spooled file: bound to this node, as the file is on
    /// this machine's disk (other instances sharing the table must not take it).
    async fn insert(&self, payload: &StowPayload) -> Result<JobId, JobError> {
        let value =
            serde_json::to_value(payload).map_err(|e| JobError::Query(format!("payload: {e}")))?;
        let job = NewJob::new(KIND_STOW, &value).node(self.jobs.node());
        self.jobs
            .add(&job)
            .await?
            .ok_or_else(|| JobError::Query("spool job without key was refused".into()))
    }

    /// Delete every incoming/*.part: none of them was acknowledged.
    async fn clean_incoming(&self) -> Result<usize, SpoolError> {
        let mut removed = 0;
        for path in list_dir(&self.dir.join(INCOMING), "part").await? {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove partial file")
                }
            }
        }
        Ok(removed)
    }

    /// Give every ready/*.dcm without a live job a new job row (a crash
    /// between rename and insert, or a table that was lost). Only this
    /// node's rows count (and unbound ones, written before nodes existed).
    async fn recover_ready(&self) -> Result<(usize, usize), SpoolError> {
        let mut known: HashSet<OsString> = HashSet::new();
        for state in [JobState::Pending, JobState::Running] {
            for job in self
                .jobs
                .list(Some(KIND_STOW), Some(state), usize::MAX)
                .await?
            {
                if job.node.as_deref().is_some_and(|n| n != self.jobs.node()) {
                    continue;
                }
                if let Some(name) = job
                    .payload
                    .get("path")
                    .and_then(|p| p.as_str())
                    .and_then(|p| Path::new(p).file_name())
                {
                    known.insert(name.to_owned());
                }
            }
        }
        let (mut recovered, mut quarantined) = (0, 0);
        for path in list_dir(&self.dir.join(READY), "dcm").await? {
            if path.file_name().is_some_and(|n| known.contains(n)) {
                continue;
            }
            match read_meta(&path).await {
                Ok(meta) => {
                    let payload = StowPayload {
                        path: path.clone(),
                        meta,
                    };
                    let id = self.insert(&payload).await?;
                    tracing::info!(job = id, file = %path.display(), "recovered spooled instance without job");
                    recovered += 1;
                }
                Err(e) => {
                    let dest = self.failed_dir().join(path.file_name().unwrap_or_default());
                    tracing::warn!(file = %path.display(), error = %e, "unreadable spooled file moved to failed/");
                    tokio::fs::rename(&path, &dest)
                        .await
                        .map_err(io_err(&path))?;
                    quarantined += 1;
                }
            }
        }
        Ok((recovered, quarantined))
    }
}

/// How many of these SOP Instance UIDs are still on their way upstream:
/// spooled (on any node sharing the table) and neither sent nor refused yet.
pub async fn in_flight(jobs: &dyn JobTable, uids: &HashSet<&str>) -> Result<usize, JobError> {
    let mut n = 0;
    for state in [JobState::Pending, JobState::Running] {
        for job in jobs.list(Some(KIND_STOW), Some(state), usize::MAX).await? {
            let uid = job.payload.get("sop_instance_uid").and_then(|u| u.as_str());
            if uid.is_some_and(|u| uids.contains(u)) {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Regular files in `dir` with this extension, sorted (oldest uuid order is
/// meaningless, but sorting keeps recovery deterministic).
async fn list_dir(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, SpoolError> {
    let mut out = Vec::new();
    let mut rd = tokio::fs::read_dir(dir).await.map_err(io_err(dir))?;
    while let Some(entry) = rd.next_entry().await.map_err(io_err(dir))? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The UIDs of a PS3.10 file, from its meta group (the data set is read
/// only up to Pixel Data, and only to prove the file is parseable).
async fn read_meta(path: &Path) -> Result<InstanceMeta, String> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let obj = dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .open_file(&p)
            .map_err(|e| e.to_string())?;
        let meta = obj.meta();
        let m = InstanceMeta {
            sop_class_uid: meta.media_storage_sop_class_uid().to_owned(),
            sop_instance_uid: meta.media_storage_sop_instance_uid().to_owned(),
            transfer_syntax_uid: meta.transfer_syntax().to_owned(),
            calling_ae: meta
                .source_application_entity_title()
                .unwrap_or_default()
                .to_owned(),
        };
        if m.sop_instance_uid.is_empty() || m.sop_class_uid.is_empty() {
            return Err("file meta lacks SOP Class/Instance UID".to_owned());
        }
        Ok(m)
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests;
