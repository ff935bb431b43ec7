//! What a request handler (C-FIND, C-GET, C-MOVE) gets: a way to send
//! responses and sub-operations back on the association, and the signal that
//! the requester sent C-CANCEL. The handler runs as its own task while the
//! association keeps reading, so C-CANCEL arrives while results stream out.

use super::message::Command;
use super::DimseError;
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
            .map_err(|_| DimseError::Send("association closed".into()))?;
        done.await
            .map_err(|_| DimseError::Send("association closed".into()))?
            .map_err(DimseError::Send)
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
            .map_err(|_| DimseError::Receive("association closed before the C-STORE-RSP".into()))
    }
}
