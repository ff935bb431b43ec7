//! Direction A assembled from the configuration: per upstream a client, a
//! spool and the handlers answering against it; the router; the workers.

use super::commit::{self, Commit, OpenAssociations};
use super::route::{RoutedLog, Router};
use super::store::{Store, StoreTarget};
use super::worklist::Worklist;
use super::{find::Find, retrieve::Retrieve, Archive, DimseToWeb};
use crate::config::{Config, SpoolMode, UpstreamConfig};
use crate::jobs::JobTable;
use crate::spool::Spool;
use crate::web::client::UpstreamClient;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Direction A: the DICOMweb origins behind our DIMSE face.
pub struct DirectionA {
    /// One per upstream, in `[[upstream]]` order.
    pub origins: Vec<Origin>,
    pub handler: Arc<DimseToWeb>,
    pub router: Arc<Router>,
    routed: Option<Arc<RoutedLog>>,
    /// Shared by the N-ACTION handler and the commitment worker.
    commit_routes: Arc<OpenAssociations>,
    commit_wake: Arc<tokio::sync::Notify>,
}

/// One upstream: its client and its spool.
pub struct Origin {
    pub cfg: UpstreamConfig,
    pub upstream: Arc<UpstreamClient>,
    pub spool: Arc<Spool>,
}

/// Instances remembered with the archives they were routed to.
const ROUTED_LOG: usize = 100_000;

impl DirectionA {
    pub async fn build(config: &Config, jobs: &Arc<dyn JobTable>) -> anyhow::Result<DirectionA> {
        let router = Arc::new(Router::new(
            &config.dimse.ae_title,
            &config.upstream,
            &config.route,
        ));
        let routed = (config.upstream.len() > 1).then(|| Arc::new(RoutedLog::new(ROUTED_LOG)));
        let mut origins = Vec::new();
        for (place, cfg) in crate::spool::layout(config).iter().zip(&config.upstream) {
            origins.push(Origin {
                cfg: cfg.clone(),
                upstream: Arc::new(
                    UpstreamClient::new(cfg).with_context(|| format!("upstream {}", cfg.name))?,
                ),
                spool: Arc::new(Spool::open_for(&place.dir, &place.kind, jobs.clone()).await?),
            });
        }
        if let Some(first) = origins.first() {
            let several = origins.len() > 1;
            first
                .spool
                .check_owner(&first.cfg.name, several)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        refuse_orphaned_spools(jobs.as_ref(), &origins).await?;
        let commit_routes = Arc::new(OpenAssociations::default());
        let commit_wake = Arc::new(tokio::sync::Notify::new());
        let archives = origins
            .iter()
            .map(|o| Archive {
                find: Arc::new(Find {
                    upstream: o.upstream.clone(),
                    page_size: o.cfg.qido_page_size,
                    max_results: config.dimse.find_max_results,
                    fuzzy: o.cfg.fuzzy_matching,
                }),
                worklist: Arc::new(Worklist {
                    upstream: o.upstream.clone(),
                    mode: o.cfg.worklist,
                    page_size: o.cfg.qido_page_size,
                    max_results: config.dimse.find_max_results,
                    found: Default::default(),
                }),
                retrieve: Arc::new(Retrieve {
                    upstream: o.upstream.clone(),
                    our_ae: config.dimse.ae_title.clone(),
                    destinations: config.ae.clone(),
                    page_size: o.cfg.qido_page_size,
                    max_pdu: config.dimse.max_pdu,
                    max_sub_operations: config.dimse.max_sub_operations,
                }),
            })
            .collect();
        let handler = Arc::new(DimseToWeb {
            commit: Arc::new(Commit {
                jobs: jobs.clone(),
                open: commit_routes.clone(),
                wake: commit_wake.clone(),
                deadline: Duration::from_secs(config.dimse.commitment_report_deadline_secs),
            }),
            archives,
            router: router.clone(),
            store: Arc::new(Store {
                mode: config.spool.mode,
                targets: origins
                    .iter()
                    .map(|o| StoreTarget {
                        spool: o.spool.clone(),
                        upstream: o.upstream.clone(),
                    })
                    .collect(),
                router: router.clone(),
                routed: routed.clone(),
            }),
        });
        Ok(DirectionA {
            origins,
            handler,
            router,
            routed,
            commit_routes,
            commit_wake,
        })
    }

    pub fn spool_kinds(&self) -> Vec<String> {
        self.origins
            .iter()
            .map(|o| o.spool.kind().to_owned())
            .collect()
    }

    pub fn start_commit_worker(
        &self,
        config: &Config,
        jobs: &Arc<dyn JobTable>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(commit::run_commit_worker(
            jobs.clone(),
            self.origins
                .iter()
                .map(|o| commit::CommitArchive {
                    name: o.cfg.name.clone(),
                    kind: o.spool.kind().to_owned(),
                    upstream: o.upstream.clone(),
                    mode: o.cfg.commitment,
                })
                .collect(),
            self.commit_routes.clone(),
            self.commit_wake.clone(),
            commit::CommitWorkerConfig {
                router: self.router.clone(),
                routed: self.routed.clone(),
                our_ae: config.dimse.ae_title.clone(),
                peers: config.ae.clone(),
                max_pdu: config.dimse.max_pdu,
                dimse_timeout: Duration::from_secs(config.dimse.association_timeout_secs),
                retry_max: Duration::from_secs(config.spool.retry_max_secs),
                // Renewed while a step runs; short, so that the jobs of a
                // process that died are soon taken over.
                lease: Duration::from_secs(config.jobs.lease_secs),
                concurrency: 2,
            },
            stop,
        ))
    }

    /// One forwarder per upstream: an archive that is down holds back only
    /// its own spool.
    pub fn start_forwarders(
        &self,
        config: &Config,
        jobs: &Arc<dyn JobTable>,
        stop: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        if config.spool.mode != SpoolMode::Spool {
            return Vec::new();
        }
        self.origins
            .iter()
            .map(|o| {
                tokio::spawn(crate::spool::run_forwarder(
                    jobs.clone(),
                    o.upstream.clone(),
                    crate::spool::ForwarderConfig {
                        batch: o.cfg.stow_batch,
                        concurrency: o.cfg.stow_concurrency,
                        retry_max: Duration::from_secs(config.spool.retry_max_secs),
                        lease: Duration::from_secs(o.cfg.request_timeout_secs + 60),
                        failed_dir: o.spool.failed_dir(),
                        kind: o.spool.kind().to_owned(),
                    },
                    o.spool.notifier(),
                    stop.clone(),
                ))
            })
            .collect()
    }
}

/// Instances waiting for an upstream no longer configured (renamed or
/// removed) would never be sent: refuse to start and say which.
async fn refuse_orphaned_spools(jobs: &dyn JobTable, origins: &[Origin]) -> anyhow::Result<()> {
    use crate::jobs::{JobState, KIND_STOW};
    let kinds: Vec<&str> = origins.iter().map(|o| o.spool.kind()).collect();
    let mut orphans = std::collections::BTreeMap::<String, usize>::new();
    for state in [JobState::Pending, JobState::Running] {
        for job in jobs.list(None, Some(state), usize::MAX).await? {
            let ours = job.node.as_deref().is_none_or(|n| n == jobs.node());
            if ours && job.kind.starts_with(KIND_STOW) && !kinds.contains(&job.kind.as_str()) {
                *orphans.entry(job.kind).or_default() += 1;
            }
        }
    }
    match orphans.is_empty() {
        true => Ok(()),
        false => Err(anyhow::anyhow!(
            "instances wait for upstreams that are no longer configured ({}): put those [[upstream]] entries back until they are sent",
            orphans
                .iter()
                .map(|(kind, n)| format!("{n} of job kind {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
