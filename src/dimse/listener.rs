//! The DIMSE accept loop: AE policy, presentation contexts, one task per
//! association, and the per-association state machine that turns PDUs into
//! calls on an [`ScpHandler`].

use super::handler::{AssociationInfo, ScpHandler};
use super::pdv::Wire;
use super::session::{panic_message, Session};
use super::DimseError;
use crate::dicom::syntaxes;
use dicom_dictionary_std::uids;
use dicom_ul::association::server::{AccessControl, AsyncServerAssociation, Negotiation};
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, Pdu, PresentationContextResultReason, UserIdentity,
};
use dicom_ul::ServerAssociationOptions;
use futures::FutureExt;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

pub struct ListenerConfig {
    pub ae_title: String,
    /// Every AE title we answer to (`[[route]] called_ae`), ours included.
    pub called_titles: HashSet<String>,
    pub known_callers: HashSet<String>,
    pub accept_any_caller: bool,
    pub max_associations: usize,
    pub max_pdu: u32,
    pub association_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Calling AE titles bound to a client certificate name (`[[ae]] certificate_name`).
    pub certificate_names: HashMap<String, String>,
}

/// The TLS listener (`[dimse.tls]`) beside the plain one.
pub struct TlsListener {
    pub listener: TcpListener,
    pub tls: Arc<crate::tls::Reloading>,
}

/// Non-storage SOP classes we accept.
pub const SERVICE_SOP_CLASSES: &[&str] = &[
    uids::VERIFICATION,
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE,
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET,
    uids::MODALITY_WORKLIST_INFORMATION_MODEL_FIND,
    uids::STORAGE_COMMITMENT_PUSH_MODEL,
];

#[derive(Clone)]
struct AePolicy {
    called_titles: HashSet<String>,
    known_callers: HashSet<String>,
    accept_any_caller: bool,
    certificate_names: HashMap<String, String>,
}

impl AccessControl for AePolicy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let called = called_ae_title.trim();
        if called != this_ae_title.trim() && !self.called_titles.contains(called) {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        let calling = calling_ae_title.trim();
        if !self.accept_any_caller && !self.known_callers.contains(calling) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        if let Some(name) = self.certificate_names.get(calling) {
            if !crate::tls::peer_is(name) {
                warn!(calling_ae = calling, certificate_name = %name, "calling AE title refused: no verified client certificate names it");
                return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
            }
        }
        Ok(())
    }
}

/// SCP/SCU role selection: a C-GET requester proposes the SCP role for the
/// storage classes it wants back on the same association, and a storage
/// commitment SCP that reports on a new association proposes the SCP role
/// for Storage Commitment; grant what is asked for those classes.
#[derive(Clone)]
struct StorageRoles;

impl Negotiation for StorageRoles {
    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<dicom_ul::pdu::RequestorRoles> {
        let uid = crate::dicom::uid::trim(sop_class_uid);
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
    tls_listener: Option<TlsListener>,
    config: ListenerConfig,
    handler: Arc<dyn ScpHandler>,
    shutdown: CancellationToken,
) -> Result<(), DimseError> {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(AePolicy {
            called_titles: config
                .called_titles
                .iter()
                .map(|s| s.trim().to_owned())
                .collect(),
            known_callers: config
                .known_callers
                .iter()
                .map(|s| s.trim().to_owned())
                .collect(),
            accept_any_caller: config.accept_any_caller,
            certificate_names: config
                .certificate_names
                .iter()
                .map(|(ae, name)| (ae.trim().to_owned(), name.clone()))
                .collect(),
        })
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu)
        // A PDU longer than we allowed is refused, not buffered whole: in
        // lax mode dicom-ul reads a PDU of any declared length into memory.
        .strict(true)
        .read_timeout(config.idle_timeout)
        .with_negotiation(StorageRoles);
    for uid in SERVICE_SOP_CLASSES
        .iter()
        .chain(super::sop_classes::STORAGE_SOP_CLASSES)
    {
        options = options.with_abstract_syntax(*uid);
    }
    for ts in syntaxes::ACCEPTED {
        options = options.with_transfer_syntax(*ts);
    }
    let options: Arc<Options> = Arc::new(options);
    let slots = Arc::new(Semaphore::new(config.max_associations));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let abort_all = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let next_id = AtomicU64::new(1);
    let config = Arc::new(config);

    let accept_tls = || async {
        match &tls_listener {
            Some(t) => t.listener.accept().await,
            None => std::future::pending().await,
        }
    };
    loop {
        let (accepted, secure) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => (accepted, false),
            accepted = accept_tls() => (accepted, true),
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, limit = config.max_associations, "association limit reached, rejecting");
            crate::metrics::get().rejected("busy");
            // A flood past the limit is dropped, not answered one by one;
            // over TLS a plain A-ASSOCIATE-RJ would be noise: closed.
            if secure {
                continue;
            }
            if let Ok(turn) = refusing.clone().try_acquire_owned() {
                tasks.spawn(async move {
                    reject_busy(socket).await;
                    drop(turn);
                });
            }
            continue;
        };
        let options = options.clone();
        let handler = handler.clone();
        let abort = abort_all.clone();
        let config = config.clone();
        let tls = secure
            .then(|| tls_listener.as_ref().map(|t| t.tls.config()))
            .flatten();
        tasks.spawn(async move {
            let _slot = slot;
            let run = async {
                match tls {
                    None => {
                        let established = options.establish_async(socket);
                        run_association(established, peer, id, &config, handler).await
                    }
                    Some(tls) => {
                        let options = (*options).clone().tls_config(tls);
                        let established = options.establish_tls_async(socket);
                        // The client certificate is kept for the AE check.
                        crate::tls::with_peer_slot(run_association(established, peer, id, &config, handler)).await
                    }
                }
            };
            tokio::select! {
                _ = run => {}
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

/// Why establishing an association failed, for the metrics.
fn rejection_reason(e: &dicom_ul::association::Error) -> &'static str {
    use AssociationRJServiceUserReason as R;
    match e {
        dicom_ul::association::Error::Rejected { association_rj, .. } => {
            match &association_rj.source {
                AssociationRJSource::ServiceUser(R::CallingAETitleNotRecognized) => {
                    "calling_ae_unknown"
                }
                AssociationRJSource::ServiceUser(R::CalledAETitleNotRecognized) => {
                    "called_ae_unknown"
                }
                _ => "rejected",
            }
        }
        _ => "protocol",
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Connections past the limit being answered at once; more are closed.
const MAX_REFUSING: usize = 64;

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

async fn run_association<S: Wire + 'static>(
    established: impl std::future::Future<
        Output = Result<AsyncServerAssociation<S>, dicom_ul::association::Error>,
    >,
    peer: SocketAddr,
    id: u64,
    config: &ListenerConfig,
    handler: Arc<dyn ScpHandler>,
) {
    let assoc = match tokio::time::timeout(config.association_timeout, established).await {
        Ok(Ok(a)) => a,
        Ok(Err(
            e @ (dicom_ul::association::Error::TlsHandshake { .. }
            | dicom_ul::association::Error::TlsConnection { .. }),
        )) => {
            crate::metrics::get().rejected("tls_handshake");
            crate::metrics::get().tls_failed("dimse");
            warn!(id, %peer, reason = %crate::dimse::client::error_chain(&e), "DICOM TLS handshake failed; no association");
            return;
        }
        Ok(Err(e)) => {
            crate::metrics::get().rejected(rejection_reason(&e));
            info!(id, %peer, reason = %e, "association refused");
            return;
        }
        Err(_) => {
            crate::metrics::get().rejected("timeout");
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
        let metrics = crate::metrics::get();
        let known = config
            .known_callers
            .iter()
            .any(|k| k.trim() == info.calling_ae);
        metrics
            .associations_accepted
            .get_or_create(&crate::metrics::CallingAe {
                calling_ae: if known {
                    info.calling_ae.clone()
                } else {
                    "other".into()
                },
            })
            .inc();
        metrics.associations_active.inc();
        // Counted down however the association ends (a panic included).
        let _active = scopeguard(|| {
            metrics.associations_active.dec();
        });
        let mut session = Session::new(assoc, info, handler);
        // A bug in one association must not end the others: caught here,
        // it aborts this one.
        let outcome = match AssertUnwindSafe(session.run()).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => {
                error!(panic = panic_message(&panic), "association task panicked");
                Err(DimseError::Protocol(
                    "Pons failed (a bug: see the log)".into(),
                ))
            }
        };
        match outcome {
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
