//! TLS settings: the faces we serve (`[web.tls]`, `[dimse.tls]`) and the
//! peers we call (`[[pacs]]`, `[[ae]]`, `[upstream]`).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A face we serve over TLS. Files are PEM; they are read again when they
/// change, so a renewed certificate needs no restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// Our certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificates a client's certificate must chain to; without it
    /// clients are not asked for one.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    pub fn validate(&self, key: &str, p: &mut Vec<String>) {
        for (name, path) in [("cert", Some(&self.cert)), ("key", Some(&self.key))]
            .into_iter()
            .chain([("client_ca", self.client_ca.as_ref())])
        {
            if let Some(path) = path {
                if !path.is_file() {
                    p.push(format!(
                        "{key}.{name}: {} is not a readable file",
                        path.display()
                    ));
                }
            }
        }
    }
}

/// `[dimse.tls]`: a second DIMSE listener, TLS only (port 2762 by convention).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimseTls {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl DimseTls {
    pub fn server(&self) -> ServerTls {
        ServerTls {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
        }
    }
}

/// How we verify a peer we call, and the certificate we show it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// CA certificates the peer's certificate must chain to; without it the
    /// system's roots (web) or nothing (DIMSE: `ca` is required).
    pub ca: Option<PathBuf>,
    /// Our client certificate and key, for peers that require one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTls {
    pub fn validate(&self, key: &str, p: &mut Vec<String>) {
        if self.cert.is_some() != self.key.is_some() {
            p.push(format!("{key}: cert and key go together"));
        }
        for (name, path) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if let Some(path) = path {
                if !path.is_file() {
                    p.push(format!(
                        "{key}.{name}: {} is not a readable file",
                        path.display()
                    ));
                }
            }
        }
    }
}
