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
}

/// A DIMSE service a calling AE may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Echo,
    Store,
    Find,
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
