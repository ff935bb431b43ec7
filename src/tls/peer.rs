//! The client certificate of the connection being accepted, for binding a
//! calling AE title to it. rustls verifies the chain during the handshake;
//! this wrapper also keeps the certificate in a task-local slot that the
//! association's access check (same task, later) reads.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static PEER_CERT: RefCell<Option<CertificateDer<'static>>>;
}

/// Run `fut` (a TLS accept and what follows) with a slot for the client
/// certificate.
pub async fn with_peer_slot<F: Future>(fut: F) -> F::Output {
    PEER_CERT.scope(RefCell::new(None), fut).await
}

/// Whether the verified client certificate of this connection names `name`
/// (a DNS name or IP address) among its subject alternative names. False
/// outside TLS or without a certificate.
pub fn peer_is(name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name.to_owned()) else {
        return false;
    };
    PEER_CERT
        .try_with(|slot| {
            slot.borrow().as_ref().is_some_and(|der| {
                let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
                    return false;
                };
                let names = |n: &ServerName| cert.verify_is_valid_for_subject_name(n).is_ok();
                // A wildcard certificate (*.example.org) would name every
                // device of the domain: only an exact name binds an AE.
                let sibling = matches!(server_name, ServerName::DnsName(_))
                    .then(|| name.split_once('.'))
                    .flatten()
                    .and_then(|(_, domain)| {
                        ServerName::try_from(format!("pons-probe-x7.{domain}")).ok()
                    });
                names(&server_name) && !sibling.is_some_and(|s| names(&s))
            })
        })
        .unwrap_or(false)
}

#[derive(Debug)]
pub struct Capturing(pub Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Capturing {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        let _ =
            PEER_CERT.try_with(|slot| *slot.borrow_mut() = Some(end_entity.clone().into_owned()));
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
