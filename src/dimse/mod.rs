//! DICOM Upper Layer and DIMSE messages. Knows nothing of HTTP.
pub mod client;
pub mod listener;
pub mod message;
pub mod move_inbox;
pub mod pdv;
pub mod request;
pub mod scan;
pub mod session;
pub mod sop_classes;
pub mod status;

/// The DIMSE room's one error type.
#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error(transparent)]
    Message(#[from] message::MessageError),
    #[error("sending to the peer failed: {0}")]
    Send(String),
    #[error("receiving from the peer failed: {0}")]
    Receive(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the peer aborted the association")]
    Aborted,
    #[error("reading the data set to send failed: {0}")]
    DataSource(std::io::Error),
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

impl DimseError {
    pub(crate) fn send(e: dicom_ul::association::Error) -> DimseError {
        DimseError::Send(e.to_string())
    }
    pub(crate) fn receive(e: dicom_ul::association::Error) -> DimseError {
        DimseError::Receive(e.to_string())
    }
}
