//! The TOML configuration model. `validate` collects every problem at once so
//! that `pons check-config` can print them all.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod ae;
mod auth;
mod limits;
mod route;
mod tls;
mod validate;
pub use ae::{find_ae, AeConfig, Service};
pub use auth::{JwtConfig, Permission, TokenEntry, UserEntry, WebAuth};
pub use limits::WebLimits;
pub use route::{RouteConfig, DEFAULT_UPSTREAM};
pub use tls::{ClientTls, DimseTls, ServerTls};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dimse: DimseConfig,
    #[serde(default)]
    pub web: WebConfig,
    /// Direction A: one `[upstream]` or several named `[[upstream]]`.
    #[serde(default, deserialize_with = "route::one_or_many")]
    pub upstream: Vec<UpstreamConfig>,
    /// Which called AE title goes to which upstream (and which C-STOREs
    /// also go elsewhere). Without any: `dimse.ae_title` to the first.
    #[serde(default)]
    pub route: Vec<RouteConfig>,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub jobs: JobsConfig,
    #[serde(default)]
    pub ae: Vec<AeConfig>,
    /// Direction B: the DIMSE PACS behind our DICOMweb face; the first is
    /// served at `web.base_path`, each also at `/pacs/{name}{base_path}`.
    #[serde(default)]
    pub pacs: Vec<PacsConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    /// One JSON line per operation on patient data.
    pub audit: Option<crate::audit::AuditConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimseConfig {
    pub ae_title: String,
    pub listen: SocketAddr,
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    #[serde(default = "default_max_pdu")]
    pub max_pdu: u32,
    /// Accept associations from calling AE titles not listed in `[[ae]]`.
    #[serde(default)]
    pub accept_any_calling_ae: bool,
    /// Seconds allowed for the A-ASSOCIATE exchange.
    #[serde(default = "default_association_timeout")]
    pub association_timeout_secs: u64,
    /// Seconds an established association may stay silent before we abort it.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds running associations get to finish after SIGTERM.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// A C-FIND with more matches ends in A700 "narrow the query", never truncated.
    #[serde(default = "default_find_max_results")]
    pub find_max_results: usize,
    /// Storage commitment: how long after the N-ACTION we keep trying to
    /// answer (ask the archive, deliver the N-EVENT-REPORT) before giving up.
    #[serde(default = "default_commitment_report_deadline")]
    pub commitment_report_deadline_secs: u64,
    /// A C-MOVE or C-GET naming more instances than this is refused (A702)
    /// before any is sent: the list is held in memory while it runs.
    #[serde(default = "default_max_sub_operations")]
    pub max_sub_operations: usize,
    /// A second listener, DICOM TLS only.
    pub tls: Option<DimseTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default = "default_web_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_base_path")]
    pub base_path: String,
    /// Origins allowed to call us from a browser (CORS); `"*"` allows any.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// `/commitment-requests`: how long the PACS has to send its
    /// N-EVENT-REPORT before every instance is reported as a processing failure.
    #[serde(default = "default_commitment_deadline")]
    pub commitment_deadline_secs: u64,
    /// How long a commitment result stays readable; then GET answers 410.
    #[serde(default = "default_commitment_retention")]
    pub commitment_retention_secs: u64,
    /// QIDO-RS answers at most this many matches (a smaller `limit` wins);
    /// a Warning header says when more exist.
    #[serde(default = "default_qido_max_results")]
    pub qido_max_results: usize,
    /// Seconds a QIDO-RS result is reused for the same query (0: only by
    /// requests that arrive while it is being fetched).
    #[serde(default)]
    pub qido_cache_secs: u64,
    #[serde(default)]
    pub limits: WebLimits,
    #[serde(default)]
    pub auth: WebAuth,
    /// HTTPS (h2 and http/1.1 by ALPN); plain HTTP without it.
    pub tls: Option<ServerTls>,
    /// How clients reach the DICOMweb face (ends with `base_path`): every
    /// absolute URL Pons writes starts with it. Default: from each request.
    pub public_url: Option<String>,
    /// Peers (CIDRs) whose Forwarded / X-Forwarded-* headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn default_qido_max_results() -> usize {
    1000
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: default_web_listen(),
            base_path: default_base_path(),
            cors_origins: Vec::new(),
            commitment_deadline_secs: default_commitment_deadline(),
            commitment_retention_secs: default_commitment_retention(),
            qido_max_results: default_qido_max_results(),
            qido_cache_secs: 0,
            limits: WebLimits::default(),
            auth: WebAuth::default(),
            tls: None,
            public_url: None,
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_commitment_deadline() -> u64 {
    86400
}
fn default_commitment_retention() -> u64 {
    7 * 86400
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RetrieveMode {
    /// C-GET: the instances come back on the same association.
    #[default]
    CGet,
    /// C-MOVE to our own AE: the PACS must know our AE title and address.
    CMove,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacsConfig {
    /// Names the PACS in URLs (`/pacs/{name}/dicom-web`) and messages.
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub retrieve: RetrieveMode,
    /// Seconds to associate, and the longest silence within one operation.
    #[serde(default = "default_pacs_timeout")]
    pub timeout_secs: u64,
    /// Associations open to this PACS at once, for every kind of work.
    #[serde(default = "default_pacs_max_associations")]
    pub max_associations: usize,
    /// An association unused this long is released.
    #[serde(default = "default_pacs_idle")]
    pub idle_secs: u64,
    /// Work beyond `max_associations` waits this long, then gets 503.
    #[serde(default = "default_pacs_queue_timeout")]
    pub queue_timeout_secs: u64,
    /// Every association to this PACS uses DICOM TLS.
    #[serde(default)]
    pub tls: bool,
    /// With `tls`: the CA the PACS's certificate must chain to, and ours
    /// (default: `[dimse.tls]` cert and key).
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl PacsConfig {
    pub fn client_tls(&self) -> Option<ClientTls> {
        self.tls.then(|| ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}

fn default_pacs_max_associations() -> usize {
    8
}
fn default_pacs_idle() -> u64 {
    20
}
fn default_pacs_queue_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Retrieved instances, kept so that metadata, frames and rendered
    /// views of one study cost one PACS retrieval.
    #[serde(default = "default_cache_dir")]
    pub dir: PathBuf,
    /// Least recently used instances leave once the cache exceeds this.
    #[serde(default = "default_cache_max_mb")]
    pub max_mb: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: default_cache_dir(),
            max_mb: default_cache_max_mb(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// What `[[route]]` calls it; a single `[upstream]` is "default".
    #[serde(default = "route::default_upstream_name")]
    pub name: String,
    /// Base URL of the DICOMweb origin, e.g. `https://archive/dicom-web`.
    pub url: String,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_stow_batch")]
    pub stow_batch: usize,
    #[serde(default = "default_stow_concurrency")]
    pub stow_concurrency: usize,
    /// HTTP requests in flight to the origin at once, from every client
    /// (C-FIND, C-MOVE, C-GET, commitment, STOW); more wait their turn.
    #[serde(default = "default_upstream_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// QIDO-RS page size (limit); C-FIND walks pages until the origin has no more.
    #[serde(default = "default_qido_page_size")]
    pub qido_page_size: usize,
    /// Send `fuzzymatching=true` with every QIDO-RS query (person names).
    #[serde(default)]
    pub fuzzy_matching: bool,
    /// Whole-request timeout (a STOW batch must finish within it).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// How storage commitment is asked of the origin.
    #[serde(default)]
    pub commitment: CommitmentMode,
    /// Where a modality's worklist query is asked.
    #[serde(default)]
    pub worklist: WorklistMode,
    /// A private CA for the origin's certificate (instead of the public roots).
    pub ca: Option<PathBuf>,
    /// Our client certificate and key, for an origin that requires mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl UpstreamConfig {
    pub fn client_tls(&self) -> Option<ClientTls> {
        (self.ca.is_some() || self.cert.is_some() || self.key.is_some()).then(|| ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CommitmentMode {
    /// `dicomweb` if the origin has /commitment-requests, else `verify`
    /// (probed once, at the first commitment).
    #[default]
    Auto,
    /// POST /commitment-requests/{transactionUID}, then poll GET.
    Dicomweb,
    /// Look each instance up with QIDO-RS: present with its SOP class means committed.
    Verify,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorklistMode {
    /// `mwl` if the origin answers /modality-scheduled-procedure-steps, else
    /// `ups` (decided at the first worklist query).
    #[default]
    Auto,
    /// The DICOMweb Modality Worklist service (Supplement 246).
    Mwl,
    /// UPS-RS: `GET /workitems`, scheduled workitems as worklist entries.
    Ups,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum AuthConfig {
    Bearer {
        token: Option<String>,
        token_file: Option<PathBuf>,
    },
    Basic {
        username: String,
        password: Option<String>,
        password_file: Option<PathBuf>,
    },
    /// OAuth2 client credentials grant; the token is renewed before it expires.
    Oauth2 {
        token_url: String,
        client_id: String,
        client_secret_file: PathBuf,
        scope: Option<String>,
        audience: Option<String>,
    },
    /// A Google service account key file (JWT-bearer grant), scope cloud-healthcare.
    Google { service_account_file: PathBuf },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpoolMode {
    /// Acknowledge once the instance is on disk; forward in the background.
    #[default]
    Spool,
    /// Acknowledge only once the upstream archive has accepted the instance.
    Direct,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    #[serde(default)]
    pub mode: SpoolMode,
    #[serde(default = "default_spool_dir")]
    pub dir: PathBuf,
    /// Longest wait between two delivery attempts of one instance.
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            mode: SpoolMode::default(),
            dir: default_spool_dir(),
            retry_max_secs: default_retry_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// `memory`, `sqlite:///path/jobs.db`, or `postgres://user@host/db`
    /// (one table shared by several Pons instances).
    #[serde(default = "default_jobs_url")]
    pub url: String,
    /// This instance's name in a shared table: spooled instances are sent
    /// only by the node whose disk holds them. Default: hostname + spool dir.
    pub node: Option<String>,
    /// How long a claimed job that any node may work (storage commitment)
    /// stays claimed after its worker stops renewing: the takeover time
    /// when a Pons dies.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// Finished jobs (and refused spool files) older than this are purged.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
}

fn default_retention_days() -> u64 {
    30
}

fn default_lease_secs() -> u64 {
    30
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            url: default_jobs_url(),
            node: None,
            lease_secs: default_lease_secs(),
            retention_days: default_retention_days(),
        }
    }
}

fn default_max_associations() -> usize {
    64
}
fn default_max_pdu() -> u32 {
    131_072
}
fn default_association_timeout() -> u64 {
    30
}
fn default_idle_timeout() -> u64 {
    300
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_commitment_report_deadline() -> u64 {
    86_400
}
fn default_max_sub_operations() -> usize {
    100_000
}
fn default_find_max_results() -> usize {
    10_000
}
fn default_qido_page_size() -> usize {
    500
}
fn default_web_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("literal address")
}
fn default_base_path() -> String {
    "/dicom-web".into()
}
fn default_stow_batch() -> usize {
    50
}
fn default_upstream_max_connections() -> usize {
    32
}
fn default_stow_concurrency() -> usize {
    4
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    300
}
fn default_spool_dir() -> PathBuf {
    "/var/lib/pons/spool".into()
}
fn default_retry_max() -> u64 {
    300
}
fn default_pacs_timeout() -> u64 {
    30
}
fn default_cache_dir() -> PathBuf {
    "/var/lib/pons/cache".into()
}
fn default_cache_max_mb() -> u64 {
    10_240
}
fn default_jobs_url() -> String {
    "sqlite:///var/lib/pons/jobs.db".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// How we call a DIMSE peer over TLS: its entry's files, our
    /// certificate defaulting to `[dimse.tls]`'s.
    pub fn dimse_client_tls(
        &self,
        tls: Option<ClientTls>,
    ) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        let Some(mut tls) = tls else {
            return Ok(None);
        };
        if tls.cert.is_none() {
            if let Some(ours) = &self.dimse.tls {
                tls.cert = Some(ours.cert.clone());
                tls.key = Some(ours.key.clone());
            }
        }
        Ok(Some(std::sync::Arc::new(crate::tls::client_config(
            &tls, false,
        )?)))
    }

    /// Build the TLS client configurations of the `[[ae]]` we call.
    pub fn prepare_tls(&mut self) -> anyhow::Result<()> {
        let built = self
            .ae
            .iter()
            .map(|ae| {
                self.dimse_client_tls(ae.client_tls())
                    .map_err(|e| e.context(format!("[[ae]] {}", ae.title)))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (ae, tls) in self.ae.iter_mut().zip(built) {
            ae.tls_client = tls;
        }
        Ok(())
    }

    pub fn find_ae(&self, title: &str) -> Option<&AeConfig> {
        find_ae(&self.ae, title)
    }
}

#[cfg(test)]
mod tests;
