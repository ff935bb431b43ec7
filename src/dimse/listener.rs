//! The DIMSE accept loop: AE policy, presentation contexts, one task per
//! association, and the per-association state machine that turns PDUs into
//! calls on an [`ScpHandler`].

use super::message::Command;
use super::request::RequestContext;
use super::session::{failure_response, Session};
use super::status;
use super::DimseError;
use async_trait::async_trait;
use dicom_dictionary_std::uids;
use dicom_ul::association::server::{AccessControl, Negotiation};
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, Pdu, PresentationContextResultReason, UserIdentity,
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
use tracing::{info, warn, Instrument};

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
}

impl IncomingStore {
    pub fn new(pc_id: u8, rq: Command, sink: Result<Box<dyn StoreSink>, Refusal>) -> Self {
        IncomingStore { pc_id, rq, sink }
    }

    /// The next bytes; a sink that refuses them is aborted.
    pub async fn write(&mut self, chunk: &[u8]) {
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
    let rsp = failure_response(rq, status::general::UNRECOGNIZED_OPERATION, comment);
    let _ = ctx.respond(rsp, None).await;
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

/// Non-storage SOP classes we accept.
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

/// SCP/SCU role selection: a C-GET requester proposes the SCP role for the
/// storage classes it wants back on the same association, and a storage
/// commitment SCP that reports on a new association proposes the SCP role
/// for Storage Commitment; grant what is asked for those classes.
struct StorageRoles;

impl Negotiation for StorageRoles {
    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<dicom_ul::pdu::RequestorRoles> {
        let uid = sop_class_uid.trim_end_matches('\0');
        (super::sop_classes::STORAGE_SOP_CLASSES.contains(&uid)
            || uid == uids::STORAGE_COMMITMENT_PUSH_MODEL)
            .then_some(dicom_ul::pdu::RequestorRoles {
                scu: scu_role,
                scp: scp_role,
            })
    }
}

type Options = ServerAssociationOptions<'static, AePolicy, StorageRoles>;

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
        .read_timeout(config.idle_timeout)
        .with_negotiation(StorageRoles);
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
        let mut session = Session::new(assoc, info, handler);
        match session.run().await {
            Ok(()) => info!("association released"),
            Err(DimseError::Aborted) => info!("association aborted by the peer"),
            Err(e) => {
                warn!(error = %e, "association ended abnormally, aborting");
                session.stop().await;
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
