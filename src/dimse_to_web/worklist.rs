//! Modality Worklist C-FIND → the origin's worklist: the DICOMweb Modality
//! Worklist service (`modality-scheduled-procedure-steps`) or UPS-RS
//! (`workitems`, scheduled ones, mapped by [`crate::translate::ups`]).
//! `[upstream] worklist = "auto"` asks the first and falls back to the
//! second when the origin does not have it; what it found is kept.

use crate::config::WorklistMode;
use crate::dicom::status;
use crate::dicom::status::query_retrieve::{
    IDENTIFIER_MISMATCH, OUT_OF_RESOURCES, UNABLE_TO_PROCESS,
};
use crate::dimse::message::Command;
use crate::dimse::request::RequestContext;
use crate::translate::mwl::WorklistQuery;
use crate::translate::ups::ups_to_mwl;
use crate::web::client::{UpstreamClient, UpstreamError};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

pub struct Worklist {
    pub upstream: Arc<UpstreamClient>,
    pub mode: WorklistMode,
    pub page_size: usize,
    pub max_results: usize,
    /// What `auto` found at the first query.
    pub found: Mutex<Option<WorklistMode>>,
}

const MWL_PATH: &str = "modality-scheduled-procedure-steps";
const UPS_PATH: &str = "workitems";

/// The origin has no such resource (as opposed to failing).
fn absent(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Status {
            status: 404 | 405 | 501,
            ..
        }
    )
}

impl Worklist {
    pub async fn run(&self, rq: Command, data_set: Vec<u8>, ctx: RequestContext) {
        let (status, comment) = self.answer(&rq, &data_set, &ctx).await;
        let rsp = match comment {
            None => Command::c_find_rsp(&rq, status, false),
            Some(c) => Command::failure_response(&rq, status, c),
        };
        let _ = ctx.respond(rsp, None).await;
    }

    fn resource(&self) -> WorklistMode {
        match self.mode {
            WorklistMode::Auto => self
                .found
                .lock()
                .ok()
                .and_then(|f| *f)
                .unwrap_or(WorklistMode::Auto),
            mode => mode,
        }
    }

    /// One page from the resource `mode` names (`auto`: the worklist
    /// service, else workitems): how many the origin sent, and those that
    /// are worklist entries.
    async fn page(
        &self,
        query: &WorklistQuery,
        offset: usize,
    ) -> Result<(usize, Vec<InMemDicomObject>), UpstreamError> {
        let mode = self.resource();
        if mode != WorklistMode::Ups {
            let found = self
                .upstream
                .qido_page(MWL_PATH, &query.mwl_params(), offset, self.page_size)
                .await;
            match found {
                Err(e) if mode == WorklistMode::Auto && absent(&e) => {
                    info!("the archive has no Modality Worklist service; asking UPS-RS workitems");
                }
                Ok(page) => {
                    self.remember(WorklistMode::Mwl);
                    return Ok((page.len(), page));
                }
                Err(e) => return Err(e),
            }
        }
        let page = self
            .upstream
            .qido_page(UPS_PATH, &query.ups_params(), offset, self.page_size)
            .await?;
        self.remember(WorklistMode::Ups);
        // Only scheduled workitems are a worklist, whatever the origin matched.
        let scheduled = |item: &&InMemDicomObject| {
            item.get(tags::PROCEDURE_STEP_STATE)
                .and_then(|e| e.to_str().ok())
                .is_none_or(|s| s.trim() == "SCHEDULED")
        };
        let entries = page.iter().filter(scheduled).map(ups_to_mwl).collect();
        Ok((page.len(), entries))
    }

    fn remember(&self, found: WorklistMode) {
        if self.mode == WorklistMode::Auto {
            if let Ok(mut f) = self.found.lock() {
                *f = Some(found);
            }
        }
    }

    /// Streams the pending responses; returns the final status and comment.
    async fn answer(
        &self,
        rq: &Command,
        data_set: &[u8],
        ctx: &RequestContext,
    ) -> (u16, Option<String>) {
        let (identifier, ts) = match super::read_identifier(data_set, &ctx.transfer_syntax) {
            Ok(i) => i,
            Err((status, comment)) => return (status, Some(comment)),
        };
        let query = match WorklistQuery::from_identifier(&identifier) {
            Ok(q) => q,
            Err(e) => return (IDENTIFIER_MISMATCH, Some(e.to_string())),
        };
        info!("worklist C-FIND");
        let mut offset = 0;
        let mut sent = 0usize;
        loop {
            if ctx.cancelled.is_cancelled() {
                return (status::CANCEL, None);
            }
            let (n, page) = match self.page(&query, offset).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "worklist query failed");
                    let status = if e.is_busy() {
                        OUT_OF_RESOURCES
                    } else {
                        UNABLE_TO_PROCESS
                    };
                    let comment = if absent(&e) {
                        "archive has no worklist (MWL or UPS-RS)".to_owned()
                    } else {
                        super::upstream_comment(&e)
                    };
                    return (status, Some(comment));
                }
            };
            for entry in &page {
                for out in query.responses(entry) {
                    if ctx.cancelled.is_cancelled() {
                        return (status::CANCEL, None);
                    }
                    if sent == self.max_results {
                        return (
                            OUT_OF_RESOURCES,
                            Some(format!(
                                "over {} worklist entries: narrow the query",
                                self.max_results
                            )),
                        );
                    }
                    if let Err(stop) = super::send_match(rq, &out, ts, ctx).await {
                        return stop;
                    }
                    sent += 1;
                }
            }
            if n < self.page_size {
                return (status::SUCCESS, None);
            }
            offset += n;
            // An origin that ignores offset, or sends entries we leave out,
            // must not keep us asking for ever.
            if offset > self.max_results.saturating_mul(4) {
                return (
                    OUT_OF_RESOURCES,
                    Some(format!(
                        "over {} worklist entries: narrow the query",
                        self.max_results
                    )),
                );
            }
        }
    }
}
