//! Query/retrieve as an SCU: C-FIND, C-GET (the instances come back as
//! C-STORE requests on the same association, streamed into a
//! [`StoreTarget`]) and C-MOVE (they go to the move destination).

use super::{on_link, Link, ScuAssociation};
use crate::dicom::status::{self, StatusKind};
use crate::dicom::uid;
use crate::dimse::handler::{IncomingStore, StoreTarget};
use crate::dimse::message::{Command, CommandField, SubOperations};
use crate::dimse::pdv::{self, CommandAssembler, PduReader, RawPdu};
use crate::dimse::DimseError;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The final response of a C-GET or C-MOVE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveOutcome {
    pub status: u16,
    pub counts: SubOperations,
    pub error_comment: Option<String>,
}

/// Final responses may carry a Failed SOP Instance UID List; anything
/// bigger than this is not one.
const MAX_FINAL_DATA_SET: usize = 4 * 1024 * 1024;

/// A data set arriving on our retrieve association.
enum Incoming {
    Store(IncomingStore),
    /// The final response's data set (the failed UID list): read and dropped.
    Final {
        outcome: RetrieveOutcome,
        len: usize,
    },
}

impl ScuAssociation {
    /// A data set (identifier, event information…) encoded for the
    /// accepted context of `model`: that context's id and the bytes.
    pub(super) fn identifier(
        &self,
        model: &str,
        identifier: &InMemDicomObject,
    ) -> Result<(u8, Vec<u8>), DimseError> {
        let (pc_id, ts) = self
            .accepted_context(model)
            .ok_or_else(|| DimseError::Protocol(format!("the peer refused SOP class {model}")))?;
        let ts = TransferSyntaxRegistry
            .get(uid::trim(&ts))
            .ok_or_else(|| DimseError::Protocol(format!("unknown transfer syntax {ts}")))?;
        let mut out = Vec::with_capacity(256);
        identifier
            .write_dataset_with_ts(&mut out, ts)
            .map_err(|e| DimseError::Protocol(format!("identifier cannot be encoded: {e}")))?;
        Ok((pc_id, out))
    }

    /// C-FIND: the matches, at most `max` (C-CANCEL at the one after).
    pub async fn find(
        &mut self,
        model: &str,
        identifier: &InMemDicomObject,
        max: usize,
    ) -> Result<Vec<InMemDicomObject>, DimseError> {
        let mut search = self.find_stream(model, identifier).await?;
        let mut matches = Vec::new();
        // Cancel only on a match beyond `max`: a search that ends by itself
        // is read to its final response (a C-CANCEL after it is an error to
        // the peer).
        while let Some(m) = search.next().await? {
            if matches.len() == max {
                search.cancel().await?;
                break;
            }
            matches.push(m);
        }
        Ok(matches)
    }

    /// C-GET: each instance arrives as a C-STORE request on this association
    /// and streams into `target`; `cancel` sends C-CANCEL (then the peer's
    /// final response is still awaited).
    pub async fn get(
        &mut self,
        model: &str,
        identifier: &InMemDicomObject,
        target: &dyn StoreTarget,
        cancel: &CancellationToken,
    ) -> Result<RetrieveOutcome, DimseError> {
        let (pc_id, data) = self.identifier(model, identifier)?;
        let id = self.next_message_id();
        self.send(pc_id, &Command::c_get_rq(id, model), Some(&data))
            .await?;
        self.await_retrieve(pc_id, id, Some(target), cancel).await
    }

    /// C-MOVE with a caller-chosen message id (the sub-operations carry it
    /// back as Move Originator Message ID).
    pub async fn move_to(
        &mut self,
        model: &str,
        identifier: &InMemDicomObject,
        destination: &str,
        message_id: u16,
        cancel: &CancellationToken,
    ) -> Result<RetrieveOutcome, DimseError> {
        let (pc_id, data) = self.identifier(model, identifier)?;
        let rq = Command::c_move_rq(message_id, model, destination);
        self.send(pc_id, &rq, Some(&data)).await?;
        self.await_retrieve(pc_id, message_id, None, cancel).await
    }

    async fn await_retrieve(
        &mut self,
        pc_id: u8,
        id: u16,
        target: Option<&dyn StoreTarget>,
        cancel: &CancellationToken,
    ) -> Result<RetrieveOutcome, DimseError> {
        let mut incoming = None;
        let result = self
            .retrieve_loop(pc_id, id, target, cancel, &mut incoming)
            .await;
        // Whatever broke off, a half-received instance is not kept.
        if let Some(Incoming::Store(store)) = incoming {
            store.abort().await;
        }
        result
    }

    async fn retrieve_loop(
        &mut self,
        pc_id: u8,
        id: u16,
        target: Option<&dyn StoreTarget>,
        cancel: &CancellationToken,
        incoming: &mut Option<Incoming>,
    ) -> Result<RetrieveOutcome, DimseError> {
        let mut commands = CommandAssembler::default();
        let mut reader = PduReader::default();
        let mut cancel_sent = false;
        loop {
            let pdu = tokio::select! {
                biased;
                _ = cancel.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    debug!("sending C-CANCEL");
                    self.send(pc_id, &Command::c_cancel_rq(id), None).await?;
                    continue;
                }
                // Cancel-safe: the reader keeps partial PDUs in its buffer.
                r = tokio::time::timeout(self.timeout, on_link!(&mut self.assoc, a => reader.next(a.inner_stream()).boxed())) => r
            };
            let pdu = pdu.map_err(|_| DimseError::Timeout {
                peer: self.peer.clone(),
                secs: self.timeout.as_secs(),
            })??;
            let values = match pdu {
                RawPdu::PData(values) => values,
                RawPdu::Abort => return Err(DimseError::Aborted),
                RawPdu::Other(kind) => {
                    return Err(DimseError::Protocol(format!(
                        "unexpected PDU type {kind:02X}H during a retrieve"
                    )))
                }
            };
            for (pc, is_command, is_last, data) in values {
                let done = if is_command {
                    let pdv = PDataValue {
                        presentation_context_id: pc,
                        value_type: PDataValueType::Command,
                        is_last,
                        data: data.to_vec(),
                    };
                    match commands.push(pdv)? {
                        Some((cpc, cmd)) => self.on_command(cpc, cmd, id, target, incoming).await?,
                        None => None,
                    }
                } else {
                    self.on_data(pc, is_last, &data, incoming).await?
                };
                if let Some(outcome) = done {
                    return Ok(outcome);
                }
            }
        }
    }

    async fn on_command(
        &mut self,
        pc_id: u8,
        cmd: Command,
        id: u16,
        target: Option<&dyn StoreTarget>,
        incoming: &mut Option<Incoming>,
    ) -> Result<Option<RetrieveOutcome>, DimseError> {
        if incoming.is_some() {
            return Err(DimseError::Protocol(
                "a new command arrived before the data set was complete".into(),
            ));
        }
        match cmd.field {
            CommandField::CStoreRq => {
                let Some(target) = target else {
                    return Err(DimseError::Protocol(
                        "C-STORE request on a C-MOVE association".into(),
                    ));
                };
                let ts = self
                    .accepted_contexts()
                    .into_iter()
                    .find(|(pc, _, _)| *pc == pc_id)
                    .map(|(_, _, ts)| ts)
                    .ok_or_else(|| {
                        DimseError::Protocol(format!("C-STORE on unaccepted context {pc_id}"))
                    })?;
                if !cmd.has_data_set {
                    let rsp = Command::c_store_rsp(
                        &cmd,
                        status::storage::CANNOT_UNDERSTAND,
                        Some("C-STORE-RQ without a data set".into()),
                    );
                    on_link!(&mut self.assoc, a => pdv::send_command(a, pc_id, &rsp).await)?;
                    return Ok(None);
                }
                let sink = target.begin_store(&cmd, &ts).await;
                *incoming = Some(Incoming::Store(IncomingStore::new(pc_id, cmd, sink)));
                Ok(None)
            }
            CommandField::CGetRsp | CommandField::CMoveRsp if cmd.responding_to == Some(id) => {
                let st = cmd.status.unwrap_or(status::general::PROCESSING_FAILURE);
                if status::kind(st) == StatusKind::Pending {
                    return Ok(None);
                }
                let outcome = RetrieveOutcome {
                    status: st,
                    counts: cmd.sub_operations.unwrap_or_default(),
                    error_comment: cmd.error_comment.clone(),
                };
                if cmd.has_data_set {
                    *incoming = Some(Incoming::Final { outcome, len: 0 });
                    return Ok(None);
                }
                Ok(Some(outcome))
            }
            other => Err(DimseError::Protocol(format!(
                "unexpected {other:?} during a retrieve"
            ))),
        }
    }

    async fn on_data(
        &mut self,
        pc_id: u8,
        is_last: bool,
        data: &[u8],
        incoming: &mut Option<Incoming>,
    ) -> Result<Option<RetrieveOutcome>, DimseError> {
        match incoming.as_mut() {
            None => return Err(DimseError::Protocol("data set without a command".into())),
            Some(Incoming::Store(store)) if store.pc_id != pc_id => {
                return Err(DimseError::Protocol(
                    "data set on another presentation context than its command".into(),
                ))
            }
            Some(Incoming::Store(store)) => store.write(data).await,
            Some(Incoming::Final { len, .. }) => {
                *len += data.len();
                if *len > MAX_FINAL_DATA_SET {
                    return Err(DimseError::Protocol(
                        "final response data set larger than 4 MiB".into(),
                    ));
                }
            }
        }
        if !is_last {
            return Ok(None);
        }
        match incoming.take() {
            Some(Incoming::Store(store)) => {
                let (pc_id, rsp) = store.finish().await;
                on_link!(&mut self.assoc, a => pdv::send_command(a, pc_id, &rsp).await)?;
                Ok(None)
            }
            Some(Incoming::Final { outcome, .. }) => Ok(Some(outcome)),
            None => Ok(None),
        }
    }
}
