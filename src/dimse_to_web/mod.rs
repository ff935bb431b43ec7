//! Direction A handlers: we are a DIMSE SCP with a DICOMweb origin behind us.
//! C-ECHO is answered by the listener itself.

pub mod commit;
pub mod find;
pub mod retrieve;
pub mod route;
pub mod setup;
pub mod store;
pub mod worklist;

use crate::dicom::status;
use crate::dimse::handler::{refuse_unsupported, AssociationInfo, Refusal, ScpHandler, StoreSink};
use crate::dimse::message::{Command, CommandField};
use crate::dimse::request::RequestContext;
use async_trait::async_trait;
use dicom_dictionary_std::uids;
use std::sync::Arc;

pub struct DimseToWeb {
    pub commit: Arc<commit::Commit>,
    pub store: Arc<store::Store>,
    /// One per upstream, in `[[upstream]]` order.
    pub archives: Vec<Archive>,
    pub router: Arc<route::Router>,
}

/// What answers queries and retrieves against one upstream.
pub struct Archive {
    pub find: Arc<find::Find>,
    pub worklist: Arc<worklist::Worklist>,
    pub retrieve: Arc<retrieve::Retrieve>,
}

#[async_trait]
impl ScpHandler for DimseToWeb {
    async fn begin_store(
        &self,
        assoc: &AssociationInfo,
        rq: &Command,
        transfer_syntax_uid: &str,
    ) -> Result<Box<dyn StoreSink>, Refusal> {
        self.store.begin(assoc, rq, transfer_syntax_uid).await
    }

    async fn request(
        &self,
        assoc: &AssociationInfo,
        rq: Command,
        data_set: Vec<u8>,
        ctx: RequestContext,
    ) {
        // The listener admits only called AE titles with a route.
        let index = self.router.primary(&assoc.called_ae).unwrap_or(0);
        let Some(archive) = self.archives.get(index) else {
            return refuse_unsupported(&rq, &ctx).await;
        };
        match rq.field {
            CommandField::CFindRq
                if rq.sop_class_uid.as_deref()
                    == Some(uids::MODALITY_WORKLIST_INFORMATION_MODEL_FIND) =>
            {
                archive.worklist.run(rq, data_set, ctx).await
            }
            CommandField::CFindRq => archive.find.run(&assoc.called_ae, rq, data_set, ctx).await,
            CommandField::CGetRq | CommandField::CMoveRq => {
                archive
                    .retrieve
                    .run(&assoc.calling_ae, rq, data_set, ctx)
                    .await
            }
            CommandField::NActionRq => self.commit.run(assoc, rq, data_set, ctx).await,
            _ => refuse_unsupported(&rq, &ctx).await,
        }
    }
}

/// An Error Comment (64 characters at most) a person can act on.
pub fn upstream_comment(e: &crate::web::client::UpstreamError) -> String {
    use crate::web::client::UpstreamError as E;
    match e {
        E::Status { status, .. } => format!("archive answered HTTP {status}; retry later"),
        E::Timeout { .. } => "archive timed out; retry later".into(),
        E::Busy { .. } => "archive busy; retry later".into(),
        E::Connect { .. } => "archive unreachable; retry later".into(),
        E::BadResponse { .. } => "archive sent an unreadable answer".into(),
        E::File { .. } => "Pons cannot read its spool file".into(),
        E::Config(_) => "gateway configuration problem".into(),
        E::Token { .. } => "Pons cannot log in to the archive; retry later".into(),
    }
}

/// One C-FIND match as a pending response; on failure, the final status and
/// comment to end with.
pub async fn send_match(
    rq: &Command,
    found: &dicom_object::InMemDicomObject,
    ts: &dicom_encoding::TransferSyntax,
    ctx: &RequestContext,
) -> Result<(), (u16, Option<String>)> {
    use status::query_retrieve::UNABLE_TO_PROCESS;
    let mut bytes = Vec::new();
    if let Err(e) = found.write_dataset_with_ts(&mut bytes, ts) {
        let comment = format!("cannot encode a match: {e}");
        return Err((UNABLE_TO_PROCESS, Some(comment)));
    }
    let pending = Command::c_find_rsp(rq, status::PENDING, true);
    match ctx.respond(pending, Some(bytes)).await {
        Ok(_) => Ok(()),
        Err(_) => Err((UNABLE_TO_PROCESS, None)), // the association is gone
    }
}

/// Decode a C-FIND/C-GET/C-MOVE identifier in its context's transfer syntax
/// (which the responses use too); failures as (status, Error Comment).
pub fn read_identifier(
    data_set: &[u8],
    transfer_syntax_uid: &str,
) -> Result<
    (
        dicom_object::InMemDicomObject,
        &'static dicom_encoding::TransferSyntax,
    ),
    (u16, String),
> {
    use dicom_encoding::TransferSyntaxIndex;
    use status::query_retrieve::{IDENTIFIER_MISMATCH, UNABLE_TO_PROCESS};
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or((UNABLE_TO_PROCESS, "unsupported transfer syntax".to_owned()))?;
    let identifier = crate::dicom::lengths::read_dataset(data_set, ts)
        .map_err(|e| (IDENTIFIER_MISMATCH, format!("identifier unreadable: {e}")))?;
    Ok((identifier, ts))
}
