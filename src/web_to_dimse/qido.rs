//! QIDO-RS → C-FIND on the PACS. Matches stream into the JSON array as the
//! PACS sends them; `offset` matches are skipped and the search is cancelled
//! (C-CANCEL) once `limit` are in, since C-FIND has no paging.

use super::accept::{require_json, DICOM_JSON};
use super::{PacsService, WebError};
use crate::dimse::client::find::study_root_find_proposal;
use crate::dimse::client::ScuAssociation;
use crate::dimse::DimseError;
use crate::translate::json::{to_json, Bulk};
use crate::translate::qido_params::{qido_to_cfind, FindRequest};
use crate::translate::query::Level;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;

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
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| WebError::BadRequest(format!("query string: {e}")))?;
    let request = qido_to_cfind(level, study.as_deref(), series.as_deref(), &params)
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    let fuzzy = request.fuzzy;
    let base = svc.public_root(headers, uri);
    // The search runs in its own task and hands over JSON pieces; the status
    // is decided by the first piece, so a PACS that is down or refuses the
    // query still gets a proper HTTP error.
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, WebError>>(16);
    tokio::spawn(async move {
        if let Err(e) = run(&svc, &request, &base, &tx).await {
            tracing::warn!(pacs = %svc.name, error = %e, "C-FIND failed");
            let _ = tx.send(Err(e)).await;
        }
    });
    let first = rx.recv().await.unwrap_or_else(|| {
        Err(WebError::Internal(
            "the search ended without an answer".into(),
        ))
    })?;
    // poll_fn, unlike unfold, may be polled again after its end (hyper does).
    let rest = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let body = futures::stream::once(async move { Ok(first) }).chain(rest);
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON));
    if fuzzy {
        // PS3.18 §8.3.4.5: say that only literal matching was done.
        h.insert(
            header::WARNING,
            HeaderValue::from_static(
                "299 pons: \"The fuzzymatching parameter is not supported. Only literal matching has been performed.\"",
            ),
        );
    }
    Ok(response)
}

/// One C-FIND on its own association, each match sent down `tx` as it comes.
async fn run(
    svc: &PacsService,
    request: &FindRequest,
    base: &str,
    tx: &mpsc::Sender<Result<Bytes, WebError>>,
) -> Result<(), WebError> {
    let pacs = |e: DimseError| WebError::from_dimse(&svc.name, e);
    let mut assoc = ScuAssociation::connect(&svc.scu, &[study_root_find_proposal()])
        .await
        .map_err(pacs)?;
    match stream_matches(&mut assoc, request, base, tx).await {
        Ok(sent) => {
            tracing::info!(pacs = %svc.name, level = request.level.code(), matches = sent, "QIDO-RS");
            let _ = assoc.release().await;
            Ok(())
        }
        Err(e) => {
            let _ = assoc.abort().await;
            Err(pacs(e))
        }
    }
}

/// Returns how many matches went out.
async fn stream_matches(
    assoc: &mut ScuAssociation,
    request: &FindRequest,
    base: &str,
    tx: &mpsc::Sender<Result<Bytes, WebError>>,
) -> Result<usize, DimseError> {
    let class = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
    let mut find = assoc.find_stream(class, &request.identifier).await?;
    let (mut skipped, mut sent) = (0, 0);
    loop {
        if request.limit == Some(sent) {
            find.cancel().await?;
            break;
        }
        let Some(found) = find.next().await? else {
            break;
        };
        if skipped < request.offset {
            skipped += 1;
            continue;
        }
        let mut piece = if sent == 0 {
            b"[".to_vec()
        } else {
            b",".to_vec()
        };
        let json = to_json(
            &with_retrieve_url(found, request.level, base),
            &Bulk::Inline,
        );
        serde_json::to_writer(&mut piece, &json).expect("a JSON value always serializes");
        if tx.send(Ok(piece.into())).await.is_err() {
            // The client went away: stop the PACS too.
            find.cancel().await?;
            return Ok(sent);
        }
        sent += 1;
    }
    let end: &[u8] = if sent == 0 { b"[]" } else { b"]" };
    let _ = tx.send(Ok(Bytes::from_static(end))).await;
    Ok(sent)
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
