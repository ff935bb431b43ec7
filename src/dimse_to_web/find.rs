//! C-FIND → QIDO-RS: page through the origin's matches and send each as a
//! pending response with exactly the requested keys. Never truncates
//! silently: past the configured maximum the answer is a failure that says so.

use crate::dicom::status;
use crate::dicom::status::query_retrieve::{
    IDENTIFIER_MISMATCH, OUT_OF_RESOURCES, UNABLE_TO_PROCESS,
};
use crate::dimse::message::Command;
use crate::dimse::request::RequestContext;
use crate::translate::query::{cfind_to_qido, qido_to_identifier, Level, Model};
use crate::web::client::UpstreamClient;
use dicom_dictionary_std::{tags, uids};
use std::collections::HashSet;
use std::sync::Arc;
use tracing::{info, warn};

pub struct Find {
    pub upstream: Arc<UpstreamClient>,
    pub page_size: usize,
    pub max_results: usize,
    pub fuzzy: bool,
}

pub fn model_of(sop_class_uid: &str) -> Option<Model> {
    match sop_class_uid {
        uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND => Some(Model::PatientRoot),
        uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND => Some(Model::StudyRoot),
        _ => None,
    }
}

impl Find {
    /// `called_ae` is the Retrieve AE Title of the matches: a C-MOVE to it
    /// reaches the same archive.
    pub async fn run(&self, called_ae: &str, rq: Command, data_set: Vec<u8>, ctx: RequestContext) {
        let (status, comment) = self.answer(called_ae, &rq, &data_set, &ctx).await;
        let rsp = match comment {
            None => Command::c_find_rsp(&rq, status, false),
            Some(c) => Command::failure_response(&rq, status, c),
        };
        let _ = ctx.respond(rsp, None).await;
    }

    /// Streams the pending responses; returns the final status and comment.
    async fn answer(
        &self,
        retrieve_ae: &str,
        rq: &Command,
        data_set: &[u8],
        ctx: &RequestContext,
    ) -> (u16, Option<String>) {
        let Some(model) = rq.sop_class_uid.as_deref().and_then(model_of) else {
            return (IDENTIFIER_MISMATCH, Some("not a C-FIND SOP class".into()));
        };
        let (identifier, ts) = match super::read_identifier(data_set, &ctx.transfer_syntax) {
            Ok(i) => i,
            Err((status, comment)) => return (status, Some(comment)),
        };
        let query = match cfind_to_qido(&identifier, model, self.fuzzy) {
            Ok(q) => q,
            Err(e) => return (IDENTIFIER_MISMATCH, Some(e.to_string())),
        };
        info!(level = query.level.code(), path = %query.path, "C-FIND");
        let mut offset = 0;
        let mut sent = 0usize;
        let mut patients = HashSet::new();
        loop {
            if ctx.cancelled.is_cancelled() {
                return (status::CANCEL, None);
            }
            let page = match self
                .upstream
                .qido_page(&query.path, &query.params, offset, self.page_size)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "QIDO-RS failed");
                    // Overload is "out of resources": the requester may try again.
                    let status = if e.is_busy() {
                        OUT_OF_RESOURCES
                    } else {
                        UNABLE_TO_PROCESS
                    };
                    return (status, Some(super::upstream_comment(&e)));
                }
            };
            let n = page.len();
            for result in page {
                if ctx.cancelled.is_cancelled() {
                    return (status::CANCEL, None);
                }
                if !query.accepts(&result) {
                    continue;
                }
                // PATIENT level answers from /studies: one response per patient.
                if query.level == Level::Patient {
                    let id = result
                        .get(tags::PATIENT_ID)
                        .and_then(|e| e.to_str().ok())
                        .map(|s| s.into_owned())
                        .unwrap_or_default();
                    if !patients.insert(id) {
                        continue;
                    }
                }
                if sent == self.max_results {
                    return (
                        OUT_OF_RESOURCES,
                        Some(format!(
                            "over {} matches: narrow the query",
                            self.max_results
                        )),
                    );
                }
                let out = qido_to_identifier(&result, &query, retrieve_ae);
                if let Err(stop) = super::send_match(rq, &out, ts, ctx).await {
                    return stop;
                }
                sent += 1;
            }
            if n < self.page_size {
                return (status::SUCCESS, None);
            }
            offset += n;
        }
    }
}
