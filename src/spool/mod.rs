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
    /// The job kind of this spool's instances (one per upstream).
    kind: String,
    jobs: Arc<dyn JobTable>,
    notify: Arc<Notify>,
}

/// One upstream's spool: its name, directory and job kind.
#[derive(Debug, Clone)]
pub struct SpoolPlace {
    pub upstream: String,
    pub dir: PathBuf,
    pub kind: String,
}

/// Where each upstream's instances wait: the first upstream's in
/// `spool.dir` itself with job kind "stow" (as before routing), each
/// other's in `spool.dir/upstream-{name}` with kind "stow:{name}".
pub fn layout(config: &crate::config::Config) -> Vec<SpoolPlace> {
    config
        .upstream
        .iter()
        .enumerate()
        .map(|(i, u)| SpoolPlace {
            upstream: u.name.clone(),
            dir: if i == 0 {
                config.spool.dir.clone()
            } else {
                config.spool.dir.join(format!("upstream-{}", u.name))
            },
            kind: if i == 0 {
                KIND_STOW.to_owned()
            } else {
                format!("{KIND_STOW}:{}", u.name)
            },
        })
        .collect()
}

/// Which upstream the instances in `spool.dir` itself are for.
const OWNER_FILE: &str = "UPSTREAM";

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
        Self::open_for(dir, KIND_STOW, jobs).await
    }

    /// A spool whose jobs are of `kind` (see [`layout`]).
    pub async fn open_for(
        dir: &Path,
        kind: &str,
        jobs: Arc<dyn JobTable>,
    ) -> Result<Spool, SpoolError> {
        // Absolute, so job payloads stay valid whatever the working directory.
        let dir = std::path::absolute(dir).map_err(io_err(dir))?;
        for sub in [INCOMING, READY, FAILED] {
            let p = dir.join(sub);
            tokio::fs::create_dir_all(&p).await.map_err(io_err(&p))?;
        }
        let spool = Spool {
            dir,
            kind: kind.to_owned(),
            jobs,
            notify: Arc::new(Notify::new()),
        };
        let removed = spool.clean_incoming().await?;
        // Sent by nobody else (they are bound to this node), and our
        // previous process is gone: no need to wait for its leases.
        let requeued = spool.jobs.requeue_node(&spool.kind).await?;
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

    /// The job kind of this spool's instances.
    pub fn kind(&self) -> &str {
        &self.kind
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
        self.commit_with(file, meta, &[]).await
    }

    /// [`Spool::commit`], and into each of `others`' ready/ too (hard links:
    /// one copy on disk, every spool drained on its own), a job row each.
    /// All spools must be on one file system (they are all under `spool.dir`).
    pub async fn commit_with(
        &self,
        file: WriteBehind,
        meta: &InstanceMeta,
        others: &[&Spool],
    ) -> Result<JobId, SpoolError> {
        let path = file.path().to_owned();
        let mut name: OsString = path.file_stem().unwrap_or(path.as_os_str()).to_owned();
        name.push(".dcm");
        let ready = self.dir.join(READY).join(&name);
        let links: Vec<PathBuf> = others
            .iter()
            .map(|o| o.dir.join(READY).join(&name))
            .collect();
        let mut dirs: Vec<PathBuf> = vec![self.dir.join(READY)];
        dirs.extend(others.iter().map(|o| o.dir.join(READY)));
        // Rest of the data, fsync, rename, links, directory fsyncs: one
        // blocking hop. Renamed first: after a crash before the links, only
        // the first spool has it (unacknowledged: the sender sends it again).
        let (to, linked) = (ready.clone(), links.clone());
        let result = file
            .finish(move |handle, from| {
                handle.sync_all()?;
                std::fs::rename(from, &to)?;
                for link in &linked {
                    std::fs::hard_link(&to, link)?;
                }
                for dir in &dirs {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            for p in links.iter().chain([&path, &ready]) {
                let _ = tokio::fs::remove_file(p).await;
            }
            return Err(io_err(&path)(e));
        }
        let mut id = None;
        for (spool, file) in
            std::iter::once((self, &ready)).chain(others.iter().copied().zip(&links))
        {
            let payload = StowPayload {
                path: file.clone(),
                meta: meta.clone(),
            };
            match spool.insert(&payload).await {
                Ok(job) => {
                    tracing::debug!(job, kind = %spool.kind, "instance spooled");
                    spool.notify.notify_one();
                    id.get_or_insert(job);
                }
                Err(e) => {
                    // Not acknowledged, so it must not be sent later either
                    // (open() would otherwise recover it). Spools already
                    // recorded send it: the sender's retry makes a duplicate
                    // there, which STOW-RS stores once.
                    let unrecorded = std::iter::once(&ready)
                        .chain(&links)
                        .skip_while(|p| *p != file);
                    for p in unrecorded {
                        if let Err(rm) = tokio::fs::remove_file(p).await {
                            tracing::warn!(path = %p.display(), error = %rm, "cannot remove unrecorded spool file");
                        }
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(id.unwrap_or_default())
    }

    /// `spool.dir` holds the first upstream's instances: with several
    /// upstreams, refuse to start when some still wait that were spooled for
    /// another (the `[[upstream]]` list was reordered, or the first replaced)
    /// rather than send them to the wrong archive. The first upstream's name
    /// is recorded here; a spool from before routing has none. A single
    /// upstream takes what waits, as before routing (its URL may have been
    /// corrected).
    pub async fn check_owner(&self, name: &str, several: bool) -> Result<(), String> {
        let file = self.dir.join(OWNER_FILE);
        let before = tokio::fs::read_to_string(&file).await.unwrap_or_default();
        let before = before.trim();
        if several && before != name {
            let waiting = list_dir(&self.dir.join(READY), "dcm")
                .await
                .map_err(|e| e.to_string())?
                .len();
            if waiting > 0 {
                let whom = if before.is_empty() {
                    "the single [upstream] of an older configuration".to_owned()
                } else {
                    format!("upstream {before:?}")
                };
                return Err(format!(
                    "{} holds {waiting} instance(s) spooled for {whom}, but the first [[upstream]] \
                     is now {name:?}: put that archive first (under that name) until they are sent",
                    self.dir.display()
                ));
            }
        }
        tokio::fs::write(&file, format!("{name}\n"))
            .await
            .map_err(|e| format!("cannot write {}: {e}", file.display()))
    }

    /// The job row of a spooled file: bound to this node, as the file is on
    /// this machine's disk (other instances sharing the table must not take it).
    async fn insert(&self, payload: &StowPayload) -> Result<JobId, JobError> {
        let value =
            serde_json::to_value(payload).map_err(|e| JobError::Query(format!("payload: {e}")))?;
        let job = NewJob::new(&self.kind, &value).node(self.jobs.node());
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
                .list(Some(&self.kind), Some(state), usize::MAX)
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

/// How many of these SOP Instance UIDs are still on their way to the
/// upstreams whose spools have these job kinds: spooled (on any node
/// sharing the table) and neither sent nor refused yet.
pub async fn in_flight(
    jobs: &dyn JobTable,
    kinds: &[String],
    uids: &HashSet<&str>,
) -> Result<usize, JobError> {
    let mut n = 0;
    for (kind, state) in kinds
        .iter()
        .flat_map(|k| [(k, JobState::Pending), (k, JobState::Running)])
    {
        for job in jobs.list(Some(kind), Some(state), usize::MAX).await? {
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
