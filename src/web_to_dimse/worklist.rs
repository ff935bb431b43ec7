//! The DICOMweb worklist search, `GET {base}/modality-scheduled-procedure-steps`
//! (PS3.18, Supplement 246), as a Modality Worklist C-FIND to the PACS's
//! worklist SCP. `limit`, `offset`, `includefield` (`all` too) and
//! `fuzzymatching` work as in QIDO-RS: the C-FIND is cancelled after the
//! page, and a Warning says when more exist.

use super::accept::require_json;
use super::qido::{find_page, json_page};
use super::{PacsService, WebError};
use crate::translate::qido_params::mwl_to_cfind;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
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
    let found = page.matches.into_iter().map(|mut step| {
        step.remove_element(tags::SPECIFIC_CHARACTER_SET); // JSON is always UTF-8
        step
    });
    Ok(json_page(found, page.more, request.fuzzy))
}
