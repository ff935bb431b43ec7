//! One audit event per DICOMweb request (see `crate::audit`): the service
//! its route names, the study in its path or query, the status, and who.

use super::auth::Principal;
use crate::audit::{self, Event, Who};
use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;

pub async fn record(req: Request, next: Next) -> Response {
    if !audit::enabled() {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| path.clone(), |m| m.as_str().to_owned());
    let Some(service) = service(req.method(), &route) else {
        return next.run(req).await;
    };
    let study = study(&path, req.uri().query().unwrap_or(""));
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let rsp = next.run(req).await;
    let status = rsp.status();
    let subject = rsp
        .extensions()
        .get::<Principal>()
        .map_or("unauthenticated", |p| p.subject.as_str());
    let outcome = match status.as_u16() {
        200..=299 => "success",
        401 | 403 => "refused",
        _ => "failure",
    };
    audit::record(&Event {
        service,
        study: study.as_deref(),
        outcome,
        status: status.as_u16().to_string(),
        who: Who::Web { subject, peer },
    });
    rsp
}

/// The service a route stands for; `None` for the probes and preflights.
fn service(method: &Method, path: &str) -> Option<&'static str> {
    if matches!(path, "/healthz" | "/readyz" | "/metrics") || method == Method::OPTIONS {
        return None;
    }
    let last = path.rsplit('/').next().unwrap_or("");
    Some(if path == "/jobs" || path.starts_with("/jobs/") {
        "jobs"
    } else if path.ends_with("/commitment-requests/{uid}") {
        "storage commitment (commitment-requests)"
    } else if method == Method::POST {
        "STOW-RS"
    } else if last == "modality-scheduled-procedure-steps" {
        "worklist search"
    } else if last == "workitems" {
        "workitem search (UPS-RS)"
    } else if last == "wado" {
        "WADO-URI"
    } else if matches!(last, "studies" | "series" | "instances") {
        "QIDO-RS"
    } else if matches!(last, "rendered" | "thumbnail") {
        "WADO-RS rendered"
    } else if path.contains("/frames/") {
        "WADO-RS frames"
    } else if last == "metadata" {
        "WADO-RS metadata"
    } else {
        "WADO-RS"
    })
}

fn study(path: &str, query: &str) -> Option<String> {
    let mut segments = path.split('/');
    while let Some(s) = segments.next() {
        if s == "studies" {
            if let Some(uid) = segments.next().filter(|u| !u.is_empty()) {
                return Some(uid.to_owned());
            }
        }
    }
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        let key = k.to_ascii_lowercase();
        (key == "studyinstanceuid" || key == "studyuid" || key == "0020000d")
            .then(|| v.to_owned())
            .filter(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_service_and_study() {
        let get = Method::GET;
        assert_eq!(service(&get, "/dicom-web/studies"), Some("QIDO-RS"));
        assert_eq!(
            service(&get, "/dicom-web/studies/1.2/series"),
            Some("QIDO-RS")
        );
        assert_eq!(service(&get, "/dicom-web/studies/1.2"), Some("WADO-RS"));
        assert_eq!(
            service(&get, "/dicom-web/studies/1.2/metadata"),
            Some("WADO-RS metadata")
        );
        assert_eq!(service(&get, "/dicom-web/wado"), Some("WADO-URI"));
        assert_eq!(
            service(&Method::POST, "/dicom-web/studies"),
            Some("STOW-RS")
        );
        assert_eq!(service(&get, "/readyz"), None);
        assert_eq!(
            study("/dicom-web/studies/1.2.3/series/4", ""),
            Some("1.2.3".into())
        );
        assert_eq!(
            study("/dicom-web/studies", "limit=1&StudyInstanceUID=1.2.9"),
            Some("1.2.9".into())
        );
        assert_eq!(
            study("/dicom-web/wado", "requestType=WADO&studyUID=7.8"),
            Some("7.8".into())
        );
        assert_eq!(study("/dicom-web/studies", "PatientName=X"), None);
    }
}
