//! Wiring only: build the rooms from the config, start the listeners and the
//! forwarder, and stop them in order on shutdown.

use crate::cache::Cache;
use crate::config::{find_ae, AeConfig, Config, Service};
use crate::dicom::status;
use crate::dimse::client::ScuConfig;
use crate::dimse::handler::{AssociationInfo, Refusal, ScpHandler, StoreSink};
use crate::dimse::listener::{self, ListenerConfig};
use crate::dimse::message::{Command, CommandField};
use crate::dimse::move_inbox::MoveInbox;
use crate::dimse::pool::{Pool, PoolConfig};
use crate::dimse::request::RequestContext;
use crate::dimse_to_web::setup::DirectionA;
use crate::dimse_to_web::DimseToWeb;
use crate::jobs::JobTable;
use crate::web::admin::{AdminState, Probe};
use crate::web::client::UpstreamClient;
use crate::web::server::router;
use crate::web_to_dimse::coalesce::Coalesce;
use crate::web_to_dimse::commitment::{self, Commitments};
use crate::web_to_dimse::PacsService;
use anyhow::Context;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.prepare_tls()?;
    if let Some(audit) = &config.audit {
        crate::audit::open(audit)?;
    }
    let node = node_id(&config);
    let jobs = crate::jobs::open(&config.jobs.url, &node).await?;
    info!(node, jobs = %crate::jobs::redact(&config.jobs.url), "job table open");
    let direction_a = match config.upstream.is_empty() {
        false => Some(DirectionA::build(&config, &jobs).await?),
        true => None,
    };
    let moves = MoveInbox::new(&config.dimse.ae_title);
    let commitments = Arc::new(Commitments::new(
        jobs.clone(),
        Duration::from_secs(config.web.commitment_deadline_secs),
        Duration::from_secs(config.web.commitment_retention_secs),
        &config
            .pacs
            .iter()
            .map(|p| (p.name.clone(), p.ae_title.clone()))
            .collect::<Vec<_>>(),
    ));
    let pacs_services = direction_b(&config, &moves, &commitments)?;

    // Web first: whoever sees the DIMSE port open may use the web port too.
    let web_listener = tokio::net::TcpListener::bind(config.web.listen)
        .await
        .with_context(|| format!("cannot listen on {} (web.listen)", config.web.listen))?;
    let dimse_listener = tokio::net::TcpListener::bind(config.dimse.listen)
        .await
        .with_context(|| format!("cannot listen on {} (dimse.listen)", config.dimse.listen))?;
    let dimse_tls_listener = match &config.dimse.tls {
        Some(t) => {
            let listener = tokio::net::TcpListener::bind(t.listen)
                .await
                .with_context(|| format!("cannot listen on {} (dimse.tls.listen)", t.listen))?;
            let tls = crate::tls::Reloading::new(&t.server(), &[], "dimse.tls")?;
            tls.watch(shutdown.clone());
            Some(listener::TlsListener { listener, tls })
        }
        None => None,
    };
    info!(
        ae_title = %config.dimse.ae_title,
        dimse_tls = ?config.dimse.tls.as_ref().map(|t| t.listen),
        dimse = %config.dimse.listen,
        web = %config.web.listen,
        https = config.web.tls.is_some(),
        upstream = direction_a.is_some(),
        pacs = pacs_services.len(),
        mode = ?config.spool.mode,
        "pons is serving"
    );

    tokio::spawn(purge_finished_jobs(
        jobs.clone(),
        crate::spool::layout(&config)
            .into_iter()
            .map(|s| s.dir)
            .collect(),
        Duration::from_secs(config.jobs.retention_days * 86_400),
        shutdown.clone(),
    ));

    // The forwarder outlives the DIMSE listener so that it keeps draining
    // while associations finish; it stops last.
    let forwarder_stop = CancellationToken::new();
    let forwarders = direction_a
        .as_ref()
        .map(|a| a.start_forwarders(&config, &jobs, forwarder_stop.clone()))
        .unwrap_or_default();
    let commit_worker = direction_a
        .as_ref()
        .map(|a| a.start_commit_worker(&config, &jobs, forwarder_stop.clone()));
    let pacs_commit_worker = (!pacs_services.is_empty()).then(|| {
        tokio::spawn(commitment::run_worker(
            commitments.clone(),
            commitment::WorkerConfig {
                pacs: pacs_services
                    .iter()
                    .map(|p| (p.name.clone(), p.pool.clone()))
                    .collect(),
                lease: Duration::from_secs(config.jobs.lease_secs),
                concurrency: 4,
            },
            forwarder_stop.clone(),
        ))
    });

    let web_tls = match &config.web.tls {
        Some(spec) => {
            let tls = crate::tls::Reloading::new(spec, crate::web::listen::ALPN, "web.tls")?;
            tls.watch(shutdown.clone());
            Some(tls)
        }
        None => None,
    };
    let dicomweb = crate::web_to_dimse::router(&pacs_services, &config.web.base_path);
    let web = crate::web::listen::serve(
        web_listener,
        router(
            AdminState {
                jobs: jobs.clone(),
                upstreams: direction_a
                    .iter()
                    .flat_map(|a| &a.origins)
                    .map(|o| (o.cfg.name.clone(), upstream_probe(o.upstream.clone())))
                    .collect(),
                spool_kinds: direction_a
                    .as_ref()
                    .map(DirectionA::spool_kinds)
                    .unwrap_or_default(),
                pacs: pacs_services
                    .iter()
                    .map(|p| (p.name.clone(), echo_probe(p.scu().clone())))
                    .collect(),
                collect: metrics_collector(
                    jobs.clone(),
                    crate::spool::layout(&config),
                    pacs_services.iter().map(|p| p.pool.clone()).collect(),
                    pacs_services.first().map(|p| p.cache.clone()),
                ),
            },
            dicomweb,
            &config.web.cors_origins,
            Arc::new(crate::web::auth::Authenticator::new(&config.web.auth).context("[web.auth]")?),
            Arc::new(crate::web::origin::Origins::new(
                config.web.public_url.as_deref(),
                &config.web.base_path,
                &config.web.trusted_proxies,
                config.web.tls.is_some(),
                config.web.listen.port(),
            )),
        ),
        http_limits(&config),
        web_tls,
        shutdown.clone(),
    );
    let web = tokio::spawn(web);

    let direction_a_titles = direction_a
        .as_ref()
        .map(|a| a.router.called_titles().into_iter().collect())
        .unwrap_or_default();
    let handler = Arc::new(Gateway {
        callers: config.ae.clone(),
        pacs_only: if config.dimse.accept_any_calling_ae {
            Vec::new()
        } else {
            config
                .pacs
                .iter()
                .map(|p| p.ae_title.trim().to_owned())
                .filter(|t| find_ae(&config.ae, t).is_none())
                .collect()
        },
        direction_a: direction_a.map(|a| a.handler),
        moves,
        commitments: (!pacs_services.is_empty()).then_some(commitments),
    });
    let dimse_cfg = ListenerConfig {
        ae_title: config.dimse.ae_title.clone(),
        called_titles: direction_a_titles,
        // A PACS sends the instances of our C-MOVEs to our listener.
        known_callers: config
            .ae
            .iter()
            .map(|a| a.title.clone())
            .chain(config.pacs.iter().map(|p| p.ae_title.clone()))
            .collect(),
        accept_any_caller: config.dimse.accept_any_calling_ae,
        max_associations: config.dimse.max_associations,
        max_pdu: config.dimse.max_pdu,
        association_timeout: Duration::from_secs(config.dimse.association_timeout_secs),
        idle_timeout: Duration::from_secs(config.dimse.idle_timeout_secs),
        shutdown_grace: Duration::from_secs(config.dimse.shutdown_grace_secs),
        certificate_names: config
            .ae
            .iter()
            .filter_map(|a| Some((a.title.clone(), a.certificate_name.clone()?)))
            .collect(),
    };
    listener::serve(
        dimse_listener,
        dimse_tls_listener,
        dimse_cfg,
        handler,
        shutdown.clone(),
    )
    .await?;
    info!("DIMSE listener drained");
    forwarder_stop.cancel();
    for task in forwarders
        .into_iter()
        .chain(commit_worker)
        .chain(pacs_commit_worker)
    {
        let _ = task.await;
    }
    let _ = web.await;
    if let Some(svc) = pacs_services.first() {
        svc.cache.mark_clean();
    }
    info!("pons stopped");
    Ok(())
}

/// Reads the state the metrics show as gauges, at each scrape.
fn metrics_collector(
    jobs: Arc<dyn JobTable>,
    spools: Vec<crate::spool::SpoolPlace>,
    pools: Vec<Arc<Pool>>,
    cache: Option<Arc<Cache>>,
) -> crate::web::admin::Collector {
    use crate::jobs::{
        JobState, KIND_COMMIT, KIND_PACS_COMMIT, KIND_PACS_COMMIT_RESULT, KIND_STOW,
    };
    // One collection at a time, at most every few seconds: /metrics may be
    // open to anyone, and each collection counts jobs and lists the spool.
    let last: Arc<tokio::sync::Mutex<Option<std::time::Instant>>> = Default::default();
    Arc::new(move || {
        let (jobs, spools, pools, cache, last) = (
            jobs.clone(),
            spools.clone(),
            pools.clone(),
            cache.clone(),
            last.clone(),
        );
        Box::pin(async move {
            let mut last = last.lock().await;
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
                return;
            }
            *last = Some(std::time::Instant::now());
            let m = crate::metrics::get();
            let states = [
                JobState::Pending,
                JobState::Running,
                JobState::Done,
                JobState::Failed,
            ];
            let mut backlog = 0;
            let kinds = [KIND_COMMIT, KIND_PACS_COMMIT, KIND_PACS_COMMIT_RESULT]
                .into_iter()
                .chain(spools.iter().map(|s| s.kind.as_str()));
            for kind in kinds {
                for state in states {
                    let Ok(n) = jobs.count(kind, state).await else {
                        continue;
                    };
                    let label = crate::metrics::JobLabels {
                        kind: kind.to_owned(),
                        state: state.as_str(),
                    };
                    m.jobs
                        .get_or_create(&label)
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                    let spooled = kind.starts_with(KIND_STOW);
                    if spooled && matches!(state, JobState::Pending | JobState::Running) {
                        backlog += n;
                    }
                }
            }
            if !spools.is_empty() {
                let (mut bytes, mut oldest) = (0, Duration::ZERO);
                for spool in &spools {
                    let (b, o) = crate::spool::backlog(&spool.dir).await;
                    bytes += b;
                    oldest = oldest.max(o);
                }
                m.spool_backlog_instances
                    .set(i64::try_from(backlog).unwrap_or(i64::MAX));
                m.spool_backlog_bytes
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                m.spool_oldest_age
                    .set(i64::try_from(oldest.as_secs()).unwrap_or(i64::MAX));
            }
            for pool in &pools {
                pool.report();
            }
            if let Some(cache) = cache {
                m.cache_bytes
                    .set(i64::try_from(cache.bytes()).unwrap_or(i64::MAX));
            }
        })
    })
}

/// `[jobs] retention_days`: at start, then hourly.
async fn purge_finished_jobs(
    jobs: Arc<dyn JobTable>,
    spool_dirs: Vec<std::path::PathBuf>,
    age: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match crate::spool::purge(jobs.as_ref(), &spool_dirs, age).await {
            Ok((0, 0)) => {}
            Ok((rows, files)) => info!(
                jobs = rows,
                refused_files = files,
                "finished jobs past retention purged"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot purge finished jobs"),
        }
    }
}

fn http_limits(config: &Config) -> crate::web::listen::Limits {
    let l = &config.web.limits;
    crate::web::listen::Limits {
        max_connections: l.max_connections,
        max_header_bytes: l.max_header_bytes,
        max_headers: l.max_headers,
        header_timeout: Duration::from_secs(l.header_timeout_secs),
        body_idle_timeout: Duration::from_secs(l.body_idle_secs),
        shutdown_grace: Duration::from_secs(config.dimse.shutdown_grace_secs),
    }
}

/// This instance's name in the job table: `[jobs] node`, else hostname and
/// absolute spool dir, which stays the same across restarts and tells apart
/// two instances on one host.
pub fn node_id(config: &Config) -> String {
    if let Some(node) = &config.jobs.node {
        return node.trim().to_owned();
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_owned()
    };
    let dir = std::path::absolute(&config.spool.dir).unwrap_or_else(|_| config.spool.dir.clone());
    format!("{host}:{}", dir.display())
}

/// Direction B: one service per `[[pacs]]`, sharing one cache.
fn direction_b(
    config: &Config,
    moves: &Arc<MoveInbox>,
    commitments: &Arc<Commitments>,
) -> anyhow::Result<Vec<Arc<PacsService>>> {
    if config.pacs.is_empty() {
        return Ok(Vec::new());
    }
    let cache = Arc::new(
        Cache::open(config.cache.dir.clone(), config.cache.max_mb * 1024 * 1024)
            .with_context(|| format!("cannot open cache.dir {}", config.cache.dir.display()))?,
    );
    config
        .pacs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let base_path = if i == 0 {
                config.web.base_path.clone()
            } else {
                format!("/pacs/{}{}", p.name, config.web.base_path)
            };
            Ok(Arc::new(PacsService {
                name: p.name.clone(),
                pool: Pool::new(
                    &p.name,
                    ScuConfig {
                        calling_ae: config.dimse.ae_title.clone(),
                        called_ae: p.ae_title.clone(),
                        address: format!("{}:{}", p.host, p.port),
                        max_pdu: config.dimse.max_pdu,
                        timeout: Duration::from_secs(p.timeout_secs),
                        tls: config
                            .dimse_client_tls(p.client_tls())
                            .with_context(|| format!("[[pacs]] {}", p.name))?,
                    },
                    PoolConfig {
                        max_associations: p.max_associations,
                        idle: Duration::from_secs(p.idle_secs),
                        queue_timeout: Duration::from_secs(p.queue_timeout_secs),
                    },
                ),
                retrieve: p.retrieve,
                base_path,
                cache: cache.clone(),
                moves: moves.clone(),
                commitments: commitments.clone(),
                qido_max_results: config.web.qido_max_results,
                limits: config.web.limits.clone(),
                flights: Default::default(),
                // Kept pages hold up to qido_max_results matches each: a
                // few dozen bound the memory (in-flight ones are bounded
                // by the association pool).
                queries: Coalesce::new(Duration::from_secs(config.web.qido_cache_secs), 32),
            }))
        })
        .collect()
}

/// What our DIMSE listener serves: the sub-operations of our own C-MOVEs
/// (direction B), and direction A when an upstream is configured.
struct Gateway {
    /// `[[ae]]`: what each known caller may ask of us.
    callers: Vec<AeConfig>,
    /// `[[pacs]]` AE titles without an `[[ae]]` entry: admitted to send what
    /// we asked of them (our C-MOVEs' instances, commitment reports), not to
    /// use direction A, unless any caller may (`accept_any_calling_ae`).
    pacs_only: Vec<String>,
    direction_a: Option<Arc<DimseToWeb>>,
    moves: Arc<MoveInbox>,
    /// Storage commitment reports from our PACS (direction B).
    commitments: Option<Arc<Commitments>>,
}

#[async_trait]
impl ScpHandler for Gateway {
    fn authorize(&self, assoc: &AssociationInfo, rq: &Command) -> Result<(), Refusal> {
        let Some(ae) = find_ae(&self.callers, &assoc.calling_ae) else {
            let pacs = self.pacs_only.iter().any(|t| *t == assoc.calling_ae.trim());
            let ours = match rq.field {
                CommandField::CEchoRq | CommandField::NEventReportRq => true,
                CommandField::CStoreRq => self.moves.target_for(&assoc.calling_ae, rq).is_some(),
                _ => false,
            };
            if pacs && !ours {
                return Err(Refusal::new(
                    status::general::NOT_AUTHORIZED,
                    format!(
                        "{} is a [[pacs]] here; to use this service it needs an [[ae]] entry",
                        assoc.calling_ae.trim()
                    ),
                ));
            }
            // Callers without an entry (accept_any_calling_ae) may use everything.
            return Ok(());
        };
        let service = match rq.field {
            CommandField::CEchoRq => Service::Echo,
            CommandField::CStoreRq => Service::Store,
            CommandField::CFindRq
                if rq.sop_class_uid.as_deref()
                    == Some(
                        dicom_dictionary_std::uids::MODALITY_WORKLIST_INFORMATION_MODEL_FIND,
                    ) =>
            {
                Service::Worklist
            }
            CommandField::CFindRq => Service::Find,
            CommandField::CGetRq => Service::Get,
            CommandField::CMoveRq => Service::Move,
            CommandField::NActionRq => Service::Commit,
            _ => return Ok(()),
        };
        // The sub-operations of our own C-MOVEs are not the caller's asking
        // (looked up only when storing is not allowed: it is per instance).
        let our_move =
            || service == Service::Store && self.moves.target_for(&assoc.calling_ae, rq).is_some();
        if !ae.may(service) && !our_move() {
            return Err(Refusal::new(
                status::general::NOT_AUTHORIZED,
                format!(
                    "{} may not use {} here (its [[ae]] services)",
                    ae.title,
                    service.name()
                ),
            ));
        }
        let destination = rq.move_destination.as_deref().unwrap_or("");
        if service == Service::Move && !ae.may_move_to(destination) {
            return Err(Refusal::new(
                status::query_retrieve::MOVE_DESTINATION_UNKNOWN,
                format!(
                    "{} may not move to {} (its [[ae]] move_destinations)",
                    ae.title,
                    destination.trim()
                ),
            ));
        }
        Ok(())
    }

    async fn begin_store(
        &self,
        assoc: &AssociationInfo,
        rq: &Command,
        transfer_syntax_uid: &str,
    ) -> Result<Box<dyn StoreSink>, Refusal> {
        let uid = rq.sop_instance_uid.as_deref().unwrap_or("");
        crate::test_hooks::panic_if_asked(crate::dicom::uid::trim(uid).as_bytes());
        if let Some(target) = self.moves.target_for(&assoc.calling_ae, rq) {
            return target.begin_store(rq, transfer_syntax_uid).await;
        }
        match &self.direction_a {
            Some(a) => a.begin_store(assoc, rq, transfer_syntax_uid).await,
            None => Err(Refusal::new(
                status::general::UNRECOGNIZED_OPERATION,
                "this gateway has no [upstream] archive to store into",
            )),
        }
    }

    async fn request(
        &self,
        assoc: &AssociationInfo,
        rq: Command,
        data_set: Vec<u8>,
        ctx: RequestContext,
    ) {
        crate::test_hooks::panic_if_asked(&data_set);
        if let (CommandField::NEventReportRq, Some(c)) = (rq.field, &self.commitments) {
            return c.accept_report(assoc, rq, data_set, ctx).await;
        }
        match &self.direction_a {
            Some(a) => a.request(assoc, rq, data_set, ctx).await,
            None => crate::dimse::handler::refuse_unsupported(&rq, &ctx).await,
        }
    }
}

/// /readyz asks an upstream for one study.
fn upstream_probe(upstream: Arc<UpstreamClient>) -> Probe {
    Arc::new(move || {
        let upstream = upstream.clone();
        Box::pin(async move { upstream.ping().await.map_err(|e| e.to_string()) })
    })
}

/// /readyz sends each PACS a C-ECHO, quickly.
fn echo_probe(scu: ScuConfig) -> Probe {
    Arc::new(move || {
        let scu = scu.clone();
        Box::pin(async move {
            crate::dimse::client::echo_once(&scu, Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())
        })
    })
}
