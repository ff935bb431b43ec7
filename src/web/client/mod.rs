//! The upstream DICOMweb client (direction A): STOW-RS here, QIDO-RS in
//! [`qido`], WADO-RS in [`wado`].

use crate::config::{AuthConfig, UpstreamConfig};
use crate::translate::stow::parse_stow_response;
use crate::web::multipart;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod commitment;
mod qido;
mod token;
mod wado;

pub use crate::dicom::part10::FileMetaInfo;
pub use commitment::CommitmentAnswer;
pub use wado::{Part, RetrievedParts};

/// One PS3.10 file to send.
#[derive(Debug, Clone)]
pub struct StowItem {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

pub use crate::translate::stow::InstanceOutcome;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream configuration: {0}")]
    Config(String),
    #[error("cannot reach upstream {url}: {message}")]
    Connect { url: String, message: String },
    #[error("upstream {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("upstream {url} answered HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Every one of `upstream.max_connections` is in use and stayed so.
    #[error("all {max} connections to upstream {url} are busy; waited {secs} s")]
    Busy { url: String, max: usize, secs: u64 },
    #[error("upstream {url} sent a response we cannot read: {message}")]
    BadResponse { url: String, message: String },
    #[error("no access token for the upstream from {endpoint}: {message}")]
    Token { endpoint: String, message: String },
    #[error("cannot read spooled file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl UpstreamError {
    /// Worth retrying: connection problems, timeouts, 5xx, 408 and 429.
    /// An unreadable answer is retried too: the archive may well have stored
    /// the instances, and sending them again is harmless.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::Busy { .. }
            | UpstreamError::Token { .. }
            | UpstreamError::BadResponse { .. } => true,
            UpstreamError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            UpstreamError::Config(_) | UpstreamError::File { .. } => false,
        }
    }
    /// The origin (or our share of it) is overloaded: 429, 503, or no free
    /// connection. Modalities should try again later.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            UpstreamError::Busy { .. }
                | UpstreamError::Status {
                    status: 429 | 503,
                    ..
                }
        )
    }

    /// The delay the upstream asked for (Retry-After), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Largest STOW response body we read (it lists every instance of a batch).
const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;
/// Of an error answer we keep only the start, for the message.
const MAX_ERROR_BODY: usize = 64 * 1024;
const ERROR_MESSAGE_CHARS: usize = 300;
const PING_TIMEOUT: Duration = Duration::from_secs(5);
const DICOM_JSON: &str = "application/dicom+json";
const DICOM: &str = "application/dicom";

enum Auth {
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
    /// Expiring tokens, fetched and renewed as needed.
    Tokens(Box<token::Tokens>),
}

pub struct UpstreamClient {
    http: reqwest::Client,
    /// Without trailing '/'.
    base: String,
    auth: Auth,
    request_timeout: Duration,
    /// One permit per request in flight (`upstream.max_connections`).
    turns: Arc<Semaphore>,
    max_connections: usize,
    /// How long a request waits for its turn before it is [`UpstreamError::Busy`].
    turn_wait: Duration,
}

/// A request's turn among `max_connections`: hold it until its answer is read.
pub type Turn = OwnedSemaphorePermit;

impl UpstreamClient {
    pub fn new(config: &UpstreamConfig) -> Result<UpstreamClient, UpstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(DICOM_JSON));
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| UpstreamError::Config(format!("header name {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| UpstreamError::Config(format!("header {name} value: {e}")))?;
            headers.insert(name, value);
        }
        let request_timeout = Duration::from_secs(config.request_timeout_secs);
        // reqwest never sends `Expect: 100-continue` (Orthanc would stall 1 s per request on it).
        // The whole-request timeout is set per request: a WADO-RS retrieve of
        // a large study may rightly take longer, and is bounded by the idle
        // (read) timeout instead.
        let mut http = reqwest::Client::builder();
        if let Some(tls) = config.client_tls() {
            let tls = crate::tls::client_config(&tls, true)
                .map_err(|e| UpstreamError::Config(format!("{e:#}")))?;
            http = http.use_preconfigured_tls(tls);
        }
        let http = http
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .read_timeout(request_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| UpstreamError::Config(format!("HTTP client: {e}")))?;
        Ok(UpstreamClient {
            http,
            base: config.url.trim_end_matches('/').to_owned(),
            auth: read_auth(config.auth.as_ref())?,
            request_timeout,
            turns: Arc::new(Semaphore::new(config.max_connections.max(1))),
            max_connections: config.max_connections.max(1),
            turn_wait: Duration::from_secs(config.connect_timeout_secs.max(1)),
        })
    }

    /// The base URL, without trailing '/'. Only the unit tests ask.
    #[cfg(test)]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request that must complete within the request timeout.
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.request_untimed(method, url)
            .timeout(self.request_timeout)
    }

    /// A request bounded only by the idle timeout (for streamed answers).
    fn request_untimed(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.auth {
            Auth::None | Auth::Tokens(_) => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic { username, password } => req.basic_auth(username, Some(password)),
        }
    }

    /// Send with the current access token; on 401 drop it, and ask once
    /// more with a new one when the request can be sent again (a streamed
    /// STOW body cannot: the spool sends it again later).
    async fn send_authorized(
        &self,
        req: reqwest::RequestBuilder,
        token: Option<String>,
    ) -> Result<Result<reqwest::Response, reqwest::Error>, UpstreamError> {
        let (Auth::Tokens(tokens), Some(token)) = (&self.auth, token) else {
            return Ok(req.send().await);
        };
        let again = req.try_clone();
        let resp = req.bearer_auth(&token).send().await;
        if !matches!(&resp, Ok(r) if r.status() == StatusCode::UNAUTHORIZED) {
            return Ok(resp);
        }
        tokens.invalidate(&token).await;
        let Some(again) = again else {
            return Ok(resp);
        };
        tracing::info!("upstream answered 401; asking once more with a new token");
        let token = tokens.get().await?;
        Ok(again.bearer_auth(&token).send().await)
    }

    /// Send in turn: at most `max_connections` requests are in flight, the
    /// rest wait (fairly) up to `turn_wait`.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        timeout: Duration,
    ) -> Result<(reqwest::Response, Turn), UpstreamError> {
        // The token first: a slow token endpoint must not hold a turn.
        let token = match &self.auth {
            Auth::Tokens(tokens) => Some(tokens.get().await?),
            _ => None,
        };
        let turn = tokio::time::timeout(self.turn_wait, self.turns.clone().acquire_owned())
            .await
            .map_err(|_| UpstreamError::Busy {
                url: url.to_owned(),
                max: self.max_connections,
                secs: self.turn_wait.as_secs(),
            })?
            .expect("the semaphore is never closed");
        let operation = operation(&req, url);
        let started = std::time::Instant::now();
        let resp = self.send_authorized(req, token).await?;
        let metrics = crate::metrics::get();
        let status = resp
            .as_ref()
            .map_or_else(|_| "error".to_owned(), |r| r.status().as_u16().to_string());
        metrics
            .upstream_requests
            .get_or_create(&crate::metrics::UpstreamOp { operation, status })
            .inc();
        metrics
            .upstream_duration
            .get_or_create(&crate::metrics::Operation { operation })
            .observe(started.elapsed().as_secs_f64());
        let resp = resp.map_err(|e| self.transport_error(url, e, timeout))?;
        Ok((resp, turn))
    }

    /// Send a GET and keep only a success: a transport failure or any other
    /// status is the error that says why.
    async fn get_ok(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        timeout: Duration,
    ) -> Result<(reqwest::Response, Turn), UpstreamError> {
        let (resp, turn) = self.send(req, url, timeout).await?;
        if !resp.status().is_success() {
            return Err(refusal(url, resp).await);
        }
        Ok((resp, turn))
    }

    /// One STOW-RS request (POST {url}/studies) carrying every item, streamed
    /// from disk; the outcome per SOP Instance UID, in the order of `items`.
    pub async fn stow(&self, items: &[StowItem]) -> Result<Vec<InstanceOutcome>, UpstreamError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // Open everything first: a missing file is our problem, not the
        // upstream's, and must be reported as such before anything is sent.
        let mut parts = Vec::with_capacity(items.len());
        for item in items {
            let file_err = |source| UpstreamError::File {
                path: item.path.clone(),
                source,
            };
            let file = tokio::fs::File::open(&item.path).await.map_err(file_err)?;
            let len = file.metadata().await.map_err(file_err)?.len();
            parts.push(multipart::FilePart {
                content_type: DICOM,
                file,
                len,
            });
        }
        let boundary = multipart::new_boundary();
        let total = multipart::body_len(&boundary, &parts);
        let content_type = multipart::related_content_type(DICOM, &boundary);
        let body = reqwest::Body::wrap_stream(multipart::body_stream(boundary, parts));
        let url = format!("{}/studies", self.base);
        let started = Instant::now();
        let req = self
            .request(reqwest::Method::POST, &url)
            .header(CONTENT_TYPE, content_type)
            // Known in advance: no chunked encoding, which some origins refuse.
            .header(CONTENT_LENGTH, total)
            .body(body);
        let (resp, _turn) = self.send(req, &url, self.request_timeout).await?;
        let status = resp.status();
        tracing::debug!(
            instances = items.len(),
            bytes = total,
            status = status.as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "STOW-RS answered"
        );
        let uids: Vec<&str> = items.iter().map(|i| i.sop_instance_uid.as_str()).collect();
        // 409: every instance failed, but the body still says why, per instance.
        if status.is_client_error() && status != StatusCode::CONFLICT {
            // Orthanc 1.10 answers 400 (not 202/409) when some instances fail,
            // with a complete STOW body: use it when it names our instances.
            let retry_after = retry_after(&resp);
            let body = read_limited(resp, MAX_RESPONSE_BODY)
                .await
                .unwrap_or_default();
            if let Ok(outcomes) = parse_stow_response(&body, &uids) {
                if outcomes
                    .iter()
                    .any(|o| *o != InstanceOutcome::NotAcknowledged)
                {
                    return Ok(outcomes);
                }
            }
            return Err(status_error(&url, status, retry_after, &body));
        }
        if !(status.is_success() || status == StatusCode::CONFLICT) {
            return Err(refusal(&url, resp).await);
        }
        let body = read_limited(resp, MAX_RESPONSE_BODY)
            .await
            .map_err(|e| self.transport_error(&url, e, self.request_timeout))?;
        let blank = body.iter().all(u8::is_ascii_whitespace);
        if blank && status != StatusCode::OK {
            // 202/409 without a body: we cannot tell which instance failed.
            return Err(UpstreamError::Status {
                url,
                status: status.as_u16(),
                message: "no response body to say which instances failed".into(),
                retry_after: None,
            });
        }
        let mut outcomes = parse_stow_response(&body, &uids)
            .map_err(|message| UpstreamError::BadResponse { url, message })?;
        if status == StatusCode::OK {
            // 200 means "all stored" (PS3.18 10.5.3), listed or not.
            for o in &mut outcomes {
                if *o == InstanceOutcome::NotAcknowledged {
                    *o = InstanceOutcome::Stored;
                }
            }
        }
        Ok(outcomes)
    }

    /// Is the upstream answering at all (for /readyz)?
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        let url = format!("{}/studies?limit=1", self.base);
        let req = self
            .request(reqwest::Method::GET, &url)
            .timeout(PING_TIMEOUT);
        self.get_ok(req, &url, PING_TIMEOUT).await.map(drop)
    }

    fn transport_error(&self, url: &str, e: reqwest::Error, timeout: Duration) -> UpstreamError {
        if e.is_timeout() {
            UpstreamError::Timeout {
                url: url.to_owned(),
                secs: timeout.as_secs(),
            }
        } else {
            UpstreamError::Connect {
                url: url.to_owned(),
                message: error_chain(&e),
            }
        }
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// A non-2xx answer as an error, with the start of its body and Retry-After.
async fn refusal(url: &str, resp: reqwest::Response) -> UpstreamError {
    let status = resp.status();
    let retry_after = retry_after(&resp);
    let body = read_limited(resp, MAX_ERROR_BODY).await.unwrap_or_default();
    status_error(url, status, retry_after, &body)
}

fn status_error(
    url: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> UpstreamError {
    UpstreamError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        message: error_message(body),
        retry_after,
    }
}

fn read_auth(auth: Option<&AuthConfig>) -> Result<Auth, UpstreamError> {
    // Secrets from files are read once, at startup, and trimmed (files
    // usually end with a newline).
    let secret = |inline: &Option<String>, file: &Option<PathBuf>, what: &str| match (inline, file)
    {
        (Some(s), _) => Ok(s.trim().to_owned()),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| {
                UpstreamError::Config(format!("cannot read {what} file {}: {e}", path.display()))
            }),
        (None, None) => Err(UpstreamError::Config(format!("no {what} configured"))),
    };
    if let Some(tokens) = auth.map(token::Tokens::new).transpose()?.flatten() {
        return Ok(Auth::Tokens(Box::new(tokens)));
    }
    Ok(match auth {
        None | Some(AuthConfig::Oauth2 { .. } | AuthConfig::Google { .. }) => Auth::None,
        Some(AuthConfig::Bearer { token, token_file }) => {
            Auth::Bearer(secret(token, token_file, "bearer token")?)
        }
        Some(AuthConfig::Basic {
            username,
            password,
            password_file,
        }) => Auth::Basic {
            username: username.clone(),
            password: secret(password, password_file, "password")?,
        },
    })
}

/// What a request to the origin is, for the metrics.
fn operation(req: &reqwest::RequestBuilder, url: &str) -> &'static str {
    // A body that cannot be cloned is a stream: a STOW-RS POST.
    let post = req
        .try_clone()
        .is_none_or(|r| r.build().is_ok_and(|r| r.method() == reqwest::Method::POST));
    let path = url.split('?').next().unwrap_or(url);
    if path.contains("/commitment-requests") {
        "commitment"
    } else if post {
        "stow"
    } else if ["/studies", "/series", "/instances"]
        .iter()
        .any(|l| path.ends_with(l))
    {
        "qido"
    } else {
        "wado"
    }
}

/// Read at most `max` bytes of the body (the rest is dropped).
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// The start of an error body, on one line.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut msg: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(ERROR_MESSAGE_CHARS)
        .collect();
    if msg.is_empty() {
        msg = "(empty body)".into();
    }
    msg
}

/// Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// reqwest's Display hides the cause ("error sending request"); keep it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests;
