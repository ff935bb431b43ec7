//! Our HTTP face: /healthz, /readyz, the operators' /jobs, and the DICOMweb
//! routes the caller hands in (direction B), behind CORS and gzip.

use crate::dimse::client::{verification_proposal, ScuAssociation, ScuConfig};
use crate::dimse::DimseError;
use crate::jobs::{JobState, JobTable, KIND_STOW};
use crate::web::client::UpstreamClient;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tracing::Instrument;

const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct WebState {
    pub upstream: Option<Arc<UpstreamClient>>,
    pub jobs: Arc<dyn JobTable>,
    /// Direction B's PACS by name, each checked with a C-ECHO.
    pub pacs: Vec<(String, ScuConfig)>,
}

pub fn router(state: WebState, dicomweb: Router, cors_origins: &[String]) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(super::admin::routes())
        .with_state(state)
        .merge(dicomweb)
        .layer(cors(cors_origins))
        // JSON answers shrink ~10×; DICOM parts are left as they are.
        .layer(
            CompressionLayer::new().gzip(true).compress_when(
                DefaultPredicate::new().and(NotForContentType::const_new("multipart/")),
            ),
        )
        .layer(middleware::from_fn(request_span))
}

/// Browser viewers on other origins may call us when their origin is listed.
fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
        ]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

/// One span per HTTP request; paths and statuses only, never bodies.
async fn request_span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path());
    async move {
        let rsp = next.run(req).await;
        tracing::debug!(status = rsp.status().as_u16(), "answered");
        rsp
    }
    .instrument(span)
    .await
}

/// Ready when the upstream and every PACS answer and the job table can be read.
async fn readyz(State(state): State<WebState>) -> impl IntoResponse {
    let upstream = match &state.upstream {
        None => Ok(()),
        Some(u) => u.ping().await.map_err(|e| e.to_string()),
    };
    let pacs = futures::future::join_all(state.pacs.iter().map(|(name, scu)| async move {
        let answer = match echo(scu).await {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        (name.clone(), answer)
    }))
    .await;
    let pacs_ok = pacs.iter().all(|(_, a)| a == "ok");
    let spooled = state
        .jobs
        .count(KIND_STOW, JobState::Pending)
        .await
        .map_err(|e| e.to_string());
    let ready = upstream.is_ok() && spooled.is_ok() && pacs_ok;
    let body = serde_json::json!({
        "ready": ready,
        "upstream": upstream.err().unwrap_or_else(|| "ok".into()),
        "jobs": match &spooled { Ok(_) => "ok".to_owned(), Err(e) => e.clone() },
        "spooled_instances": spooled.ok(),
        "pacs": pacs.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// One C-ECHO, bounded by a short timeout so /readyz stays quick.
async fn echo(scu: &ScuConfig) -> Result<(), DimseError> {
    let scu = ScuConfig {
        timeout: scu.timeout.min(ECHO_TIMEOUT),
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
