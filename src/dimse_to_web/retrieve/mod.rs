//! C-MOVE and C-GET → QIDO-RS + WADO-RS. The instances are resolved with QIDO,
//! retrieved with WADO-RS at the widest resource that fits, and each multipart
//! part streams straight into a C-STORE sub-operation: to the move
//! destination on one association, or back on the C-GET association.

use crate::config::AeConfig;
use crate::dicom::status;
use crate::dicom::status::query_retrieve::{
    IDENTIFIER_MISMATCH, MOVE_DESTINATION_UNKNOWN, NONE_SUCCEEDED, SOME_FAILED,
};
use crate::dicom::syntaxes;
use crate::dimse::client::{Proposal, ScuAssociation, ScuConfig};
use crate::dimse::message::{Command, CommandField, SubOperations};
use crate::dimse::request::{DataSource, RequestContext};
use crate::dimse_to_web::upstream_comment;
use crate::translate::query::Level;
use crate::web::client::{FileMetaInfo, UpstreamClient};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use read_ahead::{Next, ReadAhead};
use resolve::{instances_path, Plan, Resource, Target};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

mod read_ahead;
mod resolve;

const PENDING_EVERY: Duration = Duration::from_secs(1);

pub struct Retrieve {
    pub upstream: Arc<UpstreamClient>,
    pub our_ae: String,
    pub destinations: Vec<AeConfig>,
    pub page_size: usize,
    pub max_pdu: u32,
    /// More instances than this in one C-MOVE or C-GET: refused (A702).
    pub max_sub_operations: usize,
}

/// Where sub-operations go.
enum Sink<'a> {
    Move {
        assoc: Box<ScuAssociation>,
        originator: (String, u16),
        cfg: ScuConfig,
        /// The classes proposed on `assoc`.
        classes: BTreeSet<String>,
    },
    Get(&'a RequestContext),
}

/// Counts are US (16 bits): they saturate rather than wrap.
fn us(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl Tally {
    fn record(&mut self, uid: &str, ok: bool, warning: bool) {
        self.left = self.left.saturating_sub(1);
        let c = &mut self.counts;
        c.remaining = Some(us(self.left));
        match (ok, warning) {
            (true, false) => c.completed = c.completed.saturating_add(1),
            (true, true) => c.warning = c.warning.saturating_add(1),
            _ => {
                c.failed = c.failed.saturating_add(1);
                if !uid.is_empty() {
                    self.failed_uids.push(uid.to_owned());
                }
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    /// Sub-operations not yet done (the US count in `counts` saturates).
    left: usize,
    counts: SubOperations,
    failed_uids: Vec<String>,
    /// Why the first failure happened, for the final Error Comment.
    note: Option<String>,
}

impl Retrieve {
    pub async fn run(&self, calling_ae: &str, rq: Command, data_set: Vec<u8>, ctx: RequestContext) {
        let mut tally = Tally::default();
        let result = self
            .answer(calling_ae, &rq, &data_set, &ctx, &mut tally)
            .await;
        let (status, comment) = match result {
            Err((status, comment)) => (status, Some(comment).filter(|c| !c.is_empty())),
            Ok(status) if status != status::SUCCESS => (status, tally.note.take()),
            Ok(status) => (status, None),
        };
        let counts = SubOperations {
            remaining: if status == status::CANCEL {
                tally.counts.remaining
            } else {
                None
            },
            ..tally.counts
        };
        let failed_list = (!tally.failed_uids.is_empty())
            .then(|| failed_list(&tally.failed_uids, &ctx.transfer_syntax));
        let mut rsp = Command::retrieve_rsp(&rq, status, counts, failed_list.is_some());
        if let Some(c) = comment {
            rsp.error_comment = Some(c);
        }
        let _ = ctx.respond(rsp, failed_list).await;
    }

    async fn answer(
        &self,
        calling_ae: &str,
        rq: &Command,
        data_set: &[u8],
        ctx: &RequestContext,
        tally: &mut Tally,
    ) -> Result<u16, (u16, String)> {
        let (identifier, _) = super::read_identifier(data_set, &ctx.transfer_syntax)?;
        let level = Level::of(&identifier).ok_or((
            IDENTIFIER_MISMATCH,
            "Query/Retrieve Level missing or invalid".to_owned(),
        ))?;
        // Resolve the destination before any work: an unknown AE is A801.
        let destination = match rq.field {
            CommandField::CMoveRq => {
                let dest = rq.move_destination.clone().unwrap_or_default();
                let ae = crate::config::find_ae(&self.destinations, &dest).ok_or((
                    MOVE_DESTINATION_UNKNOWN,
                    format!("move destination {dest} is not in [[ae]]"),
                ))?;
                Some(ae.clone())
            }
            _ => None,
        };
        let plan = self.plan(&identifier, level, destination.is_some()).await?;
        let total: usize = plan.resources.iter().map(|r| r.count).sum();
        info!(level = level.code(), instances = total, "retrieve resolved");
        if total > self.max_sub_operations {
            return Err(self.too_many());
        }
        tally.left = total;
        tally.counts.remaining = Some(us(tally.left));
        if plan.resources.is_empty() {
            return Ok(status::SUCCESS);
        }
        let mut sink = match destination {
            Some(ae) => {
                let cfg = ScuConfig {
                    calling_ae: self.our_ae.clone(),
                    called_ae: ae.title.clone(),
                    address: format!("{}:{}", ae.host, ae.port),
                    max_pdu: self.max_pdu,
                    timeout: Duration::from_secs(60),
                    tls: ae.tls_client.clone(),
                };
                let assoc = connect_for(&cfg, &plan.classes).await?;
                Sink::Move {
                    assoc: Box::new(assoc),
                    originator: (calling_ae.to_owned(), rq.message_id.unwrap_or(0)),
                    cfg,
                    classes: plan.classes.clone(),
                }
            }
            None => Sink::Get(ctx),
        };
        let outcome = self.send_all(plan, &mut sink, rq, ctx, tally).await;
        if let Sink::Move { assoc, .. } = sink {
            let _ = assoc.release().await;
        }
        outcome?;
        Ok(if tally.counts.failed == 0 && tally.counts.warning == 0 {
            status::SUCCESS
        } else if tally.counts.completed == 0 && tally.counts.warning == 0 {
            NONE_SUCCEEDED
        } else {
            SOME_FAILED
        })
    }

    async fn send_all(
        &self,
        plan: Plan,
        sink: &mut Sink<'_>,
        rq: &Command,
        ctx: &RequestContext,
        tally: &mut Tally,
    ) -> Result<(), (u16, String)> {
        let mut last_pending = Instant::now();
        // Instances to fetch one by one: those the sink cannot take as stored
        // (with the uncompressed syntax to ask for), those a resource did not deliver.
        let mut singles: Vec<(Option<Target>, String, Option<String>)> = Vec::new();
        for resource in plan.resources {
            let mut wanted: Option<BTreeSet<String>> = resource
                .listed
                .as_ref()
                .map(|l| l.iter().map(|t| t.instance.clone()).collect());
            let mut delivered: BTreeSet<String> = BTreeSet::new();
            let mut parts = match self.upstream.retrieve(&resource.path, None).await {
                Ok(p) => ReadAhead::start(p),
                Err(e) => {
                    warn!(error = %e, "WADO-RS failed");
                    tally
                        .note
                        .get_or_insert_with(|| format!("WADO-RS: {}", upstream_comment(&e)));
                    singles.extend(self.undelivered(&resource, &delivered).await);
                    continue;
                }
            };
            loop {
                if ctx.cancelled.is_cancelled() {
                    return Err((status::CANCEL, String::new()));
                }
                let meta = match parts.next_part().await {
                    Next::Part(Ok(m)) => m,
                    Next::Part(Err(e)) => {
                        warn!(error = %e, "WADO-RS part is not a PS3.10 instance");
                        continue;
                    }
                    Next::Broken(e) => {
                        warn!(error = %e, "WADO-RS stream broke off");
                        break;
                    }
                    Next::End => break,
                };
                let uid = meta.sop_instance_uid.clone();
                let asked = wanted.as_mut().is_none_or(|w| w.remove(&uid));
                if !asked || !delivered.insert(uid.clone()) {
                    continue; // not asked for, or a duplicate
                }
                let mut pc = sink.context_for(&meta);
                if pc.is_none() && sink.reopen_for(&meta.sop_class_uid).await {
                    pc = sink.context_for(&meta);
                }
                match pc {
                    Some(pc) => {
                        let ok = self.send_one(sink, pc, &meta, parts.body(), rq).await;
                        tally.record(&uid, ok.0, ok.1);
                    }
                    None => match sink.uncompressed_for(&meta.sop_class_uid) {
                        Some(ts) => {
                            let target = resource
                                .listed
                                .as_ref()
                                .and_then(|l| l.iter().find(|t| t.instance == uid).cloned());
                            singles.push((target, uid, Some(ts)));
                        }
                        None => {
                            tally.note.get_or_insert_with(|| {
                                format!("no accepted context for SOP class {}", meta.sop_class_uid)
                            });
                            tally.record(&uid, false, false)
                        }
                    },
                }
                if last_pending.elapsed() >= PENDING_EVERY {
                    last_pending = Instant::now();
                    let pending = Command::retrieve_rsp(rq, status::PENDING, tally.counts, false);
                    let _ = ctx.respond(pending, None).await;
                }
            }
            singles.extend(self.undelivered(&resource, &delivered).await);
        }
        for (target, uid, ts) in singles {
            if ctx.cancelled.is_cancelled() {
                return Err((status::CANCEL, String::new()));
            }
            let target = match target {
                Some(t) => Some(t),
                None if uid.is_empty() => None,
                None => {
                    let params = vec![("00080018".to_owned(), uid.clone())];
                    self.instances_with("instances", params, false)
                        .await
                        .ok()
                        .and_then(|mut v| v.pop())
                }
            };
            let transcode = ts.is_some();
            let sent = match target {
                Some(t) => self.send_single(&t, ts, sink, rq).await,
                None => None,
            };
            if sent.is_none() {
                tally.note.get_or_insert_with(|| match transcode {
                    true => "the archive could not transcode for the destination".into(),
                    false => "WADO-RS did not deliver every instance QIDO-RS announced".into(),
                });
            }
            let (ok, warning) = sent.unwrap_or((false, false));
            tally.record(&uid, ok, warning);
        }
        Ok(())
    }

    /// Instances QIDO announced for `resource` that its WADO-RS answer did
    /// not deliver, to fetch one by one: one lost file must not fail the
    /// rest of a series. Listed by UID (an unlisted resource is listed now);
    /// what cannot be listed comes with an empty UID, and fails.
    async fn undelivered(
        &self,
        resource: &Resource,
        delivered: &BTreeSet<String>,
    ) -> Vec<(Option<Target>, String, Option<String>)> {
        if delivered.len() >= resource.count {
            return Vec::new();
        }
        let listed = match &resource.listed {
            Some(l) => Some(l.clone()),
            None => self
                .instances_with(&instances_path(&resource.path), vec![], false)
                .await
                .ok(),
        };
        let mut missing: Vec<(Option<Target>, String, Option<String>)> = listed
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !delivered.contains(&t.instance))
            .map(|t| {
                let uid = t.instance.clone();
                (Some(t), uid, None)
            })
            .collect();
        let shortfall = resource.count - delivered.len();
        if missing.len() < shortfall {
            missing.resize(shortfall, (None, String::new(), None));
        }
        missing
    }

    /// One instance by itself, in `ts` (as stored when None; then, if the
    /// receiver cannot take that, in an uncompressed syntax it accepted).
    async fn send_single(
        &self,
        t: &Target,
        mut ts: Option<String>,
        sink: &mut Sink<'_>,
        rq: &Command,
    ) -> Option<(bool, bool)> {
        let path = format!(
            "studies/{}/series/{}/instances/{}",
            t.study, t.series, t.instance
        );
        loop {
            let mut parts = self.upstream.retrieve(&path, ts.as_deref()).await.ok()?;
            let mut part = parts.next_part().await.ok()??;
            let meta = part.file_meta().await.ok()?;
            if let Some(pc) = sink.context_for(&meta) {
                let body = part.into_async_read();
                return Some(self.send_one(sink, pc, &meta, body, rq).await);
            }
            if ts.is_some() {
                return None;
            }
            ts = Some(sink.uncompressed_for(&meta.sop_class_uid)?);
        }
    }

    /// One C-STORE sub-operation; (stored, with warning).
    async fn send_one(
        &self,
        sink: &mut Sink<'_>,
        pc: u8,
        meta: &FileMetaInfo,
        body: impl tokio::io::AsyncRead + Send + Unpin + 'static,
        rq: &Command,
    ) -> (bool, bool) {
        let id = rq.message_id.unwrap_or(1);
        let mut store = Command::c_store_rq(id, &meta.sop_class_uid, &meta.sop_instance_uid);
        let rsp = match sink {
            Sink::Move {
                assoc,
                originator,
                cfg,
                classes,
            } => {
                store.message_id = Some(assoc.next_message_id());
                store.move_originator = Some(originator.clone());
                let rsp = match assoc.send_streamed(pc, &store, body).await {
                    Ok(()) => assoc.receive().await.map(|r| r.command),
                    Err(e) => Err(e),
                };
                if rsp.is_err() {
                    // Mid-message (a body that broke off, a peer that went
                    // away): the destination must not read the next command
                    // as the rest of this data set. A new association for the
                    // rest; if none can be had, sends on the old one fail.
                    assoc.abort_in_place().await;
                    if let Ok(fresh) = connect_for(cfg, classes).await {
                        **assoc = fresh;
                    }
                }
                rsp
            }
            Sink::Get(ctx) => {
                ctx.store_sub_operation(pc, store, DataSource::Stream(Box::new(body)))
                    .await
            }
        };
        if let Err(e) = &rsp {
            warn!(error = %e, "C-STORE sub-operation failed");
        }
        match rsp.ok().and_then(|r| r.status) {
            Some(s) => match status::kind(s) {
                status::StatusKind::Success => (true, false),
                status::StatusKind::Warning => (true, true),
                _ => (false, false),
            },
            None => (false, false),
        }
    }
}

/// An association to a move destination proposing `classes`: one context
/// per (class, syntax), since an SCP accepts or refuses each and we send
/// every instance in a syntax it accepted.
async fn connect_for(
    cfg: &ScuConfig,
    classes: &BTreeSet<String>,
) -> Result<ScuAssociation, (u16, String)> {
    let per_class = (120 / classes.len().max(1)).clamp(1, syntaxes::AS_STORED.len());
    let proposals: Vec<Proposal> = classes
        .iter()
        .take(120)
        .flat_map(|c| {
            syntaxes::AS_STORED[..per_class]
                .iter()
                .map(move |t| Proposal {
                    abstract_syntax: c.clone(),
                    transfer_syntaxes: vec![(*t).to_owned()],
                })
        })
        .collect();
    ScuAssociation::connect(cfg, &proposals).await.map_err(|e| {
        (
            NONE_SUCCEEDED,
            format!("cannot reach {}: {}", cfg.called_ae, short(&e.to_string())),
        )
    })
}

impl Sink<'_> {
    /// A move destination's association lacks `class` (the origin's series
    /// counts named one class per series): reopen it proposing that class
    /// too. Whether it did.
    async fn reopen_for(&mut self, class: &str) -> bool {
        let Sink::Move {
            assoc,
            cfg,
            classes,
            ..
        } = self
        else {
            return false;
        };
        if !classes.insert(class.to_owned()) {
            return false; // proposed already, and refused
        }
        let Ok(fresh) = connect_for(cfg, classes).await else {
            return false;
        };
        let old = std::mem::replace(assoc, Box::new(fresh));
        let _ = old.release().await;
        true
    }

    /// An accepted context for this class in this transfer syntax.
    fn context_for(&self, meta: &FileMetaInfo) -> Option<u8> {
        match self {
            Sink::Move { assoc, .. } => assoc
                .accepted_contexts()
                .into_iter()
                .find(|(_, a, t)| *a == meta.sop_class_uid && *t == meta.transfer_syntax_uid)
                .map(|(id, _, _)| id),
            Sink::Get(ctx) => ctx
                .contexts
                .iter()
                .find(|c| {
                    c.abstract_syntax == meta.sop_class_uid
                        && c.transfer_syntax == meta.transfer_syntax_uid
                })
                .map(|c| c.id),
        }
    }

    /// An uncompressed syntax accepted for this class, to transcode into.
    fn uncompressed_for(&self, class: &str) -> Option<String> {
        let accepted: Vec<(String, String)> = match self {
            Sink::Move { assoc, .. } => assoc
                .accepted_contexts()
                .into_iter()
                .map(|(_, a, t)| (a, t))
                .collect(),
            Sink::Get(ctx) => ctx
                .contexts
                .iter()
                .map(|c| (c.abstract_syntax.clone(), c.transfer_syntax.clone()))
                .collect(),
        };
        syntaxes::NATIVE
            .iter()
            .find(|ts| accepted.iter().any(|(a, t)| a == class && t == *ts))
            .map(|ts| (*ts).to_owned())
    }
}

/// The final response's data set: Failed SOP Instance UID List (0008,0058).
fn failed_list(uids: &[String], ts: &str) -> Vec<u8> {
    let obj = InMemDicomObject::from_element_iter([DataElement::new(
        tags::FAILED_SOP_INSTANCE_UID_LIST,
        VR::UI,
        PrimitiveValue::Strs(uids.iter().cloned().collect()),
    )]);
    let mut out = Vec::new();
    if let Some(ts) = TransferSyntaxRegistry.get(ts) {
        let _ = obj.write_dataset_with_ts(&mut out, ts);
    }
    out
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}
