//! Operator routes: the job table as JSON. `GET /jobs?kind=&state=&limit=`
//! (newest first) and `GET /jobs/{id}`. Payloads hold UIDs, file paths and
//! AE titles, never patient names.

use super::server::WebState;
use crate::jobs::{JobError, JobState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/{id}", get(one))
}

async fn list(
    State(state): State<WebState>,
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

async fn one(State(state): State<WebState>, Path(id): Path<String>) -> Response {
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
