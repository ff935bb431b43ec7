//! N-EVENT-REPORT as the requester: a storage commitment SCP reports its
//! result on a new association to the SCU.

use super::{Proposal, ScuAssociation, ScuConfig};
use crate::dimse::message::{Command, CommandField};
use crate::dimse::DimseError;
use dicom_object::InMemDicomObject;

impl ScuAssociation {
    /// Associate proposing `sop_class` with the SCP role for us (SCP/SCU
    /// Role Selection: the report goes from the SCP to the SCU, against the
    /// usual direction of an association).
    pub async fn connect_as_scp(
        config: &ScuConfig,
        sop_class: &str,
    ) -> Result<ScuAssociation, DimseError> {
        let proposal = Proposal::uncompressed(sop_class);
        Self::connect_with_roles(config, &[proposal], &[sop_class.to_owned()]).await
    }

    /// Send N-EVENT-REPORT-RQ with its event information; the response.
    pub async fn event_report(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        event_type: u16,
        information: &InMemDicomObject,
    ) -> Result<Command, DimseError> {
        let (pc_id, data) = self.identifier(sop_class, information)?;
        let id = self.next_message_id();
        let rq = Command::n_event_report_rq(id, sop_class, sop_instance, event_type);
        self.send(pc_id, &rq, Some(&data)).await?;
        let rsp = self.receive().await?.command;
        if rsp.field != CommandField::NEventReportRsp || rsp.responding_to != Some(id) {
            return Err(DimseError::Protocol(format!(
                "expected N-EVENT-REPORT-RSP to message {id}, got {:?}",
                rsp.field
            )));
        }
        Ok(rsp)
    }
}

impl ScuAssociation {
    /// Send N-ACTION-RQ with its action information; the response.
    pub async fn action(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        action_type: u16,
        information: &InMemDicomObject,
    ) -> Result<Command, DimseError> {
        let (pc_id, data) = self.identifier(sop_class, information)?;
        let id = self.next_message_id();
        let rq = Command::n_action_rq(id, sop_class, sop_instance, action_type);
        self.send(pc_id, &rq, Some(&data)).await?;
        let rsp = self.receive().await?.command;
        if rsp.field != CommandField::NActionRsp || rsp.responding_to != Some(id) {
            return Err(DimseError::Protocol(format!(
                "expected N-ACTION-RSP to message {id}, got {:?}",
                rsp.field
            )));
        }
        Ok(rsp)
    }

    /// Wait for the peer's N-EVENT-REPORT-RQ on this association and answer
    /// it with `status`: the request and its event information.
    pub async fn event_report_from_peer(
        &mut self,
        sop_class: &str,
        status: u16,
    ) -> Result<(Command, Vec<u8>), DimseError> {
        let rq = self.receive().await?;
        if rq.command.field != CommandField::NEventReportRq {
            return Err(DimseError::Protocol(format!(
                "expected N-EVENT-REPORT-RQ, got {:?}",
                rq.command.field
            )));
        }
        let (pc_id, _) = self
            .accepted_context(sop_class)
            .ok_or_else(|| DimseError::Protocol(format!("no context for {sop_class}")))?;
        let rsp = Command::n_event_report_rsp(&rq.command, status);
        self.send(pc_id, &rsp, None).await?;
        Ok((rq.command, rq.data_set.unwrap_or_default()))
    }
}
