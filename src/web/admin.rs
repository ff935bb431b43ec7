//! Operator routes: `GET /readyz`, and the job table as JSON:
//! `GET /jobs?kind=&state=&limit=` (newest first) and `GET /jobs/{id}`.
//! Payloads hold UIDs, file paths and AE titles, never patient names.

use crate::jobs::{JobError, JobState, JobTable};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
/// /readyz answers within a few seconds even when the table is locked.
const JOBS_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// ... and when a peer (or an upstream's token endpoint) hangs: an
/// orchestrator's probe gives up after a few seconds.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

/// One dependency /readyz checks; the error says what is wrong. The web
/// room knows no associations: the app hands in how each peer is probed.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Brings the metrics of state (jobs, spool, pools, cache) up to date
/// before a scrape.
pub type Collector = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

#[derive(Clone)]
pub struct AdminState {
    pub jobs: Arc<dyn JobTable>,
    /// Direction A's upstream archives by name.
    pub upstreams: Vec<(String, Probe)>,
    /// The job kinds of the upstreams' spools.
    pub spool_kinds: Vec<String>,
    /// Direction B's PACS by name.
    pub pacs: Vec<(String, Probe)>,
    pub collect: Collector,
}

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/jobs", get(list))
        .route("/jobs/{id}", get(one))
}

/// Each probe's answer by name: "ok" or what is wrong.
async fn ask_all(probes: &[(String, Probe)]) -> Vec<(String, String)> {
    futures::future::join_all(probes.iter().map(|(name, probe)| async move {
        let answer = match tokio::time::timeout(PROBE_WAIT, probe()).await {
            Ok(result) => result.err().unwrap_or_else(|| "ok".into()),
            Err(_) => format!("no answer within {} s", PROBE_WAIT.as_secs()),
        };
        (name.clone(), answer)
    }))
    .await
}

/// Ready when an upstream (any of several: the others' instances wait in
/// their spools), every PACS and the job table answer.
async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    // All at once: the answer comes within the longest single bound.
    let (upstreams, pacs, spooled) = futures::future::join3(
        ask_all(&state.upstreams),
        ask_all(&state.pacs),
        spooled_instances(&state),
    )
    .await;
    let upstream_ok = upstreams.is_empty() || upstreams.iter().any(|(_, a)| a == "ok");
    let upstream = match &upstreams[..] {
        [(_, answer)] => answer.clone(),
        _ if upstreams.iter().all(|(_, a)| a == "ok") => "ok".into(),
        _ => upstreams
            .iter()
            .filter(|(_, a)| a != "ok")
            .map(|(name, a)| format!("{name}: {a}"))
            .collect::<Vec<_>>()
            .join("; "),
    };
    let pacs_ok = pacs.iter().all(|(_, a)| a == "ok");
    let ready = upstream_ok && spooled.is_ok() && pacs_ok;
    let mut body = serde_json::json!({
        "ready": ready,
        "upstream": upstream,
        "jobs": match &spooled { Ok(_) => "ok".to_owned(), Err(e) => e.clone() },
        "spooled_instances": spooled.ok(),
        "pacs": pacs.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    if upstreams.len() > 1 {
        body["upstreams"] = serde_json::json!(upstreams
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>());
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// The spool backlog, once the job table has shown it can be written.
async fn spooled_instances(state: &AdminState) -> Result<u64, String> {
    let secs = JOBS_WRITE_WAIT.as_secs();
    match tokio::time::timeout(JOBS_WRITE_WAIT, state.jobs.check_writable()).await {
        Ok(result) => result.map_err(|e| format!("the job table cannot be written: {e}"))?,
        Err(_) => return Err(format!(
            "the job table cannot be written: no write lock within {secs} s (locked by another process?)"
        )),
    }
    let count = async {
        let mut n = 0;
        for kind in &state.spool_kinds {
            n += state.jobs.count(kind, JobState::Pending).await?;
        }
        Ok::<_, JobError>(n)
    };
    match tokio::time::timeout(JOBS_WRITE_WAIT, count).await {
        Ok(n) => n.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the job table did not count its backlog within {secs} s"
        )),
    }
}

async fn list(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (mut kind, mut job_state, mut limit) = (None, None, DEFAULT_LIMIT);
    for (name, value) in &params {
        match name.as_str() {
            "kind" => kind = Some(value.as_str()).filter(|k| !k.is_empty()),
            "state" if value.is_empty() => {}
            "state" => match JobState::parse(value) {
                Some(s) => job_state = Some(s),
                None => {
                    return bad_request(format!(
                        "state {value:?} is not one of pending, running, done, failed"
                    ))
                }
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    return bad_request(format!(
                        "limit {value:?} must be a number from 1 to {MAX_LIMIT}"
                    ))
                }
            },
            other => {
                return bad_request(format!(
                    "unknown parameter {other:?} (kind, state and limit are understood)"
                ))
            }
        }
    }
    match state.jobs.list(kind, job_state, limit).await {
        Ok(jobs) => Json(serde_json::json!({ "jobs": jobs })).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn one(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse() else {
        return bad_request(format!("job id {id:?} is not a number"));
    };
    match state.jobs.get(id).await {
        Ok(Some(job)) => Json(job).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => unavailable(e),
    }
}

fn bad_request(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn unavailable(e: JobError) -> Response {
    tracing::warn!(error = %e, "job table unavailable");
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The OpenMetrics text format, which Prometheus reads.
async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (state.collect)().await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::get().render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(answers: bool) -> Probe {
        Arc::new(move || {
            Box::pin(async move {
                if answers {
                    Ok(())
                } else {
                    futures::future::pending().await
                }
            })
        })
    }

    /// A peer that never answers (a hung token endpoint, a PACS that
    /// accepts and says nothing) must not hang the orchestrator's probe.
    #[tokio::test(start_paused = true)]
    async fn readyz_answers_in_bounded_time_when_peers_hang() {
        let state = AdminState {
            jobs: crate::jobs::open("memory", "test").await.unwrap(),
            upstreams: vec![
                ("clinical".into(), probe(true)),
                ("research".into(), probe(false)),
            ],
            spool_kinds: vec!["stow".into()],
            pacs: vec![("legacy".into(), probe(false))],
            collect: Arc::new(|| Box::pin(async {})),
        };
        let started = tokio::time::Instant::now();
        // Far past the bound: a regression fails here instead of hanging.
        let rsp = tokio::time::timeout(PROBE_WAIT * 10, readyz(State(state)))
            .await
            .expect("/readyz answered")
            .into_response();
        assert!(started.elapsed() <= PROBE_WAIT + std::time::Duration::from_secs(1));
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(rsp.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let hung = format!("no answer within {} s", PROBE_WAIT.as_secs());
        assert_eq!(body["upstreams"]["clinical"], "ok", "{body}");
        assert_eq!(body["upstreams"]["research"], hung.as_str(), "{body}");
        assert_eq!(body["pacs"]["legacy"], hung.as_str(), "{body}");
        assert_eq!(body["jobs"], "ok", "{body}");
    }
}
