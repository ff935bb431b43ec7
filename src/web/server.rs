//! Our HTTP face: /healthz and /readyz now; DICOMweb routes in later issues.

use crate::jobs::{JobState, JobTable, KIND_STOW};
use crate::web::client::UpstreamClient;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tracing::Instrument;

#[derive(Clone)]
pub struct WebState {
    pub upstream: Option<Arc<UpstreamClient>>,
    pub jobs: Arc<dyn JobTable>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .layer(middleware::from_fn(request_span))
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

/// Ready when the upstream answers and the job table can be read.
async fn readyz(State(state): State<WebState>) -> impl IntoResponse {
    let upstream = match &state.upstream {
        None => Ok(()),
        Some(u) => u.ping().await.map_err(|e| e.to_string()),
    };
    let spooled = state
        .jobs
        .count(KIND_STOW, JobState::Pending)
        .await
        .map_err(|e| e.to_string());
    let ready = upstream.is_ok() && spooled.is_ok();
    let body = serde_json::json!({
        "ready": ready,
        "upstream": upstream.err().unwrap_or_else(|| "ok".into()),
        "jobs": match &spooled { Ok(_) => "ok".to_owned(), Err(e) => e.clone() },
        "spooled_instances": spooled.ok(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
