//! Our HTTP face: /healthz, /readyz, the operators' /jobs, and the DICOMweb
//! routes the caller hands in (direction B), behind CORS and gzip.

use super::admin::AdminState;
use super::auth::Authenticator;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowHeaders, AllowOrigin, Any, CorsLayer};
use tracing::Instrument;

pub fn router(
    state: AdminState,
    dicomweb: Router,
    cors_origins: &[String],
    auth: Arc<Authenticator>,
    origins: Arc<super::origin::Origins>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(super::admin::routes())
        .with_state(state)
        .merge(dicomweb)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            origins,
            super::origin::resolve,
        ))
        .layer(middleware::from_fn_with_state(auth, super::auth::check))
        // Sees who authentication let in (or not), and every answer.
        .layer(middleware::from_fn(super::audit::record))
        .layer(middleware::from_fn(observe))
        // Outside authentication: a browser's preflight carries no credentials.
        .layer(cors(cors_origins))
        // JSON answers shrink ~10×; DICOM parts are left as they are.
        .layer(
            CompressionLayer::new().gzip(true).compress_when(
                DefaultPredicate::new().and(NotForContentType::const_new("multipart/")),
            ),
        )
        // A bug in one request must not end the others: 500, logged.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(request_span))
}

/// A path we do not serve: say so, and where the served ones are listed.
async fn not_found(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path.contains("/workitems/") {
        // A real UPS-RS transaction, not a missing workitem.
        return plain(
            StatusCode::NOT_IMPLEMENTED,
            format!("{path}: of UPS-RS, Pons serves only the worklist search (GET …/workitems)\n"),
        );
    }
    plain(
        StatusCode::NOT_FOUND,
        format!(
            "no resource at {path}; the resources Pons serves are listed in docs/conformance.md\n"
        ),
    )
}

/// axum adds the Allow header.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    plain(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not served at {}; see Allow\n", uri.path()),
    )
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

fn panic_response(panic: Box<dyn std::any::Any + Send>) -> Response {
    tracing::error!(
        panic = crate::dimse::session::panic_message(&*panic),
        "request handler panicked"
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "internal error: the request failed inside Pons (a bug: see its log)\n",
    )
        .into_response()
}

/// Browser viewers on other origins may call us when their origin is listed.
fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(Any)
        // Echoes what the preflight asks for: a wildcard would not cover
        // Authorization (Fetch standard).
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::ETAG,
            header::LOCATION,
            header::CONTENT_LOCATION,
            header::RETRY_AFTER,
            header::WARNING,
            header::WWW_AUTHENTICATE,
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
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("http", id, method = %req.method(), path = %req.uri().path());
    async move {
        let rsp = next.run(req).await;
        tracing::debug!(status = rsp.status().as_u16(), "answered");
        rsp
    }
    .instrument(span)
    .await
}

/// Count and time every request by its route template (never its path:
/// paths hold UIDs).
async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    // Known methods only: a client inventing methods must not invent series.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS" | "PATCH") => m,
        _ => "other",
    }
    .to_owned();
    let started = std::time::Instant::now();
    let rsp = next.run(req).await;
    let metrics = crate::metrics::get();
    metrics
        .http_duration
        .get_or_create(&crate::metrics::HttpRoute {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpRequest {
            route,
            method,
            status: rsp.status().as_u16().to_string(),
        })
        .inc();
    rsp
}
