//! The DIMSE accept loop: AE policy, presentation contexts, one task per
//! association, and the per-association state machine that turns PDUs into
//! calls on an [`ScpHandler`].

use super::message::{Command, CommandField};
use super::pdv::{self, CommandAssembler};
use super::status;
use super::DimseError;
use async_trait::async_trait;
use dicom_dictionary_std::uids;
use dicom_ul::association::server::{AccessControl, AsyncServerAssociation};
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, PDataValueType, Pdu, PresentationContextResultReason, UserIdentity,
};
use dicom_ul::ServerAssociationOptions;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

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

/// What a direction plugs into the listener.
#[async_trait]
pub trait ScpHandler: Send + Sync + 'static {
    async fn begin_store(
        &self,
        assoc: &AssociationInfo,
        rq: &Command,
        transfer_syntax_uid: &str,
    ) -> Result<Box<dyn StoreSink>, Refusal>;
}

pub struct ListenerConfig {
    pub ae_title: String,
    pub known_callers: HashSet<String>,
    pub accept_any_caller: bool,
    pub max_associations: usize,
    pub max_pdu: u32,
    pub association_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Transfer syntaxes we accept: data sets are stored as received, so every
/// standard one a modality is likely to send.
#[allow(deprecated)]
pub const TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_BIG_ENDIAN,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::JPEG2000MC_LOSSLESS,
    uids::JPEG2000MC,
    uids::HTJ2K_LOSSLESS,
    uids::HTJ2K_LOSSLESS_RPCL,
    uids::HTJ2K,
    uids::RLE_LOSSLESS,
    uids::MPEG2MPML,
    uids::MPEG2MPHL,
    uids::MPEG4HP41,
    uids::MPEG4HP41BD,
    uids::HEVCMP51,
    uids::HEVCM10P51,
    uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
];

/// Non-storage SOP classes we accept (Q/R and storage commitment are for
/// the issues that implement them; until then they get a clear failure).
pub const SERVICE_SOP_CLASSES: &[&str] = &[
    uids::VERIFICATION,
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE,
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET,
    uids::STORAGE_COMMITMENT_PUSH_MODEL,
];

struct AePolicy {
    known_callers: HashSet<String>,
    accept_any_caller: bool,
}

impl AccessControl for AePolicy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.accept_any_caller && !self.known_callers.contains(calling_ae_title.trim()) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

type Options =
    ServerAssociationOptions<'static, AePolicy, dicom_ul::association::server::DefaultNegotiation>;

/// Accept associations until `shutdown` fires, then give running ones
/// `shutdown_grace` to finish before aborting them.
pub async fn serve(
    listener: TcpListener,
    config: ListenerConfig,
    handler: Arc<dyn ScpHandler>,
    shutdown: CancellationToken,
) -> Result<(), DimseError> {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(AePolicy {
            known_callers: config
                .known_callers
                .iter()
                .map(|s| s.trim().to_owned())
                .collect(),
            accept_any_caller: config.accept_any_caller,
        })
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu)
        .strict(false)
        .read_timeout(config.idle_timeout);
    for uid in SERVICE_SOP_CLASSES
        .iter()
        .chain(super::sop_classes::STORAGE_SOP_CLASSES)
    {
        options = options.with_abstract_syntax(*uid);
    }
    for ts in TRANSFER_SYNTAXES {
        options = options.with_transfer_syntax(*ts);
    }
    let options: Arc<Options> = Arc::new(options);
    let slots = Arc::new(Semaphore::new(config.max_associations));
    let abort_all = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let next_id = AtomicU64::new(1);
    let config = Arc::new(config);

    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, limit = config.max_associations, "association limit reached, rejecting");
            tasks.spawn(reject_busy(socket));
            continue;
        };
        let options = options.clone();
        let handler = handler.clone();
        let abort = abort_all.clone();
        let config = config.clone();
        tasks.spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = run_association(socket, peer, id, &options, &config, handler) => {}
                _ = abort.cancelled() => warn!(id, "shutdown grace period over, association dropped"),
            }
        });
    }
    info!(
        running = tasks.len(),
        "listener stopped accepting; waiting for running associations"
    );
    tasks.close();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        abort_all.cancel();
        tasks.wait().await;
    }
    Ok(())
}

/// Too many associations: A-ASSOCIATE-RJ, transient, local limit exceeded.
async fn reject_busy(mut socket: TcpStream) {
    // Read (and discard) the A-ASSOCIATE-RQ first so the peer sees a clean answer.
    let mut header = [0u8; 6];
    let read = async {
        socket.read_exact(&mut header).await?;
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as u64;
        tokio::io::copy(
            &mut (&mut socket).take(len.min(1 << 20)),
            &mut tokio::io::sink(),
        )
        .await
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return;
    }
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut bytes = Vec::new();
    if dicom_ul::pdu::write_pdu(&mut bytes, &rj).is_ok() {
        let _ = socket.write_all(&bytes).await;
    }
    let _ = socket.shutdown().await;
}

async fn run_association(
    socket: TcpStream,
    peer: SocketAddr,
    id: u64,
    options: &Options,
    config: &ListenerConfig,
    handler: Arc<dyn ScpHandler>,
) {
    let assoc =
        match tokio::time::timeout(config.association_timeout, options.establish_async(socket))
            .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                info!(id, %peer, reason = %e, "association refused");
                return;
            }
            Err(_) => {
                info!(id, %peer, "association request timed out");
                return;
            }
        };
    let info = AssociationInfo {
        id,
        calling_ae: dicom_ul::association::Association::peer_ae_title(&assoc)
            .trim()
            .to_owned(),
        called_ae: assoc.called_ae_title().trim().to_owned(),
        peer,
    };
    let span = tracing::info_span!("association", id, calling_ae = %info.calling_ae, %peer);
    async move {
        let accepted = assoc
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .count();
        info!(contexts = accepted, "association accepted");
        let mut session = Session {
            assoc,
            info,
            handler,
            commands: CommandAssembler::default(),
            store: None,
        };
        match session.run().await {
            Ok(()) => info!("association released"),
            Err(DimseError::Aborted) => info!("association aborted by the peer"),
            Err(e) => {
                warn!(error = %e, "association ended abnormally, aborting");
                session.abort_store().await;
                let _ = session
                    .assoc
                    .send(&Pdu::AbortRQ {
                        source: AbortRQSource::ServiceProvider(
                            AbortRQServiceProviderReason::ReasonNotSpecified,
                        ),
                    })
                    .await;
            }
        }
    }
    .instrument(span)
    .await
}

/// A C-STORE whose data set is arriving.
struct StoreInProgress {
    pc_id: u8,
    rq: Command,
    sink: Option<Box<dyn StoreSink>>,
    /// Set once the sink refused; the rest of the data set is drained.
    refusal: Option<Refusal>,
}

struct Session {
    assoc: AsyncServerAssociation<TcpStream>,
    info: AssociationInfo,
    handler: Arc<dyn ScpHandler>,
    commands: CommandAssembler,
    store: Option<StoreInProgress>,
}

impl Session {
    async fn run(&mut self) -> Result<(), DimseError> {
        loop {
            let pdu = self.assoc.receive().await.map_err(DimseError::receive);
            match pdu? {
                Pdu::PData { data } => {
                    for pdv in data {
                        self.on_pdv(pdv).await?;
                    }
                }
                Pdu::ReleaseRQ => {
                    if self.store.is_some() || self.commands.in_progress() {
                        warn!("release requested in the middle of a message; the partial instance is discarded");
                    }
                    self.abort_store().await;
                    self.assoc
                        .send(&Pdu::ReleaseRP)
                        .await
                        .map_err(DimseError::send)?;
                    let _ = self.assoc.inner_stream().shutdown().await;
                    return Ok(());
                }
                Pdu::AbortRQ { .. } => {
                    self.abort_store().await;
                    return Err(DimseError::Aborted);
                }
                other => {
                    return Err(DimseError::Protocol(format!(
                        "unexpected PDU {}",
                        other.short_description()
                    )))
                }
            }
        }
    }

    async fn abort_store(&mut self) {
        if let Some(StoreInProgress {
            sink: Some(sink), ..
        }) = self.store.take()
        {
            sink.abort().await;
        }
    }

    fn context(&self, pc_id: u8) -> Option<&dicom_ul::pdu::PresentationContextNegotiated> {
        self.assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == pc_id && pc.reason == PresentationContextResultReason::Acceptance)
    }

    async fn on_pdv(&mut self, pdv: dicom_ul::pdu::PDataValue) -> Result<(), DimseError> {
        if self.context(pdv.presentation_context_id).is_none() {
            return Err(DimseError::Protocol(format!(
                "P-DATA on presentation context {} which was not accepted",
                pdv.presentation_context_id
            )));
        }
        match pdv.value_type {
            PDataValueType::Command => {
                if self.store.is_some() {
                    return Err(DimseError::Protocol(
                        "a new command arrived before the data set was complete".into(),
                    ));
                }
                if let Some((pc_id, cmd)) = self.commands.push(pdv)? {
                    self.on_command(pc_id, cmd).await?;
                }
                Ok(())
            }
            PDataValueType::Data => {
                let Some(store) = self.store.as_mut() else {
                    return Err(DimseError::Protocol("data set without a command".into()));
                };
                if store.pc_id != pdv.presentation_context_id {
                    return Err(DimseError::Protocol(
                        "data set on another presentation context than its command".into(),
                    ));
                }
                if let Some(sink) = store.sink.as_mut() {
                    if let Err(refusal) = sink.write(&pdv.data).await {
                        if let Some(sink) = store.sink.take() {
                            sink.abort().await;
                        }
                        store.refusal = Some(refusal);
                    }
                }
                if pdv.is_last {
                    let Some(store) = self.store.take() else {
                        return Ok(());
                    };
                    let outcome = match (store.sink, store.refusal) {
                        (_, Some(refusal)) => refusal.into(),
                        (Some(sink), None) => sink.finish().await,
                        (None, None) => {
                            Refusal::new(status::general::PROCESSING_FAILURE, "internal: no sink")
                                .into()
                        }
                    };
                    if status::kind(outcome.status) != status::StatusKind::Success {
                        info!(
                            status = format_args!("{:04X}", outcome.status),
                            comment = outcome.comment.as_deref().unwrap_or(""),
                            "C-STORE not successful"
                        );
                    }
                    let rsp = if store.rq.field == CommandField::CStoreRq {
                        Command::c_store_rsp(&store.rq, outcome.status, outcome.comment)
                    } else {
                        unsupported_response(&store.rq, store.rq.field)
                    };
                    pdv::send_command(&mut self.assoc, store.pc_id, &rsp).await?;
                }
                Ok(())
            }
        }
    }

    async fn on_command(&mut self, pc_id: u8, cmd: Command) -> Result<(), DimseError> {
        let context = self.context(pc_id).cloned().ok_or_else(|| {
            DimseError::Protocol(format!("presentation context {pc_id} not accepted"))
        })?;
        match cmd.field {
            CommandField::CEchoRq => {
                debug!("C-ECHO");
                let rsp = Command::c_echo_rsp(&cmd, status::SUCCESS);
                pdv::send_command(&mut self.assoc, pc_id, &rsp).await
            }
            CommandField::CStoreRq => {
                if !cmd.has_data_set {
                    let rsp = Command::c_store_rsp(
                        &cmd,
                        status::storage::CANNOT_UNDERSTAND,
                        Some("C-STORE-RQ without a data set".into()),
                    );
                    return pdv::send_command(&mut self.assoc, pc_id, &rsp).await;
                }
                let (sink, refusal) = if cmd.sop_class_uid.as_deref().map(str::trim)
                    != Some(context.abstract_syntax.trim())
                {
                    let r = Refusal::new(
                        status::general::SOP_CLASS_NOT_SUPPORTED,
                        "SOP Class differs from the presentation context's",
                    );
                    (None, Some(r))
                } else {
                    match self
                        .handler
                        .begin_store(&self.info, &cmd, &context.transfer_syntax)
                        .await
                    {
                        Ok(sink) => (Some(sink), None),
                        Err(r) => (None, Some(r)),
                    }
                };
                self.store = Some(StoreInProgress {
                    pc_id,
                    rq: cmd,
                    sink,
                    refusal,
                });
                Ok(())
            }
            CommandField::CCancelRq => Ok(()), // nothing is running that could be cancelled
            field if field.is_response() => Err(DimseError::Protocol(format!(
                "unsolicited response {field:?}"
            ))),
            field => {
                // Accepted in negotiation for later services; answer clearly, never hang.
                if cmd.has_data_set {
                    self.store = Some(StoreInProgress {
                        pc_id,
                        rq: cmd,
                        sink: None,
                        refusal: Some(Refusal::new(status::general::UNRECOGNIZED_OPERATION, "")),
                    });
                    // The response goes out when the data set has been drained.
                    return Ok(());
                }
                let rsp = unsupported_response(&cmd, field);
                pdv::send_command(&mut self.assoc, pc_id, &rsp).await
            }
        }
    }
}

fn unsupported_response(rq: &Command, field: CommandField) -> Command {
    let comment = Some(format!("{field:?} is not supported by this gateway yet"));
    let mut rsp = Command::c_store_rsp(rq, status::general::UNRECOGNIZED_OPERATION, comment);
    rsp.field = match field {
        CommandField::CFindRq => CommandField::CFindRsp,
        CommandField::CGetRq => CommandField::CGetRsp,
        CommandField::CMoveRq => CommandField::CMoveRsp,
        CommandField::NActionRq => CommandField::NActionRsp,
        CommandField::NEventReportRq => CommandField::NEventReportRsp,
        _ => CommandField::CStoreRsp,
    };
    rsp
}
