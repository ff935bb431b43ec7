//! The DICOMweb worklist search, `GET {base}/modality-scheduled-procedure-steps`
//! (PS3.18, Supplement 246), as a Modality Worklist C-FIND to the PACS's
//! worklist SCP. `limit`, `offset`, `includefield` (`all` too) and
//! `fuzzymatching` work as in QIDO-RS: the C-FIND is cancelled after the
//! page, and a Warning says when more exist.

use super::accept::{require_json, DICOM_JSON};
use super::qido::find_page;
use super::{PacsService, WebError};
use crate::translate::json::{to_json, Bulk};
use crate::translate::qido_params::mwl_to_cfind;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dicom_dictionary_std::{tags, uids};
use std::sync::Arc;

pub fn routes() -> Router<Arc<PacsService>> {
    Router::new().route("/modality-scheduled-procedure-steps", get(search))
}

async fn search(
    State(svc): State<Arc<PacsService>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    require_json(&headers, "the worklist search")?;
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map_err(|e| WebError::BadRequest(format!("query string: {e}")))?;
    let request = mwl_to_cfind(&params).map_err(|e| WebError::BadRequest(e.to_string()))?;
    let limit = request
        .limit
        .unwrap_or(svc.qido_max_results)
        .min(svc.qido_max_results);
    let class = uids::MODALITY_WORKLIST_INFORMATION_MODEL_FIND;
    let page = find_page(&svc, class, &request, limit).await?;
    let mut body = Vec::with_capacity(page.matches.len() * 768 + 2);
    body.push(b'[');
    for (i, mut found) in page.matches.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        found.remove_element(tags::SPECIFIC_CHARACTER_SET); // JSON is always UTF-8
        let json = to_json(&found, &Bulk::Inline);
        serde_json::to_writer(&mut body, &json).expect("a JSON value always serializes");
    }
    body.push(b']');
    let mut response = Body::from(body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON));
    if page.more {
        h.append(
            header::WARNING,
            HeaderValue::from_static(
                "299 pons: \"There are additional results that can be requested\"",
            ),
        );
    }
    if request.fuzzy {
        h.append(
            header::WARNING,
            HeaderValue::from_static(
                "299 pons: \"The fuzzymatching parameter is not supported. Only literal matching has been performed.\"",
            ),
        );
    }
    Ok(response)
}
