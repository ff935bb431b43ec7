//! STOW-RS → C-STORE: POST {base}/studies[/{study}] with a
//! `multipart/related; type="application/dicom"` body; each part goes to
//! the PACS as it arrives, over one association reused for the request.
//!
//! Memory stays bounded whatever the body's size: a part's PS3.10 header
//! and at most [`LOOKAHEAD`] bytes of its data set are held back (to learn
//! the Study and Series UIDs before sending), the rest streams through one
//! P-DATA fragment at a time. The data set is checked on the way
//! ([`DatasetScanner`]); a part found broken at its end never gets its
//! last fragment sent: the association is aborted, so the PACS drops it.

mod body;
mod part;
mod scu;

use super::{PacsService, WebError};
use crate::dicom::uid;
use crate::translate::stow::{stow_response_body, InstanceOutcome, InstanceReport};
use crate::web::multipart::{related_params, YieldEvery};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use scu::StoreScu;
use std::collections::BTreeSet;
use std::sync::Arc;

const DICOM: &str = "application/dicom";
const DICOM_JSON: &str = "application/dicom+json";

pub fn routes() -> Router<Arc<PacsService>> {
    Router::new()
        .route("/studies", post(store_instances))
        .route("/studies/{study}", post(store_study_instances))
}

async fn store_instances(
    State(svc): State<Arc<PacsService>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, WebError> {
    store(&svc, None, &headers, &uri, body).await
}

async fn store_study_instances(
    State(svc): State<Arc<PacsService>>,
    Path(study): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, WebError> {
    store(&svc, Some(&study), &headers, &uri, body).await
}

/// The media type without parameters, lower-cased.
fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The boundary of a body we can store, or why we cannot.
fn boundary_of(headers: &HeaderMap) -> Result<String, WebError> {
    let wanted = format!("send multipart/related; type=\"{DICOM}\" (one PS3.10 instance per part)");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(params) = related_params(content_type) else {
        return Err(WebError::UnsupportedMediaType(format!(
            "Content-Type {content_type:?} cannot be stored: {wanted}"
        )));
    };
    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    // Without a type parameter, each part's own Content-Type decides.
    if let Some(part_type) = param("type") {
        if essence(part_type) != DICOM {
            let what = if essence(part_type) == DICOM_JSON {
                "metadata with bulk data parts is not supported yet"
            } else {
                "only DICOM parts are supported"
            };
            return Err(WebError::UnsupportedMediaType(format!(
                "type={part_type:?}: {what}; {wanted}"
            )));
        }
    }
    match param("boundary") {
        Some(b) if !b.is_empty() => Ok(b.clone()),
        _ => Err(WebError::BadRequest(
            "Content-Type multipart/related has no boundary parameter".into(),
        )),
    }
}

async fn store(
    svc: &PacsService,
    study: Option<&str>,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<Response, WebError> {
    let boundary = match study {
        Some(s) if !uid::is_valid(s) => Err(WebError::BadRequest(format!(
            "{s:?} in the URL is not a Study Instance UID"
        ))),
        _ => boundary_of(headers),
    };
    let max_bytes = svc.limits.stow_max_mb.saturating_mul(1 << 20);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes) {
        // Refused before a byte is read: a client waiting for
        // 100-continue sends nothing, and the connection is closed after.
        return Err(WebError::PayloadTooLarge(format!(
            "the body is larger than web.limits.stow_max_mb ({} MiB); send the instances in several requests",
            svc.limits.stow_max_mb
        )));
    }
    // Answered or not, the body is read to its end (see body.rs).
    let (chunks, pump) = body::pump(body);
    let boundary = match boundary {
        Ok(b) => b,
        Err(e) => {
            drop(chunks);
            pump.finish().await;
            return Err(e);
        }
    };
    // multer reads all that is ready before it hands anything out.
    let chunks = YieldEvery::new(Box::pin(chunks), body::PIECE);
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(max_bytes));
    let mut multipart = multer::Multipart::with_constraints(chunks, boundary, constraints);
    let mut stow = Stow {
        svc,
        url_study: study,
        root: svc.public_root(headers, uri),
        scu: StoreScu::new(svc),
        reports: Vec::new(),
        studies: BTreeSet::new(),
        pacs_error: None,
    };
    let result: Result<(), WebError> = async {
        while let Some(mut field) = multipart.next_field().await.map_err(body_error)? {
            if stow.reports.len() == svc.limits.stow_max_parts {
                return Err(WebError::PayloadTooLarge(format!(
                    "the body has more than {} parts (web.limits.stow_max_parts)",
                    svc.limits.stow_max_parts
                )));
            }
            let report = stow.part(&mut field).await?;
            // What the part still holds (after a refusal) is skipped.
            while field.chunk().await.map_err(body_error)?.is_some() {}
            stow.reports.push(report);
        }
        Ok(())
    }
    .await;
    stow.scu.release().await;
    // What the cache knows of these studies' members is out of date.
    for study in &stow.studies {
        svc.cache.forget_members(study);
    }
    drop(multipart);
    pump.finish().await;
    result.map_err(|e| match e {
        WebError::PayloadTooLarge(what) => stow.too_large(what),
        e => e,
    })?;
    stow.response()
}

fn body_error(e: multer::Error) -> WebError {
    match e {
        multer::Error::StreamSizeExceeded { limit } => WebError::PayloadTooLarge(format!(
            "the body is larger than web.limits.stow_max_mb ({} MiB)",
            limit >> 20
        )),
        // multer's own text hides why the stream failed (e.g. it stalled).
        multer::Error::StreamReadFailed(cause) => WebError::BadRequest(format!(
            "the multipart/related body cannot be read: {cause}"
        )),
        e => WebError::BadRequest(format!("the multipart/related body cannot be read: {e}")),
    }
}

/// One STOW-RS request in progress.
struct Stow<'a> {
    svc: &'a PacsService,
    url_study: Option<&'a str>,
    /// Where Retrieve URLs start.
    root: String,
    scu: StoreScu<'a>,
    reports: Vec<InstanceReport>,
    /// Study Instance UIDs of the stored instances.
    studies: BTreeSet<String>,
    /// Set once the PACS could not be associated with after something was
    /// stored: the remaining parts fail without trying again.
    pacs_error: Option<String>,
}

impl Stow<'_> {
    fn stored(&self) -> usize {
        self.reports
            .iter()
            .filter(|r| !matches!(r.outcome, InstanceOutcome::Failed(_)))
            .count()
    }

    /// A body past a limit: what came before it was stored (or refused) as
    /// usual, and the client learns how far that went.
    fn too_large(&self, what: String) -> WebError {
        let stored = self.stored();
        WebError::PayloadTooLarge(format!(
            "{what}: its first {} parts were processed ({stored} stored); send the rest in another request",
            self.reports.len()
        ))
    }

    /// PS3.18 10.5.3: 200 all stored, 202 some failed or warned, 409 none stored.
    fn response(&self) -> Result<Response, WebError> {
        if self.reports.is_empty() {
            return Err(WebError::BadRequest(
                "the multipart/related body holds no parts".into(),
            ));
        }
        let stored = self.stored();
        let clean = self
            .reports
            .iter()
            .all(|r| r.outcome == InstanceOutcome::Stored);
        let code = if clean {
            StatusCode::OK
        } else if stored > 0 {
            StatusCode::ACCEPTED
        } else {
            StatusCode::CONFLICT
        };
        tracing::info!(
            pacs = %self.svc.name,
            parts = self.reports.len(),
            stored,
            status = code.as_u16(),
            "STOW-RS done"
        );
        let study = match (self.url_study, self.studies.len()) {
            (Some(s), _) => Some(s.to_owned()),
            (None, 1) => self.studies.first().cloned(),
            _ => None,
        };
        let study_url = study.map(|s| format!("{}/studies/{s}", self.root));
        let body = stow_response_body(study_url.as_deref(), &self.reports);
        Ok((code, [(header::CONTENT_TYPE, DICOM_JSON)], body.to_string()).into_response())
    }
}
