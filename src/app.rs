//! Wiring only: build the rooms from the config, start the listeners and the
//! forwarder, and stop them in order on shutdown.

use crate::config::{Config, SpoolMode};
use crate::dimse::listener::{self, ListenerConfig};
use crate::dimse_to_web::{find::Find, retrieve::Retrieve, store::Store, DimseToWeb};
use crate::spool::Spool;
use crate::web::client::UpstreamClient;
use crate::web::server::{router, WebState};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let upstream_cfg = config.upstream.clone().context("[upstream] is required")?;
    let jobs = crate::jobs::open(&config.jobs.url).await?;
    let upstream = Arc::new(UpstreamClient::new(&upstream_cfg)?);
    let spool = Arc::new(Spool::open(&config.spool.dir, jobs.clone()).await?);

    let dimse_listener = tokio::net::TcpListener::bind(config.dimse.listen)
        .await
        .with_context(|| format!("cannot listen on {} (dimse.listen)", config.dimse.listen))?;
    let web_listener = tokio::net::TcpListener::bind(config.web.listen)
        .await
        .with_context(|| format!("cannot listen on {} (web.listen)", config.web.listen))?;
    info!(
        ae_title = %config.dimse.ae_title,
        dimse = %config.dimse.listen,
        web = %config.web.listen,
        mode = ?config.spool.mode,
        "pons is serving"
    );

    // The forwarder outlives the DIMSE listener so that it keeps draining
    // while associations finish; it stops last.
    let forwarder_stop = CancellationToken::new();
    let forwarder = (config.spool.mode == SpoolMode::Spool).then(|| {
        tokio::spawn(crate::spool::run_forwarder(
            jobs.clone(),
            upstream.clone(),
            crate::spool::ForwarderConfig {
                batch: upstream_cfg.stow_batch,
                concurrency: upstream_cfg.stow_concurrency,
                retry_max: Duration::from_secs(config.spool.retry_max_secs),
                lease: Duration::from_secs(upstream_cfg.request_timeout_secs + 60),
                failed_dir: spool.failed_dir(),
            },
            spool.notifier(),
            forwarder_stop.clone(),
        ))
    });

    let web = axum::serve(
        web_listener,
        router(WebState {
            upstream: Some(upstream.clone()),
            jobs: jobs.clone(),
        }),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let web = tokio::spawn(async move { web.await });

    let handler = Arc::new(DimseToWeb {
        find: Arc::new(Find {
            upstream: upstream.clone(),
            retrieve_ae: config.dimse.ae_title.clone(),
            page_size: upstream_cfg.qido_page_size,
            max_results: config.dimse.find_max_results,
            fuzzy: upstream_cfg.fuzzy_matching,
        }),
        retrieve: Arc::new(Retrieve {
            upstream: upstream.clone(),
            our_ae: config.dimse.ae_title.clone(),
            destinations: config.ae.clone(),
            page_size: upstream_cfg.qido_page_size,
            max_pdu: config.dimse.max_pdu,
        }),
        store: Arc::new(Store {
            mode: config.spool.mode,
            spool,
            upstream,
        }),
    });
    let dimse_cfg = ListenerConfig {
        ae_title: config.dimse.ae_title.clone(),
        known_callers: config.ae.iter().map(|a| a.title.clone()).collect(),
        accept_any_caller: config.dimse.accept_any_calling_ae,
        max_associations: config.dimse.max_associations,
        max_pdu: config.dimse.max_pdu,
        association_timeout: Duration::from_secs(config.dimse.association_timeout_secs),
        idle_timeout: Duration::from_secs(config.dimse.idle_timeout_secs),
        shutdown_grace: Duration::from_secs(config.dimse.shutdown_grace_secs),
    };
    listener::serve(dimse_listener, dimse_cfg, handler, shutdown.clone()).await?;
    info!("DIMSE listener drained");
    forwarder_stop.cancel();
    if let Some(f) = forwarder {
        let _ = f.await;
    }
    let _ = web.await;
    info!("pons stopped");
    Ok(())
}
