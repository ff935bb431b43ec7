//! The upstream DICOMweb client (direction A): STOW-RS for now.

use std::path::PathBuf;
use std::time::Duration;

/// One PS3.10 file to send.
#[derive(Debug, Clone)]
pub struct StowItem {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// The upstream's verdict on one instance of a STOW-RS request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceOutcome {
    Stored,
    /// Stored, with Warning Reason (0008,1196).
    StoredWithWarning(u16),
    /// Failed SOP Sequence entry with Failure Reason (0008,1197).
    Failed(u16),
    /// Neither referenced nor listed as failed in the response.
    NotAcknowledged,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream configuration: {0}")]
    Config(String),
    #[error("cannot reach upstream {url}: {message}")]
    Connect { url: String, message: String },
    #[error("upstream {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("upstream {url} answered HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("upstream {url} sent a response we cannot read: {message}")]
    BadResponse { url: String, message: String },
    #[error("cannot read spooled file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl UpstreamError {
    /// Worth retrying: connection problems, timeouts, 5xx, 408 and 429.
    pub fn is_transient(&self) -> bool {
        unimplemented!()
    }
    /// The delay the upstream asked for (Retry-After), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        unimplemented!()
    }
}

pub struct UpstreamClient {}

impl UpstreamClient {
    pub fn new(config: &crate::config::UpstreamConfig) -> Result<UpstreamClient, UpstreamError> {
        let _ = config;
        unimplemented!()
    }
    /// One STOW-RS request (POST {url}/studies) carrying every item, streamed
    /// from disk; the outcome per SOP Instance UID, in the order of `items`.
    pub async fn stow(&self, items: &[StowItem]) -> Result<Vec<InstanceOutcome>, UpstreamError> {
        let _ = items;
        unimplemented!()
    }
    /// Is the upstream answering at all (for /readyz)?
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        unimplemented!()
    }
}
