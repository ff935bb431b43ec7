//! What a request handler (C-FIND, C-GET, C-MOVE, N-ACTION) gets: a way to
//! send responses and sub-operations back on the association, the signal
//! that the requester sent C-CANCEL, and a handle to send requests of our
//! own on the association later (an N-EVENT-REPORT after an N-ACTION). The
//! handler runs as its own task while the association keeps reading, so
//! C-CANCEL arrives while results stream out.

use super::message::Command;
use super::DimseError;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Data set bytes to send after a command.
pub enum DataSource {
    Bytes(Vec<u8>),
    /// Streamed (a C-STORE sub-operation of a C-GET), fragment by fragment.
    Stream(Box<dyn AsyncRead + Send + Unpin>),
}

pub(crate) struct Outgoing {
    pub pc_id: u8,
    pub command: Command,
    pub data: Option<DataSource>,
    /// Where the peer's response to this command goes (sub-operations only).
    pub reply: Option<oneshot::Sender<Command>>,
    /// Told once the message has left (or failed to).
    pub sent: oneshot::Sender<Result<(), String>>,
}

/// A negotiated presentation context, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Context {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
}

pub struct RequestContext {
    /// The request's own presentation context.
    pub pc_id: u8,
    pub transfer_syntax: String,
    /// Every accepted context of the association (C-GET picks from these).
    pub contexts: Vec<Context>,
    pub cancelled: CancellationToken,
    /// For requests of our own on this association, after this one is done.
    pub association: AssociationHandle,
    pub(crate) out: mpsc::Sender<Outgoing>,
}

impl RequestContext {
    async fn push(
        &self,
        pc_id: u8,
        command: Command,
        data: Option<DataSource>,
        reply: Option<oneshot::Sender<Command>>,
    ) -> Result<(), DimseError> {
        let (sent, done) = oneshot::channel();
        let msg = Outgoing {
            pc_id,
            command,
            data,
            reply,
            sent,
        };
        self.out
            .send(msg)
            .await
            .map_err(|_| DimseError::send("association closed"))?;
        done.await
            .map_err(|_| DimseError::send("association closed"))?
            .map_err(DimseError::send)
    }

    /// Send a response (pending or final) to the request.
    pub async fn respond(
        &self,
        command: Command,
        data_set: Option<Vec<u8>>,
    ) -> Result<(), DimseError> {
        self.push(self.pc_id, command, data_set.map(DataSource::Bytes), None)
            .await
    }

    /// Send a C-STORE-RQ on this association (C-GET) and wait for its response.
    pub async fn store_sub_operation(
        &self,
        pc_id: u8,
        rq: Command,
        data: DataSource,
    ) -> Result<Command, DimseError> {
        let (reply, response) = oneshot::channel();
        self.push(pc_id, rq, Some(data), Some(reply)).await?;
        response
            .await
            .map_err(|_| DimseError::receive("association closed before the C-STORE-RSP"))
    }
}

/// Sends requests of ours on an association the peer opened (N-EVENT-REPORT
/// on the association of the N-ACTION), for as long as it stays open.
#[derive(Clone)]
pub struct AssociationHandle {
    pub(crate) out: mpsc::Sender<Outgoing>,
    next_id: Arc<AtomicU16>,
}

/// Our message IDs on a peer's association start here, well clear of the
/// C-GET sub-operations, which reuse the (small) ID of their C-GET-RQ.
const FIRST_OWN_MESSAGE_ID: u16 = 0xC000;

impl AssociationHandle {
    pub(crate) fn new(out: mpsc::Sender<Outgoing>) -> AssociationHandle {
        AssociationHandle {
            out,
            next_id: Arc::new(AtomicU16::new(FIRST_OWN_MESSAGE_ID)),
        }
    }

    /// False once the association has ended.
    pub fn is_open(&self) -> bool {
        !self.out.is_closed()
    }

    pub fn next_message_id(&self) -> u16 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        id.max(FIRST_OWN_MESSAGE_ID)
    }

    /// Send a request with its data set on context `pc_id`; its response,
    /// or an error when the association ends or `timeout` passes first.
    pub async fn request(
        &self,
        pc_id: u8,
        command: Command,
        data_set: Vec<u8>,
        timeout: Duration,
    ) -> Result<Command, DimseError> {
        let closed = || DimseError::send("association closed");
        let (sent, done) = oneshot::channel();
        let (reply, response) = oneshot::channel();
        let msg = Outgoing {
            pc_id,
            command,
            data: Some(DataSource::Bytes(data_set)),
            reply: Some(reply),
            sent,
        };
        self.out.send(msg).await.map_err(|_| closed())?;
        done.await
            .map_err(|_| closed())?
            .map_err(DimseError::send)?;
        match tokio::time::timeout(timeout, response).await {
            Ok(Ok(rsp)) => Ok(rsp),
            Ok(Err(_)) => Err(DimseError::receive(
                "association closed before the response",
            )),
            Err(_) => Err(DimseError::Timeout {
                peer: "the requester".into(),
                secs: timeout.as_secs(),
            }),
        }
    }
}
