//! Durable store-and-forward of received instances: PS3.10 files on disk plus
//! a job row each; a forwarder sends them upstream with STOW-RS.

use crate::jobs::{JobId, JobTable};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

pub struct Spool {
    dir: PathBuf,
    jobs: Arc<dyn JobTable>,
}

/// A file being received; becomes durable only through `Spool::commit`.
pub struct IncomingFile {
    pub path: PathBuf,
    pub file: tokio::fs::File,
}

impl Spool {
    /// Create incoming/, ready/, failed/ under `dir`; delete unacknowledged
    /// partial files; record any ready file that has no job row.
    pub async fn open(dir: &Path, jobs: Arc<dyn JobTable>) -> Result<Spool, SpoolError> {
        let _ = (dir, jobs);
        unimplemented!()
    }
    /// A new temporary file in incoming/.
    pub async fn create_incoming(&self) -> Result<IncomingFile, SpoolError> {
        unimplemented!()
    }
    /// fsync, move into ready/, fsync the directory, insert the job row.
    /// When this returns Ok the instance survives a crash.
    pub async fn commit(
        &self,
        file: IncomingFile,
        meta: &InstanceMeta,
    ) -> Result<JobId, SpoolError> {
        let _ = (file, meta, &self.dir, &self.jobs);
        unimplemented!()
    }
    /// Remove a file that will not be acknowledged.
    pub async fn discard(&self, file: IncomingFile) {
        let _ = file;
    }
}
