//! The SCP contract: what a direction plugs into the listener, and the
//! pieces a C-STORE data set flows through on its way to a sink.

use super::message::Command;
use super::request::RequestContext;
use crate::dicom::status;
use async_trait::async_trait;
use std::net::SocketAddr;

/// Who is on the other end of an association.
#[derive(Debug, Clone)]
pub struct AssociationInfo {
    pub id: u64,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: SocketAddr,
}

/// A failure status with the Error Comment that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub comment: String,
}

impl Refusal {
    pub fn new(status: u16, comment: impl Into<String>) -> Refusal {
        Refusal {
            status,
            comment: comment.into(),
        }
    }
}

/// The final word on one C-STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOutcome {
    pub status: u16,
    pub comment: Option<String>,
}

impl From<Refusal> for StoreOutcome {
    fn from(r: Refusal) -> Self {
        StoreOutcome {
            status: r.status,
            comment: Some(r.comment),
        }
    }
}

/// Where the bytes of one incoming C-STORE data set go.
#[async_trait]
pub trait StoreSink: Send {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Refusal>;
    /// The last byte is in: make it durable (or deliver it) and say how it went.
    async fn finish(self: Box<Self>) -> StoreOutcome;
    /// The transfer broke off: nothing of it may be kept.
    async fn abort(self: Box<Self>);
}

/// The Affected SOP Class and Instance UIDs of a C-STORE-RQ: every sink
/// names its file by them and checks the data set against them.
pub fn store_uids(rq: &Command) -> Result<(&str, &str), Refusal> {
    match (&rq.sop_class_uid, &rq.sop_instance_uid) {
        (Some(class), Some(instance)) => Ok((class, instance)),
        _ => Err(Refusal::new(
            status::storage::CANNOT_UNDERSTAND,
            "C-STORE-RQ lacks the Affected SOP Class or Instance UID",
        )),
    }
}

/// One C-STORE data set arriving, on our SCP side or as a C-GET/C-MOVE
/// sub-operation: its sink, or once refused, why (the rest is drained).
pub struct IncomingStore {
    pub pc_id: u8,
    pub rq: Command,
    sink: Result<Box<dyn StoreSink>, Refusal>,
    /// Reads the Study Instance UID as the data set passes, for the audit log.
    study_scan: Option<Box<crate::dicom::scan::DatasetScanner>>,
}

impl IncomingStore {
    pub fn new(pc_id: u8, rq: Command, sink: Result<Box<dyn StoreSink>, Refusal>) -> Self {
        IncomingStore {
            pc_id,
            rq,
            sink,
            study_scan: None,
        }
    }

    /// Note the study of the data set as it arrives (in `transfer_syntax`).
    pub fn scan_study(&mut self, transfer_syntax: &str) {
        self.study_scan = crate::dicom::scan::DatasetScanner::new(transfer_syntax).map(Box::new);
    }

    pub fn study(&self) -> Option<String> {
        self.study_scan
            .as_ref()
            .and_then(|s| s.uids().study_instance_uid.clone())
    }

    /// The next bytes; a sink that refuses them is aborted.
    pub async fn write(&mut self, chunk: &[u8]) {
        if let Some(scan) = self.study_scan.as_mut().filter(|s| !s.uids_known()) {
            scan.feed(chunk);
        }
        let Ok(sink) = &mut self.sink else { return };
        if let Err(r) = sink.write(chunk).await {
            if let Ok(s) = std::mem::replace(&mut self.sink, Err(r)) {
                s.abort().await;
            }
        }
    }

    /// The transfer broke off: nothing of it is kept.
    pub async fn abort(self) {
        if let Ok(s) = self.sink {
            s.abort().await;
        }
    }

    /// The last byte is in: the C-STORE-RSP to send, on `pc_id`.
    pub async fn finish(self) -> (u8, Command) {
        let outcome = match self.sink {
            Ok(sink) => sink.finish().await,
            Err(refusal) => refusal.into(),
        };
        let rsp = Command::c_store_rsp(&self.rq, outcome.status, outcome.comment);
        (self.pc_id, rsp)
    }
}

/// Where the C-STORE sub-operations of one retrieval of ours go: back on
/// our C-GET association, or into our listener for a C-MOVE to our own AE.
#[async_trait]
pub trait StoreTarget: Send + Sync {
    async fn begin_store(
        &self,
        rq: &Command,
        transfer_syntax_uid: &str,
    ) -> Result<Box<dyn StoreSink>, Refusal>;
}

/// What a direction plugs into the listener.
#[async_trait]
pub trait ScpHandler: Send + Sync + 'static {
    /// May the calling AE ask for this at all? Asked before any request
    /// (C-ECHO included) is begun; the refusal is its answer.
    fn authorize(&self, assoc: &AssociationInfo, rq: &Command) -> Result<(), Refusal> {
        let _ = (assoc, rq);
        Ok(())
    }

    async fn begin_store(
        &self,
        assoc: &AssociationInfo,
        rq: &Command,
        transfer_syntax_uid: &str,
    ) -> Result<Box<dyn StoreSink>, Refusal>;

    /// C-FIND, C-GET, C-MOVE, N-ACTION…: runs as its own task; answers
    /// through `ctx`. The default refuses clearly, so nothing hangs.
    async fn request(
        &self,
        assoc: &AssociationInfo,
        rq: Command,
        data_set: Vec<u8>,
        ctx: RequestContext,
    ) {
        let _ = (assoc, data_set);
        refuse_unsupported(&rq, &ctx).await;
    }
}

/// Answer a request this gateway does not implement with a clear failure.
pub async fn refuse_unsupported(rq: &Command, ctx: &RequestContext) {
    let comment = format!("{:?} is not supported by this gateway yet", rq.field);
    let rsp = Command::failure_response(rq, status::general::UNRECOGNIZED_OPERATION, comment);
    let _ = ctx.respond(rsp, None).await;
}
