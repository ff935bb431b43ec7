//! Direction A handlers: we are a DIMSE SCP with a DICOMweb origin behind us.
//! C-ECHO is answered by the listener itself.

pub mod store;

use crate::dimse::listener::{AssociationInfo, Refusal, ScpHandler, StoreSink};
use crate::dimse::message::Command;
use async_trait::async_trait;
use std::sync::Arc;

pub struct DimseToWeb {
    pub store: Arc<store::Store>,
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
}
