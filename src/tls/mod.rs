//! TLS for every wire, with rustls and its ring provider. Only TLS 1.2 and
//! 1.3, and for 1.2 only the ECDHE AES-GCM suites (BCP 195 / RFC 9325, as
//! PS3.15 B.12 asks). Servers reload their certificate when its files change
//! or on SIGHUP; running connections keep the one they started with.

use crate::config::{ClientTls, ServerTls};
use anyhow::{anyhow, Context};
use rustls::crypto::ring::cipher_suite as suite;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod peer;
pub use peer::{peer_is, with_peer_slot};

/// The suites we offer and accept, strongest first.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    Arc::new(p)
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        anyhow!(
            "cannot read a private key from {} (PEM, unencrypted): {e}",
            path.display()
        )
    })
}

fn roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store
            .add(cert)
            .with_context(|| format!("a CA certificate in {}", path.display()))?;
    }
    Ok(store)
}

pub fn server_config(spec: &ServerTls, alpn: &[&[u8]]) -> anyhow::Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .expect("TLS 1.2 and 1.3 with ring");
    let builder = match &spec.client_ca {
        Some(ca) => builder.with_client_cert_verifier(Arc::new(peer::Capturing(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .context("client_ca")?,
        ))),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs(&spec.cert)?, key(&spec.key)?)
        .with_context(|| {
            format!(
                "{} and {} are not a certificate and its key",
                spec.cert.display(),
                spec.key.display()
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if spec.client_ca.is_some() {
        // No resumption: a resumed session skips the certificate verifier,
        // which is where the client's certificate is noted for the AE check.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

/// A peer we call: `ca` (else the system's roots when `system_roots`), and
/// our certificate when we have one.
pub fn client_config(spec: &ClientTls, system_roots: bool) -> anyhow::Result<ClientConfig> {
    let roots = match &spec.ca {
        Some(ca) => roots(ca)?,
        None if system_roots => system_root_store(),
        None => return Err(anyhow!("TLS to a DIMSE peer needs `ca`")),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .expect("TLS 1.2 and 1.3 with ring")
        .with_root_certificates(roots);
    Ok(match (&spec.cert, &spec.key) {
        (Some(cert), Some(key_path)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_path)?)
            .with_context(|| format!("{} and its key", cert.display()))?,
        _ => builder.with_no_client_auth(),
    })
}

fn system_root_store() -> RootCertStore {
    let mut store = RootCertStore::empty();
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(iter) = CertificateDer::pem_file_iter(path) {
            for cert in iter.flatten() {
                let _ = store.add(cert);
            }
            break;
        }
    }
    store
}

/// A server's TLS configuration, replaced when its files change.
pub struct Reloading {
    spec: ServerTls,
    alpn: Vec<&'static [u8]>,
    what: &'static str,
    current: RwLock<(Arc<ServerConfig>, Vec<Stamp>)>,
}

impl Reloading {
    pub fn new(
        spec: &ServerTls,
        alpn: &[&'static [u8]],
        what: &'static str,
    ) -> anyhow::Result<Arc<Reloading>> {
        let stamps = stamps(spec);
        let config = server_config(spec, alpn).with_context(|| format!("[{what}]"))?;
        Ok(Arc::new(Reloading {
            spec: spec.clone(),
            alpn: alpn.to_vec(),
            what,
            current: RwLock::new((Arc::new(config), stamps)),
        }))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        tokio_rustls::TlsAcceptor::from(current.0.clone())
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Read the files again if they changed (or `force`); a broken new
    /// certificate is logged and the old one kept.
    pub fn reload(&self, force: bool) {
        let now = stamps(&self.spec);
        if !force && now == self.current.read().unwrap_or_else(|e| e.into_inner()).1 {
            return;
        }
        match server_config(&self.spec, &self.alpn) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(config), now);
                info!(face = self.what, cert = %self.spec.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                warn!(face = self.what, error = %format!("{e:#}"), "TLS certificate not reloaded; keeping the old one");
                // Not again until the files change again.
                self.current.write().unwrap_or_else(|e| e.into_inner()).1 = now;
            }
        }
    }

    /// Watch the files (every few seconds) and SIGHUP until `stop`.
    pub fn watch(self: &Arc<Self>, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                let forced = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                this.reload(forced);
            }
        });
    }
}

/// What tells that a file changed: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamps(spec: &ServerTls) -> Vec<Stamp> {
    let paths: Vec<&PathBuf> = [&spec.cert, &spec.key]
        .into_iter()
        .chain(spec.client_ca.as_ref())
        .collect();
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}
