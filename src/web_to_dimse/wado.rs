//! WADO-RS retrieve of studies, series and instances as
//! multipart/related; type="application/dicom". Each instance becomes a
//! part as soon as it is in the cache, so the first part leaves while the
//! PACS is still sending the rest.

use super::retrieve::{self, Instances, Scope};
use super::transfer::{self, Want};
use super::{PacsService, WebError};
use crate::cache::CachedInstance;
use crate::web::multipart::{self, Part, PartBody};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tracing::warn;

pub fn routes() -> Router<Arc<PacsService>> {
    Router::new()
        .route("/studies/{study}", get(study))
        .route("/studies/{study}/series/{series}", get(series))
        .route(
            "/studies/{study}/series/{series}/instances/{instance}",
            get(instance),
        )
}

async fn study(
    State(svc): State<Arc<PacsService>>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    multipart_retrieve(&svc, Scope::Study(study), &headers).await
}

async fn series(
    State(svc): State<Arc<PacsService>>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    multipart_retrieve(&svc, Scope::Series(study, series), &headers).await
}

async fn instance(
    State(svc): State<Arc<PacsService>>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    multipart_retrieve(&svc, Scope::Instance(study, series, instance), &headers).await
}

async fn multipart_retrieve(
    svc: &PacsService,
    scope: Scope,
    headers: &HeaderMap,
) -> Result<Response, WebError> {
    scope.check()?;
    let want = transfer::negotiate(headers)?;
    let found = retrieve::instances(svc, &scope, |c| want.usable(c), want.variant()).await?;
    // One instance: its representation is known before the first byte, so
    // it gets an ETag (and a 406 when it cannot be sent as asked).
    let etag = match (&scope, found.first()) {
        (Scope::Instance(..), Some(first)) => {
            if !want.usable(first) {
                return Err(cannot_convert(first));
            }
            let tag = etag_of(first, want);
            if if_none_match(headers, &tag) {
                return Ok(not_modified(&tag));
            }
            Some(tag)
        }
        _ => None,
    };
    let boundary = multipart::new_boundary();
    let body = multipart::streamed_body(boundary.clone(), parts(found, want));
    let mut rsp = Response::new(Body::from_stream(body));
    let content_type = multipart::related_content_type("application/dicom", &boundary);
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).map_err(|e| WebError::Internal(e.to_string()))?,
    );
    if let Some(tag) = etag {
        if let Ok(v) = HeaderValue::from_str(&tag) {
            rsp.headers_mut().insert(header::ETAG, v);
        }
    }
    Ok(rsp)
}

fn cannot_convert(c: &CachedInstance) -> WebError {
    WebError::NotAcceptable(format!(
        "instance {} is stored as {} and the PACS did not convert it; ask for transfer-syntax=*",
        c.uids.sop_instance, c.transfer_syntax
    ))
}

/// The parts, one per instance, as they become available.
fn parts(
    found: Instances,
    want: Want,
) -> impl futures::Stream<Item = std::io::Result<Part>> + Send + 'static {
    futures::stream::unfold(found, move |mut found| async move {
        loop {
            let part = match found.next().await? {
                Err(e) => {
                    warn!(error = %e, "retrieve broke off mid-response");
                    Err(std::io::Error::other(e.to_string()))
                }
                Ok(c) if !want.usable(&c) => {
                    warn!(sop_instance = %c.uids.sop_instance, ts = %c.transfer_syntax,
                        "instance cannot be sent in the syntax asked for; left out");
                    continue;
                }
                Ok(c) => part(c, want).await,
            };
            return Some((part, found));
        }
    })
}

/// Files up to this size are sent from one read.
const SMALL_FILE: u64 = 1 << 20;

/// One instance as a part: the cached file as it is, or rewritten into
/// the uncompressed syntax asked for.
pub async fn part(c: CachedInstance, want: Want) -> std::io::Result<Part> {
    let ts = want.output_syntax(&c).to_owned();
    let content_type = format!("application/dicom; transfer-syntax={ts}");
    let body = if ts == c.transfer_syntax && c.size <= SMALL_FILE {
        // Open and read in one hop to the blocking pool.
        PartBody::Bytes(tokio::fs::read(&c.path).await?.into())
    } else if ts == c.transfer_syntax {
        // Once open, the file stays readable even if evicted meanwhile.
        PartBody::File(tokio::fs::File::open(&c.path).await?, c.size)
    } else {
        let path = c.path.clone();
        let bytes = tokio::task::spawn_blocking(move || transfer::transcode(&path, &ts))
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        PartBody::Bytes(bytes.into())
    };
    Ok(Part { content_type, body })
}

/// Instances never change under their UID: the UID, the copy and the
/// syntax sent name the bytes.
pub fn etag_of(c: &CachedInstance, want: Want) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &c.uids.sop_instance,
        &c.transfer_syntax,
        c.size,
        want.output_syntax(c),
    )
        .hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

/// Does If-None-Match name this ETag (or `*`)?
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

pub fn not_modified(etag: &str) -> Response {
    let mut rsp = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        rsp.headers_mut().insert(header::ETAG, v);
    }
    rsp
}
