//! SCU associations: connect to a peer AE, send requests, read responses.

pub mod find;
mod notify;
mod qr;

pub use qr::RetrieveOutcome;

use super::message::Command;
use super::pdv::{self, CommandAssembler};
use super::DimseError;
use crate::dicom::uid;
use dicom_ul::association::client::{AsyncClientAssociation, AsyncTlsStream};
use dicom_ul::pdu::{AssociationRJResult, PDataValueType, Pdu, PresentationContextResultReason};
use dicom_ul::ClientAssociationOptions;
use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where and as whom to associate.
#[derive(Debug, Clone)]
pub struct ScuConfig {
    pub calling_ae: String,
    pub called_ae: String,
    /// host:port
    pub address: String,
    pub max_pdu: u32,
    pub timeout: Duration,
    /// DICOM TLS to this peer; its certificate must verify for the host
    /// named in `address`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A presentation context to propose: abstract syntax and transfer syntaxes.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
}

impl Proposal {
    /// Explicit then Implicit VR Little Endian: what every SCP accepts for
    /// commands, identifiers and event reports.
    pub fn uncompressed(abstract_syntax: &str) -> Proposal {
        Proposal {
            abstract_syntax: abstract_syntax.to_owned(),
            transfer_syntaxes: vec![
                dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
                dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            ],
        }
    }
}

/// The association over TCP, or over TLS.
#[allow(clippy::large_enum_variant)] // one per association, never moved in a hot loop
enum Link {
    Plain(AsyncClientAssociation<TcpStream>),
    Tls(AsyncClientAssociation<AsyncTlsStream>),
}

/// Run `$body` with `$a` bound to the association, whichever wire it is on.
macro_rules! on_link {
    ($link:expr, $a:ident => $body:expr) => {
        match $link {
            Link::Plain($a) => $body,
            Link::Tls($a) => $body,
        }
    };
}
pub(super) use on_link;

impl Link {
    fn tcp(&mut self) -> &TcpStream {
        match self {
            Link::Plain(a) => a.inner_stream(),
            Link::Tls(a) => a.inner_stream().get_ref().0,
        }
    }
}

pub struct ScuAssociation {
    assoc: Link,
    next_message_id: u16,
    peer: String,
    timeout: Duration,
}

/// One response: its command set and, when present, its data set bytes.
#[derive(Debug)]
pub struct Response {
    pub command: Command,
    pub data_set: Option<Vec<u8>>,
}

/// Responses carry identifiers or failure lists, never bulk data; cap them.
const MAX_RESPONSE_DATA_SET: usize = 16 * 1024 * 1024;

impl ScuAssociation {
    pub async fn connect(
        config: &ScuConfig,
        proposals: &[Proposal],
    ) -> Result<ScuAssociation, DimseError> {
        Self::connect_with_roles(config, proposals, &[]).await
    }

    /// Connect proposing the SCP role for `scp_classes` too (SCP/SCU Role
    /// Selection): a C-GET receives its instances as C-STORE requests on the
    /// same association.
    pub async fn connect_with_roles(
        config: &ScuConfig,
        proposals: &[Proposal],
        scp_classes: &[String],
    ) -> Result<ScuAssociation, DimseError> {
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(config.calling_ae.clone())
            .called_ae_title(config.called_ae.clone())
            .max_pdu_length(config.max_pdu)
            .strict(false)
            // Ours fires first: with its TLS support built in, dicom-ul
            // reports its own read timeout during the A-ASSOCIATE exchange
            // as "peer seems to be sending TLS data".
            .read_timeout(config.timeout + Duration::from_secs(1))
            .write_timeout(config.timeout)
            .connection_timeout(config.timeout);
        for p in proposals {
            options = options
                .with_presentation_context(p.abstract_syntax.clone(), p.transfer_syntaxes.clone());
        }
        for class in scp_classes {
            options = options.with_role_selection(class.clone(), false, true);
        }
        let fut = async {
            match &config.tls {
                None => options
                    .establish_async(config.address.as_str())
                    .await
                    .map(Link::Plain),
                Some(tls) => {
                    let host = config
                        .address
                        .rsplit_once(':')
                        .map_or(config.address.as_str(), |(h, _)| h);
                    options
                        .tls_config(tls.clone())
                        .server_name(host.trim_start_matches('[').trim_end_matches(']'))
                        .establish_tls_async(config.address.as_str())
                        .await
                        .map(Link::Tls)
                }
            }
        };
        let mut assoc = tokio::time::timeout(config.timeout, fut)
            .await
            .map_err(|_| DimseError::Timeout {
                peer: config.address.clone(),
                secs: config.timeout.as_secs(),
            })?
            .map_err(|e| {
                let peer = format!("{}@{}", config.called_ae, config.address);
                if let dicom_ul::association::Error::Rejected { association_rj, .. } = &e {
                    if association_rj.result == AssociationRJResult::Transient {
                        return DimseError::Busy {
                            peer,
                            detail:
                                "it rejected the association for now (A-ASSOCIATE-RJ, transient)"
                                    .into(),
                        };
                    }
                }
                // dicom-ul's own read timeout can fire before ours: still a timeout.
                if is_timeout(&e) {
                    DimseError::Timeout {
                        peer: config.address.clone(),
                        secs: config.timeout.as_secs(),
                    }
                } else {
                    DimseError::Associate {
                        peer,
                        message: error_chain(&e),
                    }
                }
            })?;
        // dicom-ul opens the socket itself; Nagle must go before the first DIMSE exchange.
        let _ = assoc.tcp().set_nodelay(true);
        Ok(ScuAssociation {
            assoc,
            next_message_id: 1,
            peer: config.address.clone(),
            timeout: config.timeout,
        })
    }

    /// The accepted context for an abstract syntax: (id, transfer syntax).
    pub fn accepted_context(&self, abstract_syntax: &str) -> Option<(u8, String)> {
        on_link!(&self.assoc, a => a.presentation_contexts())
            .iter()
            .find(|pc| {
                pc.reason == PresentationContextResultReason::Acceptance
                    && uid::trim(&pc.abstract_syntax) == abstract_syntax
            })
            .map(|pc| (pc.id, pc.transfer_syntax.clone()))
    }

    /// Every accepted context: (id, abstract syntax, transfer syntax).
    pub fn accepted_contexts(&self) -> Vec<(u8, String, String)> {
        on_link!(&self.assoc, a => a.presentation_contexts())
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| {
                (
                    pc.id,
                    uid::trim(&pc.abstract_syntax).to_owned(),
                    uid::trim(&pc.transfer_syntax).to_owned(),
                )
            })
            .collect()
    }

    pub fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// Send a request command, and its data set when given.
    pub async fn send(
        &mut self,
        pc_id: u8,
        cmd: &Command,
        data_set: Option<&[u8]>,
    ) -> Result<(), DimseError> {
        on_link!(&mut self.assoc, a => {
            pdv::send_command(a, pc_id, cmd).await?;
            if let Some(data) = data_set {
                pdv::send_data_set(a, pc_id, data).await?;
            }
            Ok(())
        })
    }

    /// Send a request whose data set streams from `reader` (C-STORE of a file).
    pub async fn send_streamed<R>(
        &mut self,
        pc_id: u8,
        cmd: &Command,
        reader: R,
    ) -> Result<(), DimseError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        let timeout = Some(self.timeout);
        on_link!(&mut self.assoc, a => {
            pdv::send_command(a, pc_id, cmd).await?;
            pdv::send_data_stream(a, pc_id, reader, timeout).await
        })
    }

    /// Send a bare P-DATA fragment; for tests that must misbehave on purpose.
    #[cfg(any(test, feature = "test-hooks"))]
    pub async fn send_raw_fragment(
        &mut self,
        pc_id: u8,
        is_command: bool,
        is_last: bool,
        data: Vec<u8>,
    ) -> Result<(), DimseError> {
        let value_type = if is_command {
            PDataValueType::Command
        } else {
            PDataValueType::Data
        };
        let pdu = Pdu::PData {
            data: vec![dicom_ul::pdu::PDataValue {
                presentation_context_id: pc_id,
                value_type,
                is_last,
                data,
            }],
        };
        on_link!(&mut self.assoc, a => a.send(&pdu).await.map_err(DimseError::send))
    }

    /// A-ABORT.
    pub async fn abort(self) -> Result<(), DimseError> {
        on_link!(self.assoc, a => a.abort().await.map_err(DimseError::send))
    }

    /// Has the peer closed the connection, or sent something unasked (an
    /// A-RELEASE-RQ, an A-ABORT), while the association sat idle?
    pub fn peer_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        // The TCP bytes, beneath TLS: any (an alert, a close) means the same.
        !self.assoc.tcp().poll_peek(&mut cx, &mut buf).is_pending()
    }

    /// A-ABORT, keeping the (now dead: every send fails) association: for
    /// a holder that must end it before it has a replacement (a peer may
    /// take one association at a time).
    pub async fn abort_in_place(&mut self) {
        // A-ABORT-RQ: type 7, length 4, source 0 (service user), reason 0.
        const A_ABORT: [u8; 10] = [7, 0, 0, 0, 0, 4, 0, 0, 0, 0];
        on_link!(&mut self.assoc, a => {
            let stream = a.inner_stream();
            let _ = stream.write_all(&A_ABORT).await;
            let _ = stream.shutdown().await;
        })
    }

    /// Read the next response (command plus data set when it has one).
    pub async fn receive(&mut self) -> Result<Response, DimseError> {
        let mut commands = CommandAssembler::default();
        let mut command: Option<Command> = None;
        let mut data = Vec::new();
        loop {
            let pdu = tokio::time::timeout(
                self.timeout,
                on_link!(&mut self.assoc, a => a.receive().boxed()),
            )
            .await
            .map_err(|_| DimseError::Timeout {
                peer: self.peer.clone(),
                secs: self.timeout.as_secs(),
            })?
            .map_err(DimseError::receive)?;
            let values = match pdu {
                Pdu::PData { data } => data,
                Pdu::AbortRQ { .. } => return Err(DimseError::Aborted),
                other => {
                    return Err(DimseError::Protocol(format!(
                        "unexpected PDU {}",
                        other.short_description()
                    )))
                }
            };
            for pdv in values {
                match pdv.value_type {
                    PDataValueType::Command => {
                        if let Some((_, cmd)) = commands.push(pdv)? {
                            if !cmd.has_data_set {
                                return Ok(Response {
                                    command: cmd,
                                    data_set: None,
                                });
                            }
                            command = Some(cmd);
                        }
                    }
                    PDataValueType::Data => {
                        if data.len() + pdv.data.len() > MAX_RESPONSE_DATA_SET {
                            return Err(DimseError::Protocol(
                                "response data set larger than 16 MiB".into(),
                            ));
                        }
                        data.extend_from_slice(&pdv.data);
                        if pdv.is_last {
                            let Some(cmd) = command.take() else {
                                return Err(DimseError::Protocol(
                                    "data set before its command".into(),
                                ));
                            };
                            return Ok(Response {
                                command: cmd,
                                data_set: Some(data),
                            });
                        }
                    }
                }
            }
        }
    }

    /// C-ECHO; returns the status the peer answered.
    pub async fn echo(&mut self) -> Result<u16, DimseError> {
        let (pc_id, _) = self
            .accepted_context(dicom_dictionary_std::uids::VERIFICATION)
            .ok_or_else(|| {
                DimseError::Protocol("the peer refused the Verification SOP class".into())
            })?;
        let id = self.next_message_id();
        self.send(pc_id, &Command::c_echo_rq(id), None).await?;
        let rsp = self.receive().await?;
        rsp.command
            .status
            .ok_or_else(|| DimseError::Protocol("C-ECHO-RSP without a status".into()))
    }

    pub async fn release(self) -> Result<(), DimseError> {
        on_link!(self.assoc, a => a.release().await.map_err(DimseError::send))
    }
}

/// An error and its causes on one line: a TLS failure says why the
/// certificate did not verify only in its source.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let more = err.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cur = err.source();
    }
    text
}

/// Whether an error, or any error behind it, is an I/O timeout.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// One C-ECHO on a fresh association, within `timeout` (readiness checks).
pub async fn echo_once(scu: &ScuConfig, timeout: Duration) -> Result<(), DimseError> {
    let scu = ScuConfig {
        timeout: scu.timeout.min(timeout),
        ..scu.clone()
    };
    let mut assoc = ScuAssociation::connect(&scu, &[verification_proposal()]).await?;
    let status = assoc.echo().await;
    let _ = assoc.release().await;
    match status? {
        0 => Ok(()),
        s => Err(DimseError::Protocol(format!(
            "C-ECHO answered status {s:04X}"
        ))),
    }
}

/// The everyday proposal for Verification.
pub fn verification_proposal() -> Proposal {
    Proposal::uncompressed(dicom_dictionary_std::uids::VERIFICATION)
}
