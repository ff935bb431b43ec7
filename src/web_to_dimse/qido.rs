//! QIDO-RS → C-FIND on the PACS. C-FIND has no paging: `offset` matches are
//! skipped, `limit` (at most `web.qido_max_results`) kept, and the search is
//! cancelled (C-CANCEL) at the one after, which tells that more exist: the
//! answer then says so in a Warning header. Identical concurrent queries
//! share one C-FIND.

use super::accept::{require_json, DICOM_JSON};
use super::{PacsService, WebError};
use crate::dimse::client::{Proposal, ScuAssociation};
use crate::dimse::pool::Shape;
use crate::dimse::DimseError;
use crate::translate::json::{to_json, Bulk};
use crate::translate::qido_params::{qido_to_cfind, FindRequest};
use crate::translate::query::Level;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::sync::Arc;

pub fn routes() -> Router<Arc<PacsService>> {
    Router::new()
        .route("/studies", get(studies))
        .route("/series", get(all_series))
        .route("/instances", get(all_instances))
        .route("/studies/{study}/series", get(study_series))
        .route("/studies/{study}/instances", get(study_instances))
        .route(
            "/studies/{study}/series/{series}/instances",
            get(series_instances),
        )
}

type Svc = State<Arc<PacsService>>;

async fn studies(State(svc): Svc, headers: HeaderMap, uri: Uri) -> Result<Response, WebError> {
    search(svc, Level::Study, None, None, &headers, &uri).await
}

async fn all_series(State(svc): Svc, headers: HeaderMap, uri: Uri) -> Result<Response, WebError> {
    search(svc, Level::Series, None, None, &headers, &uri).await
}

async fn all_instances(
    State(svc): Svc,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    search(svc, Level::Image, None, None, &headers, &uri).await
}

async fn study_series(
    State(svc): Svc,
    Path(study): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    search(svc, Level::Series, Some(study), None, &headers, &uri).await
}

async fn study_instances(
    State(svc): Svc,
    Path(study): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    search(svc, Level::Image, Some(study), None, &headers, &uri).await
}

async fn series_instances(
    State(svc): Svc,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    search(svc, Level::Image, Some(study), Some(series), &headers, &uri).await
}

async fn search(
    svc: Arc<PacsService>,
    level: Level,
    study: Option<String>,
    series: Option<String>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, WebError> {
    require_json(headers, "QIDO-RS")?;
    crate::test_hooks::panic_if_asked(uri.query().unwrap_or("").as_bytes());
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| WebError::BadRequest(format!("query string: {e}")))?;
    let mut request = qido_to_cfind(level, study.as_deref(), series.as_deref(), &params)
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    let limit = request
        .limit
        .unwrap_or(svc.qido_max_results)
        .min(svc.qido_max_results);
    request.limit = Some(limit);
    let key = query_key(&request)?;
    let fetch = {
        let svc = svc.clone();
        let request = request.clone();
        let class = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
        async move { find_page(&svc, class, &request, limit).await }
    };
    let page = svc.queries.get(key, fetch).await?;
    let base = svc.public_root(headers, uri);
    let found = page
        .matches
        .iter()
        .map(|m| with_retrieve_url(m.clone(), request.level, &base));
    Ok(json_page(found, page.more, request.fuzzy))
}

/// A search answer: the matches as a DICOM JSON array, and the Warnings
/// PS3.18 asks for when it is a page (§8.3.4.2) or fuzzy matching was
/// asked and not done (§8.3.4.5).
pub fn json_page(
    matches: impl Iterator<Item = InMemDicomObject>,
    more: bool,
    fuzzy: bool,
) -> Response {
    let mut body = vec![b'['];
    for (i, found) in matches.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let json = to_json(&found, &Bulk::Inline);
        serde_json::to_writer(&mut body, &json).expect("a JSON value always serializes");
    }
    body.push(b']');
    let mut response = Body::from(body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON));
    if more {
        h.append(
            header::WARNING,
            HeaderValue::from_static(
                "299 pons: \"There are additional results that can be requested\"",
            ),
        );
    }
    if fuzzy {
        h.append(
            header::WARNING,
            HeaderValue::from_static(
                "299 pons: \"The fuzzymatching parameter is not supported. Only literal matching has been performed.\"",
            ),
        );
    }
    response
}

/// One page of matches, and whether the PACS had more.
pub struct Page {
    pub matches: Vec<InMemDicomObject>,
    pub more: bool,
}

/// Identical queries (same identifier, level and page) share one C-FIND.
fn query_key(request: &FindRequest) -> Result<Vec<u8>, WebError> {
    let mut key = format!(
        "{:?}/{}/{:?}/",
        request.level, request.offset, request.limit
    )
    .into_bytes();
    request
        .identifier
        .write_dataset_with_ts(
            &mut key,
            TransferSyntaxRegistry
                .get(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .expect("a built-in transfer syntax"),
        )
        .map_err(|e| WebError::Internal(format!("cannot encode the query: {e}")))?;
    Ok(key)
}

/// The page on an association from the pool. One that sat idle may have
/// been closed by the PACS meanwhile: if it fails before any answer, the
/// query goes once more on a new one.
pub async fn find_page(
    svc: &PacsService,
    class: &'static str,
    request: &FindRequest,
    limit: usize,
) -> Result<Page, WebError> {
    let pacs = |e: DimseError| WebError::from_dimse(&svc.name, e);
    let shape = Shape::new(vec![Proposal::uncompressed(class)]);
    let mut retried = false;
    loop {
        let mut assoc = svc.pool.get(shape.clone()).await.map_err(pacs)?;
        let mut answered = false;
        match collect(&mut assoc, class, request, limit, &mut answered).await {
            Ok(page) => {
                assoc.done();
                tracing::info!(
                    pacs = %svc.name,
                    level = request.level.code(),
                    matches = page.matches.len(),
                    more = page.more,
                    "QIDO-RS"
                );
                return Ok(page);
            }
            Err(e) => {
                let stale = assoc.reused && !answered && !retried && e.is_transport();
                assoc.abort().await;
                if stale {
                    retried = true;
                    continue;
                }
                tracing::warn!(pacs = %svc.name, error = %e, "C-FIND failed");
                return Err(pacs(e));
            }
        }
    }
}

/// Skip `offset` matches, keep `limit`, and read one more to know whether
/// there are more: then C-CANCEL, never the PACS's whole match list.
async fn collect(
    assoc: &mut ScuAssociation,
    class: &str,
    request: &FindRequest,
    limit: usize,
    answered: &mut bool,
) -> Result<Page, DimseError> {
    let mut find = assoc.find_stream(class, &request.identifier).await?;
    let (mut skipped, mut matches) = (0, Vec::new());
    while let Some(found) = find.next().await? {
        *answered = true;
        if skipped < request.offset {
            skipped += 1;
        } else if matches.len() < limit {
            matches.push(found);
        } else {
            find.cancel().await?;
            return Ok(Page {
                matches,
                more: true,
            });
        }
    }
    Ok(Page {
        matches,
        more: false,
    })
}

/// Drop what only C-FIND needs and add RetrieveURL (0008,1190).
fn with_retrieve_url(mut found: InMemDicomObject, level: Level, base: &str) -> InMemDicomObject {
    found.remove_element(tags::SPECIFIC_CHARACTER_SET); // JSON is always UTF-8
    found.remove_element(tags::QUERY_RETRIEVE_LEVEL);
    let uid = |tag| {
        found
            .get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let study = uid(tags::STUDY_INSTANCE_UID);
    let series = uid(tags::SERIES_INSTANCE_UID);
    let url = match (level, study, series) {
        (Level::Patient | Level::Study, Some(st), _) => Some(format!("{base}/studies/{st}")),
        (Level::Series, Some(st), Some(se)) => Some(format!("{base}/studies/{st}/series/{se}")),
        (Level::Image, Some(st), Some(se)) => uid(tags::SOP_INSTANCE_UID)
            .map(|sop| format!("{base}/studies/{st}/series/{se}/instances/{sop}")),
        _ => None,
    };
    if let Some(url) = url {
        found.put(DataElement::new(
            tags::RETRIEVE_URL,
            VR::UR,
            PrimitiveValue::Str(url),
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieve_urls_follow_the_level() {
        let obj = |keys: &[(dicom_core::Tag, &str)]| {
            InMemDicomObject::from_element_iter(
                keys.iter()
                    .map(|(t, v)| DataElement::new(*t, VR::UI, PrimitiveValue::from(*v))),
            )
        };
        let url = |o: InMemDicomObject, level| {
            with_retrieve_url(o, level, "http://h/dw")
                .get(tags::RETRIEVE_URL)
                .map(|e| e.to_str().unwrap().into_owned())
        };
        let all = [
            (tags::STUDY_INSTANCE_UID, "1.2"),
            (tags::SERIES_INSTANCE_UID, "1.2.3"),
            (tags::SOP_INSTANCE_UID, "1.2.3.4"),
        ];
        assert_eq!(
            url(obj(&all), Level::Study).unwrap(),
            "http://h/dw/studies/1.2"
        );
        assert_eq!(
            url(obj(&all), Level::Series).unwrap(),
            "http://h/dw/studies/1.2/series/1.2.3"
        );
        assert_eq!(
            url(obj(&all), Level::Image).unwrap(),
            "http://h/dw/studies/1.2/series/1.2.3/instances/1.2.3.4"
        );
        assert_eq!(url(obj(&all[..1]), Level::Image), None);
    }
}
