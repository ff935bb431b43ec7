//! C-FIND as an SCU: send the identifier, then read matches one at a time so
//! that the caller can stop early (C-CANCEL) without holding them all.

use super::{Proposal, ScuAssociation};
use crate::dicom::status::{self, StatusKind};
use crate::dicom::uid;
use crate::dimse::message::{Command, CommandField};
use crate::dimse::DimseError;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::{TransferSyntax, TransferSyntaxIndex};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Study Root Query/Retrieve FIND, in either little endian syntax.
pub fn study_root_find_proposal() -> Proposal {
    Proposal::uncompressed(uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND)
}

/// A C-FIND in progress on an association.
pub struct FindStream<'a> {
    assoc: &'a mut ScuAssociation,
    pc_id: u8,
    ts: &'static TransferSyntax,
    message_id: u16,
    done: bool,
}

impl ScuAssociation {
    /// Send C-FIND-RQ with `identifier` on the accepted context of `sop_class`.
    pub async fn find_stream(
        &mut self,
        sop_class: &str,
        identifier: &InMemDicomObject,
    ) -> Result<FindStream<'_>, DimseError> {
        let (pc_id, ts_uid) = self.accepted_context(sop_class).ok_or_else(|| {
            DimseError::Protocol(format!("the peer refused C-FIND for {sop_class}"))
        })?;
        let ts = TransferSyntaxRegistry
            .get(uid::trim(&ts_uid))
            .ok_or_else(|| DimseError::Protocol(format!("unknown transfer syntax {ts_uid}")))?;
        let mut bytes = Vec::new();
        identifier
            .write_dataset_with_ts(&mut bytes, ts)
            .map_err(|e| DimseError::Protocol(format!("cannot encode the identifier: {e}")))?;
        let message_id = self.next_message_id();
        self.send(
            pc_id,
            &Command::c_find_rq(message_id, sop_class),
            Some(&bytes),
        )
        .await?;
        Ok(FindStream {
            assoc: self,
            pc_id,
            ts,
            message_id,
            done: false,
        })
    }
}

impl FindStream<'_> {
    /// The next match, its text in UTF-8 whatever character set the peer
    /// used; `None` once the final response says the search is over.
    /// A failure status becomes [`DimseError::Status`] with its Error Comment.
    pub async fn next(&mut self) -> Result<Option<InMemDicomObject>, DimseError> {
        while !self.done {
            let rsp = self.assoc.receive().await?;
            let cmd = &rsp.command;
            if cmd.field != CommandField::CFindRsp || cmd.responding_to != Some(self.message_id) {
                self.done = true;
                return Err(DimseError::Protocol(format!(
                    "expected C-FIND-RSP to message {}, got {:?}",
                    self.message_id, cmd.field
                )));
            }
            let status = cmd
                .status
                .ok_or_else(|| DimseError::Protocol("C-FIND-RSP without a status".into()))?;
            match status::kind(status) {
                StatusKind::Pending => {
                    // A pending response without an identifier carries nothing to pass on.
                    if let Some(data) = rsp.data_set {
                        return self.decode(&data).map(Some);
                    }
                }
                // Some peers attach data to the final response: ignored.
                StatusKind::Success | StatusKind::Warning | StatusKind::Cancel => self.done = true,
                StatusKind::Failure => {
                    self.done = true;
                    return Err(DimseError::Status {
                        operation: "C-FIND",
                        status,
                        comment: cmd.error_comment.clone().unwrap_or_default(),
                    });
                }
            }
        }
        Ok(None)
    }

    /// Stop the search: C-CANCEL-RQ, then read (and drop) what the peer
    /// still sends until its final response.
    pub async fn cancel(&mut self) -> Result<(), DimseError> {
        if self.done {
            return Ok(());
        }
        let cancel = Command::c_cancel_rq(self.message_id);
        self.assoc.send(self.pc_id, &cancel, None).await?;
        while self.next().await?.is_some() {}
        Ok(())
    }

    fn decode(&self, data: &[u8]) -> Result<InMemDicomObject, DimseError> {
        let mut obj = crate::dicom::lengths::read_dataset(data, self.ts)
            .map_err(|e| DimseError::Protocol(format!("unreadable C-FIND identifier: {e}")))?;
        // The decoder turned the peer's character set into Rust strings.
        if obj.get(tags::SPECIFIC_CHARACTER_SET).is_some() {
            obj.put(DataElement::new(
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                PrimitiveValue::from("ISO_IR 192"),
            ));
        }
        Ok(obj)
    }
}
