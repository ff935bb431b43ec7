//! Direction B: we are a DICOMweb origin server with a DIMSE PACS behind us.
//! Each route turns an HTTP request into DIMSE work on the PACS; errors turn
//! outward in exactly one place, [`WebError`]'s `IntoResponse`.

pub mod accept;
pub mod coalesce;
pub mod commitment;
pub mod frames;
mod metadata;
pub mod qido;
pub mod rendered;
pub mod retrieve;
pub mod stow;
mod transfer;
pub mod wado;
pub mod wado_uri;
mod worklist;

use crate::cache::Cache;
use crate::config::RetrieveMode;
use crate::config::WebLimits;
use crate::dimse::client::ScuConfig;
use crate::dimse::move_inbox::MoveInbox;
use crate::dimse::pool::Pool;
use crate::dimse::DimseError;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use coalesce::Coalesce;
use std::sync::Arc;

/// One PACS behind our DICOMweb face, and what its routes need.
pub struct PacsService {
    /// The `[[pacs]]` name: named in every error message about it.
    pub name: String,
    /// Every association to the PACS comes from here (calling AE = ours,
    /// called AE and address = the PACS).
    pub pool: Arc<Pool>,
    pub retrieve: RetrieveMode,
    /// Where this PACS's routes live ("/dicom-web" for the default,
    /// "/pacs/x/dicom-web" for the others): RetrieveURL and BulkDataURI
    /// values start with it.
    pub base_path: String,
    pub cache: Arc<Cache>,
    /// Where C-MOVE sub-operations to our own AE find their request.
    pub moves: Arc<MoveInbox>,
    /// `/commitment-requests`, shared by every PACS.
    pub commitments: Arc<commitment::Commitments>,
    /// A QIDO-RS answer holds at most this many matches.
    pub qido_max_results: usize,
    /// Body sizes and part counts one request may send.
    pub limits: WebLimits,
    /// Retrievals in progress, joined by requests that need the same instances.
    pub flights: Arc<retrieve::Flights>,
    /// Identical QIDO-RS queries in flight (or kept) share one C-FIND.
    pub queries: Coalesce<Vec<u8>, qido::Page, WebError>,
}

impl PacsService {
    pub fn scu(&self) -> &ScuConfig {
        self.pool.scu()
    }

    /// This PACS's DICOMweb root as the client reached it, e.g.
    /// `http://pons:8080/dicom-web`: absolute URLs start with it. The
    /// public prefix comes from `web::origin` (public_url, trusted proxies,
    /// Host); without one, the root is the bare path.
    pub fn public_root(&self, headers: &HeaderMap, _uri: &Uri) -> String {
        let prefix = headers
            .get(crate::web::origin::PUBLIC_PREFIX)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        format!("{prefix}{}", self.base_path)
    }
}

/// Retry-After (seconds) for a busy PACS: work there takes about a second.
const BUSY_RETRY_AFTER: u64 = 2;
/// Retry-After for a PACS that cannot be reached at all.
const UNAVAILABLE_RETRY_AFTER: u64 = 10;

/// Every way a DICOMweb request can fail, each with a message a person can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The PACS cannot be reached or refused the association.
    #[error("PACS {pacs} is unavailable: {detail}")]
    PacsUnavailable { pacs: String, detail: String },
    /// Every association we may open to the PACS is busy, or the PACS
    /// refused one for now: try again shortly.
    #[error("PACS {pacs} is busy, try again shortly: {detail}")]
    PacsBusy { pacs: String, detail: String },
    /// The PACS answered, but with a failure or something unreadable.
    #[error("PACS {pacs} failed: {detail}")]
    PacsFailed { pacs: String, detail: String },
    #[error("PACS {pacs} did not answer within {secs} s")]
    PacsTimeout { pacs: String, secs: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl WebError {
    /// A DIMSE failure talking to `pacs`, sorted by what the client can do about it.
    pub fn from_dimse(pacs: &str, e: DimseError) -> WebError {
        let pacs = pacs.to_owned();
        match e {
            DimseError::Timeout { secs, .. } => WebError::PacsTimeout { pacs, secs },
            DimseError::Busy { detail, .. } => WebError::PacsBusy { pacs, detail },
            DimseError::Associate { .. } | DimseError::Aborted => WebError::PacsUnavailable {
                pacs,
                detail: e.to_string(),
            },
            other => WebError::PacsFailed {
                pacs,
                detail: other.to_string(),
            },
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            WebError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Gone(_) => StatusCode::GONE,
            WebError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::PacsUnavailable { .. } | WebError::PacsBusy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            WebError::PacsFailed { .. } => StatusCode::BAD_GATEWAY,
            WebError::PacsTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let body = format!("{self}\n");
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response();
        let retry_after = match &self {
            WebError::PacsBusy { .. } => Some(BUSY_RETRY_AFTER),
            WebError::PacsUnavailable { .. } => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("digits"),
            );
        }
        response
    }
}

/// The DICOMweb routes of every PACS: each at `/pacs/{name}{base_path}`,
/// the first (the default) also at `base_path`.
pub fn router(services: &[Arc<PacsService>], base_path: &str) -> Router {
    let mut router = Router::new();
    for (i, svc) in services.iter().enumerate() {
        let routes = || {
            Router::new()
                .merge(qido::routes())
                .merge(wado::routes())
                .merge(frames::routes())
                .merge(rendered::routes())
                .merge(wado_uri::routes())
                .merge(metadata::routes())
                .merge(stow::routes())
                .merge(commitment::routes())
                .merge(worklist::routes())
                .with_state(svc.clone())
                // Buffered bodies (JSON); STOW-RS streams and counts its own.
                .layer(DefaultBodyLimit::max(
                    svc.limits.json_max_kb.saturating_mul(1024),
                ))
        };
        if i == 0 {
            router = router.nest(base_path, routes());
        }
        router = router.nest(&format!("/pacs/{}{base_path}", svc.name), routes());
    }
    router
}
