//! DICOM Upper Layer and DIMSE messages. Knows nothing of HTTP.
pub mod client;
pub mod handler;
pub mod listener;
pub mod message;
pub mod move_inbox;
pub mod pdv;
pub mod pool;
pub mod request;
pub mod session;
pub mod sop_classes;

/// The DIMSE room's one error type.
#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error(transparent)]
    Message(#[from] message::MessageError),
    #[error("sending to the peer failed: {0}")]
    Send(#[source] Cause),
    #[error("receiving from the peer failed: {0}")]
    Receive(#[source] Cause),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the peer aborted the association")]
    Aborted,
    #[error("reading the data set to send failed: {0}")]
    DataSource(std::io::Error),
    /// No association to the peer for now: our limit is reached and the
    /// wait ran out, or the peer refused one as transient (A-ASSOCIATE-RJ).
    #[error("{peer} is busy: {detail}")]
    Busy { peer: String, detail: String },
    #[error("cannot associate with {peer}: {message}")]
    Associate { peer: String, message: String },
    #[error("{peer} did not answer within {secs} s")]
    Timeout { peer: String, secs: u64 },
    /// The peer answered a request with a failure status.
    #[error("{operation} failed with status {status:04X}H {comment}")]
    Status {
        operation: &'static str,
        status: u16,
        comment: String,
    },
    #[error("listener I/O: {0}")]
    Listen(std::io::Error),
}

/// What broke a transfer: the UL or socket error, or our own words.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

impl DimseError {
    /// The connection broke (rather than the peer answering something).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            DimseError::Send(_) | DimseError::Receive(_) | DimseError::Aborted
        )
    }

    pub(crate) fn send(e: impl Into<Cause>) -> DimseError {
        DimseError::Send(e.into())
    }
    pub(crate) fn receive(e: impl Into<Cause>) -> DimseError {
        DimseError::Receive(e.into())
    }
}
