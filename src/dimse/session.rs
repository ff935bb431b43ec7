//! One association's state machine: PDUs in, calls on the [`ScpHandler`],
//! responses out. C-STORE data sets stream into a sink; other requests run as
//! their own task (see [`super::request`]) while this loop keeps reading, so
//! C-CANCEL and the C-STORE-RSPs of C-GET sub-operations get through. Requests
//! of our own (N-EVENT-REPORT) come in through an [`AssociationHandle`] at
//! any time.

use super::handler::{AssociationInfo, IncomingStore, Refusal, ScpHandler};
use super::message::{Command, CommandField};
use super::pdv::{self, CommandAssembler, Wire};
use super::request::{AssociationHandle, Context, DataSource, Outgoing, RequestContext};
use super::DimseError;
use crate::audit;
use crate::dicom::status;
use crate::dicom::uid;
use dicom_ul::association::server::AsyncServerAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};
use futures::FutureExt;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

/// Identifiers and commitment lists are small; a bigger one is refused.
const MAX_REQUEST_DATA_SET: usize = 4 * 1024 * 1024;

/// A data set that is arriving.
enum Incoming {
    Store(IncomingStore),
    Request {
        pc_id: u8,
        rq: Command,
        bytes: Vec<u8>,
        refusal: Option<Refusal>,
        /// Past the size limit: the rest is drained, not kept.
        overflowed: bool,
    },
}

/// The request whose handler task is running.
struct Running {
    message_id: Option<u16>,
    cancel: CancellationToken,
    out: mpsc::Receiver<Outgoing>,
    /// Set when the handler panicked: it answered nothing, so the
    /// association is aborted rather than left waiting.
    panicked: Arc<AtomicBool>,
    /// For the metrics and the audit log: the service, and its study when
    /// the audit log is kept.
    service: &'static str,
    study: Option<String>,
}

/// However the association ends, its running handler is told to stop.
impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

enum Event {
    Pdu(Result<Pdu, DimseError>),
    Out(Option<Outgoing>),
    Own(Outgoing),
}

pub(crate) struct Session<S: Wire> {
    pub assoc: AsyncServerAssociation<S>,
    pub info: AssociationInfo,
    pub handler: Arc<dyn ScpHandler>,
    commands: CommandAssembler,
    incoming: Option<Incoming>,
    running: Option<Running>,
    /// Requests we sent (C-GET sub-operations, N-EVENT-REPORTs) waiting
    /// for their response, by message id.
    replies: HashMap<u16, oneshot::Sender<Command>>,
    /// Kept so that `own_rx` never ends; handles hold clones.
    own_tx: mpsc::Sender<Outgoing>,
    own_rx: mpsc::Receiver<Outgoing>,
    /// When the operation now arriving or running was asked for.
    op_started: std::time::Instant,
}

impl<S: Wire> Session<S> {
    pub fn new(
        assoc: AsyncServerAssociation<S>,
        info: AssociationInfo,
        handler: Arc<dyn ScpHandler>,
    ) -> Session<S> {
        let (own_tx, own_rx) = mpsc::channel(4);
        Session {
            assoc,
            info,
            handler,
            commands: CommandAssembler::default(),
            incoming: None,
            running: None,
            replies: HashMap::new(),
            own_tx,
            own_rx,
            op_started: std::time::Instant::now(),
        }
    }

    pub async fn run(&mut self) -> Result<(), DimseError> {
        loop {
            let event = {
                let receive = self.assoc.receive();
                // Cancel-safe: dicom-ul keeps partial PDUs in its read buffer.
                // Our own requests wait while a data set is arriving: their
                // PDUs may go out any time, but keeping them apart from a
                // half-received message spares peers that cannot interleave.
                let own_ok = self.incoming.is_none();
                match self.running.as_mut() {
                    Some(running) => tokio::select! {
                        biased;
                        out = running.out.recv() => Event::Out(out),
                        Some(own) = self.own_rx.recv(), if own_ok => Event::Own(own),
                        pdu = receive => Event::Pdu(pdu.map_err(DimseError::receive)),
                    },
                    None => tokio::select! {
                        biased;
                        Some(own) = self.own_rx.recv(), if own_ok => Event::Own(own),
                        pdu = receive => Event::Pdu(pdu.map_err(DimseError::receive)),
                    },
                }
            };
            match event {
                Event::Out(Some(msg)) => {
                    let running = self.running.as_ref();
                    if let (Some(r), Some(st)) = (running, msg.command.status) {
                        if msg.command.field.is_response()
                            && status::kind(st) != status::StatusKind::Pending
                        {
                            self.finished(r.service, r.study.as_deref(), st);
                        }
                    }
                    self.send_outgoing(msg).await?
                }
                Event::Own(msg) => self.send_outgoing(msg).await?,
                Event::Out(None) => {
                    let running = self.running.take();
                    if running.is_some_and(|r| r.panicked.load(Ordering::Acquire)) {
                        return Err(DimseError::Protocol(
                            "the request failed inside Pons (a bug: see the log)".into(),
                        ));
                    }
                }
                Event::Pdu(pdu) => match pdu? {
                    Pdu::PData { data } => {
                        for pdv in data {
                            self.on_pdv(pdv).await?;
                        }
                    }
                    Pdu::ReleaseRQ => {
                        if self.incoming.is_some() || self.running.is_some() {
                            warn!("release requested in the middle of an operation; it is dropped");
                        }
                        self.stop().await;
                        self.assoc
                            .send(&Pdu::ReleaseRP)
                            .await
                            .map_err(DimseError::send)?;
                        let _ = self.assoc.inner_stream().shutdown().await;
                        return Ok(());
                    }
                    Pdu::AbortRQ { .. } => {
                        self.stop().await;
                        return Err(DimseError::Aborted);
                    }
                    other => {
                        return Err(DimseError::Protocol(format!(
                            "unexpected PDU {}",
                            other.short_description()
                        )))
                    }
                },
            }
        }
    }

    /// An operation got its final response: count it, and audit it.
    fn finished(&self, service: &'static str, study: Option<&str>, status: u16) {
        crate::metrics::get().dimse_finished(
            service,
            audit::dimse_outcome(status),
            self.op_started.elapsed(),
        );
        if !audit::enabled() {
            return;
        }
        audit::record(&audit::Event {
            service,
            study,
            outcome: audit::dimse_outcome(status),
            status: format!("{status:04X}"),
            who: audit::Who::Dimse {
                calling_ae: &self.info.calling_ae,
                peer: self.info.peer.to_string(),
                association: self.info.id,
            },
        });
    }

    /// The association is ending: drop partial data, stop the running handler.
    pub async fn stop(&mut self) {
        if let Some(Incoming::Store(store)) = self.incoming.take() {
            store.abort().await;
        }
        self.running = None; // dropping it cancels the handler
        self.own_rx.close(); // our own requests fail at once
    }

    async fn send_outgoing(&mut self, msg: Outgoing) -> Result<(), DimseError> {
        let result = async {
            pdv::send_command(&mut self.assoc, msg.pc_id, &msg.command).await?;
            match msg.data {
                None => Ok(()),
                Some(DataSource::Bytes(b)) => {
                    pdv::send_data_set(&mut self.assoc, msg.pc_id, &b).await
                }
                Some(DataSource::Stream(r)) => {
                    pdv::send_data_stream(&mut self.assoc, msg.pc_id, r, None).await
                }
            }
        }
        .await;
        if let (Some(reply), Some(id)) = (msg.reply, msg.command.message_id) {
            // Waiters whose requester gave up (or ended) go first.
            self.replies.retain(|_, w| !w.is_closed());
            self.replies.insert(id, reply);
        }
        let _ = msg
            .sent
            .send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        // A data source that failed mid-stream leaves the peer with half a
        // data set: the error ends (aborts) the association.
        result
    }

    fn context(&self, pc_id: u8) -> Option<&dicom_ul::pdu::PresentationContextNegotiated> {
        self.assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == pc_id && pc.reason == PresentationContextResultReason::Acceptance)
    }

    async fn on_pdv(&mut self, pdv: PDataValue) -> Result<(), DimseError> {
        if self.context(pdv.presentation_context_id).is_none() {
            return Err(DimseError::Protocol(format!(
                "P-DATA on presentation context {} which was not accepted",
                pdv.presentation_context_id
            )));
        }
        match pdv.value_type {
            PDataValueType::Command => {
                if self.incoming.is_some() {
                    return Err(DimseError::Protocol(
                        "a new command arrived before the data set was complete".into(),
                    ));
                }
                if let Some((pc_id, cmd)) = self.commands.push(pdv)? {
                    self.on_command(pc_id, cmd).await?;
                }
                Ok(())
            }
            PDataValueType::Data => self.on_data(pdv).await,
        }
    }

    async fn on_data(&mut self, pdv: PDataValue) -> Result<(), DimseError> {
        let pc = pdv.presentation_context_id;
        match self.incoming.as_mut() {
            None => return Err(DimseError::Protocol("data set without a command".into())),
            Some(
                Incoming::Store(IncomingStore { pc_id, .. }) | Incoming::Request { pc_id, .. },
            ) if *pc_id != pc => {
                return Err(DimseError::Protocol(
                    "data set on another presentation context than its command".into(),
                ))
            }
            Some(Incoming::Store(store)) => store.write(&pdv.data).await,
            Some(Incoming::Request {
                bytes,
                refusal,
                overflowed,
                ..
            }) => {
                // A refused request's data set is kept too: the audit log
                // names the study it asked for.
                if !*overflowed && bytes.len() + pdv.data.len() > MAX_REQUEST_DATA_SET {
                    *bytes = Vec::new();
                    *overflowed = true;
                    refusal.get_or_insert(Refusal::new(
                        status::general::PROCESSING_FAILURE,
                        "request data set larger than 4 MiB",
                    ));
                } else if !*overflowed {
                    bytes.extend_from_slice(&pdv.data);
                }
            }
        }
        if !pdv.is_last {
            return Ok(());
        }
        match self.incoming.take() {
            Some(Incoming::Store(store)) => {
                let study = store.study();
                let (pc_id, rsp) = store.finish().await;
                let st = rsp.status.unwrap_or_default();
                self.finished("C-STORE", study.as_deref(), st);
                if status::kind(st) != status::StatusKind::Success {
                    info!(
                        status = format_args!("{st:04X}"),
                        comment = rsp.error_comment.as_deref().unwrap_or(""),
                        "C-STORE not successful"
                    );
                }
                pdv::send_command(&mut self.assoc, pc_id, &rsp).await
            }
            Some(Incoming::Request {
                pc_id,
                rq,
                bytes,
                refusal,
                ..
            }) => match refusal {
                Some(r) => {
                    let study = self
                        .context(pc_id)
                        .and_then(|c| audit::study_in(&bytes, uid::trim(&c.transfer_syntax)));
                    self.finished(audit::dimse_service(rq.field), study.as_deref(), r.status);
                    let rsp = Command::failure_response(&rq, r.status, r.comment);
                    pdv::send_command(&mut self.assoc, pc_id, &rsp).await
                }
                None => {
                    self.start_request(pc_id, rq, bytes);
                    Ok(())
                }
            },
            None => Ok(()),
        }
    }

    fn start_request(&mut self, pc_id: u8, rq: Command, data_set: Vec<u8>) {
        let (tx, rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let contexts = self
            .assoc
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| Context {
                id: pc.id,
                abstract_syntax: uid::trim(&pc.abstract_syntax).to_owned(),
                transfer_syntax: uid::trim(&pc.transfer_syntax).to_owned(),
            })
            .collect::<Vec<_>>();
        let transfer_syntax = contexts
            .iter()
            .find(|c| c.id == pc_id)
            .map(|c| c.transfer_syntax.clone())
            .unwrap_or_default();
        let ctx = RequestContext {
            pc_id,
            transfer_syntax,
            contexts,
            cancelled: cancel.clone(),
            association: AssociationHandle::new(self.own_tx.clone()),
            out: tx.clone(),
        };
        let panicked = Arc::new(AtomicBool::new(false));
        let study = audit::enabled()
            .then(|| audit::study_in(&data_set, &ctx.transfer_syntax))
            .flatten();
        self.running = Some(Running {
            message_id: rq.message_id,
            cancel,
            out: rx,
            panicked: panicked.clone(),
            service: audit::dimse_service(rq.field),
            study,
        });
        let handler = self.handler.clone();
        let info = self.info.clone();
        // Held until the flag is set, so the session sees the flag when the
        // channel closes.
        let keep_open = tx;
        let task = async move {
            let run = AssertUnwindSafe(handler.request(&info, rq, data_set, ctx));
            if let Err(panic) = run.catch_unwind().await {
                error!(
                    id = info.id,
                    panic = panic_message(&panic),
                    "request handler panicked; aborting the association"
                );
                panicked.store(true, Ordering::Release);
            }
            drop(keep_open);
        };
        tokio::spawn(task.instrument(tracing::Span::current()));
    }

    async fn on_command(&mut self, pc_id: u8, cmd: Command) -> Result<(), DimseError> {
        let context = self.context(pc_id).cloned().ok_or_else(|| {
            DimseError::Protocol(format!("presentation context {pc_id} not accepted"))
        })?;
        match cmd.field {
            CommandField::CEchoRq => {
                debug!("C-ECHO");
                let rsp = match self.handler.authorize(&self.info, &cmd) {
                    Ok(()) => Command::c_echo_rsp(&cmd, status::SUCCESS),
                    Err(r) => Command::failure_response(&cmd, r.status, r.comment),
                };
                pdv::send_command(&mut self.assoc, pc_id, &rsp).await
            }
            CommandField::CCancelRq => {
                if let Some(r) = &self.running {
                    if cmd.responding_to == r.message_id {
                        info!("C-CANCEL received");
                        r.cancel.cancel();
                    }
                }
                Ok(())
            }
            CommandField::CStoreRsp | CommandField::NEventReportRsp => {
                let waiter = cmd.responding_to.and_then(|id| self.replies.remove(&id));
                match waiter {
                    Some(w) => {
                        let _ = w.send(cmd);
                        Ok(())
                    }
                    None => Err(DimseError::Protocol(format!(
                        "{:?} for no request of ours",
                        cmd.field
                    ))),
                }
            }
            field if field.is_response() => Err(DimseError::Protocol(format!(
                "unsolicited response {field:?}"
            ))),
            CommandField::CStoreRq => {
                self.op_started = std::time::Instant::now();
                if !cmd.has_data_set {
                    self.finished("C-STORE", None, status::storage::CANNOT_UNDERSTAND);
                    let rsp = Command::c_store_rsp(
                        &cmd,
                        status::storage::CANNOT_UNDERSTAND,
                        Some("C-STORE-RQ without a data set".into()),
                    );
                    return pdv::send_command(&mut self.assoc, pc_id, &rsp).await;
                }
                let result = if cmd.sop_class_uid.as_deref().map(str::trim)
                    != Some(uid::trim(&context.abstract_syntax))
                {
                    Err(Refusal::new(
                        status::general::SOP_CLASS_NOT_SUPPORTED,
                        "SOP Class differs from the presentation context's",
                    ))
                } else if let Err(r) = self.handler.authorize(&self.info, &cmd) {
                    Err(r)
                } else {
                    self.handler
                        .begin_store(&self.info, &cmd, uid::trim(&context.transfer_syntax))
                        .await
                };
                let mut store = IncomingStore::new(pc_id, cmd, result);
                if audit::enabled() {
                    store.scan_study(uid::trim(&context.transfer_syntax));
                }
                self.incoming = Some(Incoming::Store(store));
                Ok(())
            }
            _ => {
                if self.running.is_none() {
                    self.op_started = std::time::Instant::now();
                }
                // One operation at a time: we never negotiate asynchronous operations.
                let refusal = if self.running.is_some() {
                    Some(Refusal::new(
                        status::general::PROCESSING_FAILURE,
                        "another operation is still running on this association",
                    ))
                } else {
                    self.handler.authorize(&self.info, &cmd).err()
                };
                if cmd.has_data_set {
                    self.incoming = Some(Incoming::Request {
                        pc_id,
                        rq: cmd,
                        bytes: Vec::new(),
                        refusal,
                        overflowed: false,
                    });
                    return Ok(());
                }
                match refusal {
                    Some(r) => {
                        self.finished(audit::dimse_service(cmd.field), None, r.status);
                        let rsp = Command::failure_response(&cmd, r.status, r.comment);
                        pdv::send_command(&mut self.assoc, pc_id, &rsp).await
                    }
                    None => {
                        self.start_request(pc_id, cmd, Vec::new());
                        Ok(())
                    }
                }
            }
        }
    }
}

/// What a caught panic said, for the log.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
