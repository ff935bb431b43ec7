//! The DICOMweb worklist search, `GET {base}/modality-scheduled-procedure-steps`
//! (PS3.18, Supplement 246), and the UPS-RS workitem search, `GET
//! {base}/workitems` (scheduled steps as workitems, mapped by
//! [`crate::translate::ups`]), as a Modality Worklist C-FIND to the PACS's
//! worklist SCP. `limit`, `offset`, `includefield` (`all` too) and
//! `fuzzymatching` work as in QIDO-RS: the C-FIND is cancelled after the
//! page, and a Warning says when more exist.

use super::accept::require_json;
use super::qido::{find_page, json_page};
use super::{PacsService, WebError};
use crate::translate::matching::matches;
use crate::translate::qido_params::mwl_to_cfind;
use crate::translate::ups::{mwl_to_ups, ups_params_to_mwl};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use std::sync::Arc;

pub fn routes() -> Router<Arc<PacsService>> {
    Router::new()
        .route("/modality-scheduled-procedure-steps", get(search))
        .route("/workitems", get(search_workitems))
}

fn params_of(uri: &Uri) -> Result<Vec<(String, String)>, WebError> {
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| WebError::BadRequest(format!("query string: {e}")))?;
    Ok(params)
}

async fn search(
    State(svc): State<Arc<PacsService>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    require_json(&headers, "the worklist search")?;
    let (found, more, fuzzy) = worklist(&svc, &params_of(&uri)?).await?;
    Ok(json_page(found.into_iter(), more, fuzzy))
}

async fn search_workitems(
    State(svc): State<Arc<PacsService>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, WebError> {
    require_json(&headers, "the workitem search")?;
    let search =
        ups_params_to_mwl(&params_of(&uri)?).map_err(|e| WebError::BadRequest(e.to_string()))?;
    if search.nothing {
        return Ok(json_page(std::iter::empty(), false, false));
    }
    let (found, more, fuzzy) = worklist(&svc, &search.mwl_params).await?;
    let items = found.iter().map(mwl_to_ups).filter(|item| {
        search.post.iter().all(|(tag, vr, pattern)| {
            let value = item
                .get(*tag)
                .and_then(|e| e.to_str().ok())
                .unwrap_or_default();
            matches(*vr, pattern, &value)
        })
    });
    Ok(json_page(items, more, fuzzy))
}

/// The worklist entries (without Specific Character Set: JSON is UTF-8),
/// whether more exist past the page, and whether fuzzy matching was asked.
async fn worklist(
    svc: &PacsService,
    params: &[(String, String)],
) -> Result<(Vec<InMemDicomObject>, bool, bool), WebError> {
    let request = mwl_to_cfind(params).map_err(|e| WebError::BadRequest(e.to_string()))?;
    let limit = request
        .limit
        .unwrap_or(svc.qido_max_results)
        .min(svc.qido_max_results);
    let class = uids::MODALITY_WORKLIST_INFORMATION_MODEL_FIND;
    let page = find_page(svc, class, &request, limit).await?;
    let found = page
        .matches
        .into_iter()
        .map(|mut step| {
            step.remove_element(tags::SPECIFIC_CHARACTER_SET);
            step
        })
        .collect();
    Ok((found, page.more, request.fuzzy))
}
