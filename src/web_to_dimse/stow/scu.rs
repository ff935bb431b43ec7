//! The PACS side of one STOW-RS request: one association, reused part after
//! part, and reopened with one more presentation context when a part needs a
//! SOP class / transfer syntax pair that the open association lacks.

use crate::dimse::client::{verification_proposal, Proposal};
use crate::dimse::message::{Command, CommandField};
use crate::dimse::pool::{Pooled, Shape};
use crate::dimse::DimseError;
use crate::web_to_dimse::PacsService;
use tokio::io::AsyncRead;

/// A request with more distinct pairs than this is odd; the oldest are
/// dropped from later proposals (an association has at most 128 contexts,
/// and each SOP class also gets an uncompressed probe context).
const MAX_PAIRS: usize = 60;

/// What the PACS agreed to for one part's SOP class and transfer syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Context {
    Ready(u8),
    /// The PACS takes no instance of this SOP class.
    ClassRefused,
    /// The PACS takes the SOP class, but not in this transfer syntax.
    SyntaxRefused,
}

pub(super) struct StoreScu<'a> {
    svc: &'a PacsService,
    assoc: Option<Pooled>,
    /// Pairs proposed on the open association, accepted or not: asking
    /// again for a refused one would only be refused again.
    proposed: Vec<(String, String)>,
    /// Every pair this request needed so far, proposed again on reopening
    /// so that alternating SOP classes do not reopen every time.
    wanted: Vec<(String, String)>,
}

impl<'a> StoreScu<'a> {
    pub fn new(svc: &'a PacsService) -> Self {
        StoreScu {
            svc,
            assoc: None,
            proposed: Vec::new(),
            wanted: Vec::new(),
        }
    }

    /// The presentation context for this pair, associating (again) if the
    /// open association was not asked for it. Errors only when the PACS
    /// cannot be associated with.
    pub async fn context(&mut self, class: &str, ts: &str) -> Result<Context, DimseError> {
        let pair = (class.to_owned(), ts.to_owned());
        if self.assoc.is_none() || !self.proposed.contains(&pair) {
            if !self.wanted.contains(&pair) {
                if self.wanted.len() == MAX_PAIRS {
                    self.wanted.remove(0);
                }
                self.wanted.push(pair);
            }
            self.reopen().await?;
        }
        let accepted = self
            .assoc
            .as_ref()
            .map(|a| a.accepted_contexts())
            .unwrap_or_default();
        if let Some((id, _, _)) = accepted.iter().find(|(_, a, t)| a == class && t == ts) {
            return Ok(Context::Ready(*id));
        }
        // The uncompressed probe tells which half of the pair was refused.
        Ok(if accepted.iter().any(|(_, a, _)| a == class) {
            Context::SyntaxRefused
        } else {
            Context::ClassRefused
        })
    }

    async fn reopen(&mut self) -> Result<(), DimseError> {
        // The new association supersedes this one: release it, first (a
        // PACS may serve only so many at once).
        if let Some(assoc) = self.assoc.take() {
            assoc.release().await;
        }
        self.proposed.clear();
        // Verification keeps the association up when every other context is
        // refused: a refusal then fails that part, not the whole request.
        let mut proposals = vec![verification_proposal()];
        let mut classes: Vec<&str> = Vec::new();
        for (class, ts) in &self.wanted {
            proposals.push(Proposal {
                abstract_syntax: class.clone(),
                transfer_syntaxes: vec![ts.clone()],
            });
            if !classes.contains(&class.as_str()) {
                classes.push(class);
            }
        }
        for class in classes {
            proposals.push(Proposal::uncompressed(class));
        }
        let assoc = self.svc.pool.get(Shape::new(proposals.clone())).await?;
        tracing::debug!(
            pacs = %self.svc.name,
            proposed = proposals.len(),
            accepted = assoc.accepted_contexts().len(),
            "associated for STOW-RS"
        );
        self.assoc = Some(assoc);
        self.proposed = self.wanted.clone();
        Ok(())
    }

    /// C-STORE one data set; the PACS's status. On any error the
    /// association is aborted (it is mid-message), so that a data set the
    /// reader refused at its end is never stored.
    pub async fn store<R>(
        &mut self,
        pc: u8,
        class: &str,
        instance: &str,
        data_set: R,
    ) -> Result<u16, DimseError>
    where
        R: AsyncRead + Unpin,
    {
        let Some(assoc) = self.assoc.as_mut() else {
            return Err(DimseError::Protocol("no association".into()));
        };
        let id = assoc.next_message_id();
        let rq = Command::c_store_rq(id, class, instance);
        let result = async {
            assoc.send_streamed(pc, &rq, data_set).await?;
            let rsp = assoc.receive().await?.command;
            if rsp.field != CommandField::CStoreRsp || rsp.responding_to != Some(id) {
                return Err(DimseError::Protocol(format!(
                    "expected the C-STORE-RSP to message {id}, got {:?}",
                    rsp.field
                )));
            }
            rsp.status
                .ok_or_else(|| DimseError::Protocol("C-STORE-RSP without a status".into()))
        }
        .await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }

    async fn abort(&mut self) {
        if let Some(assoc) = self.assoc.take() {
            let _ = assoc.abort().await;
        }
        self.proposed.clear();
    }

    /// Hand the association back to the pool, if one is open.
    pub async fn release(&mut self) {
        if let Some(assoc) = self.assoc.take() {
            assoc.done();
        }
        self.proposed.clear();
    }
}
