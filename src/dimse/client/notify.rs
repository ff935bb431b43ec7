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
