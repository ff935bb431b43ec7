//! `[[ae]]`: the DIMSE peers we know, and what each may ask of us.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AeConfig {
    pub title: String,
    pub host: String,
    pub port: u16,
    /// The services this AE may use; absent: all of them.
    #[serde(default)]
    pub services: Option<Vec<Service>>,
    /// The destinations its C-MOVEs may name; absent: any `[[ae]]`.
    #[serde(default)]
    pub move_destinations: Option<Vec<String>>,
    /// Only a TLS client whose certificate names this (a DNS name or IP
    /// address among its subject alternative names) may call as this AE.
    pub certificate_name: Option<String>,
    /// Associations we open to this AE (C-MOVE destination, N-EVENT-REPORT)
    /// use DICOM TLS.
    #[serde(default)]
    pub tls: bool,
    /// With `tls`: the CA our peer's certificate must chain to, and ours
    /// (default: `[dimse.tls]` cert and key).
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// Built from the above at start (`Config::prepare_tls`).
    #[serde(skip)]
    pub tls_client: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl AeConfig {
    pub fn client_tls(&self) -> Option<super::ClientTls> {
        self.tls.then(|| super::ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}

/// A DIMSE service a calling AE may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Echo,
    Store,
    Find,
    /// Modality Worklist C-FIND.
    Worklist,
    Get,
    Move,
    /// Storage commitment (N-ACTION).
    Commit,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Echo => "C-ECHO",
            Service::Store => "C-STORE",
            Service::Find => "C-FIND",
            Service::Worklist => "the worklist",
            Service::Get => "C-GET",
            Service::Move => "C-MOVE",
            Service::Commit => "storage commitment",
        }
    }
}

impl AeConfig {
    pub fn may(&self, service: Service) -> bool {
        self.services.as_ref().is_none_or(|s| s.contains(&service))
    }

    pub fn may_move_to(&self, destination: &str) -> bool {
        let destination = destination.trim();
        self.move_destinations
            .as_ref()
            .is_none_or(|d| d.iter().any(|t| t.trim() == destination))
    }
}

/// The `[[ae]]` entry with this title; titles compare without padding.
pub fn find_ae<'a>(aes: &'a [AeConfig], title: &str) -> Option<&'a AeConfig> {
    let title = title.trim();
    aes.iter().find(|ae| ae.title.trim() == title)
}
