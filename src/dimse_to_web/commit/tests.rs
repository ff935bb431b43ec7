//! The archive side of the worker against a scripted HTTP origin: the
//! dicomweb exchange (POST, polls honouring Retry-After, result), the `auto`
//! probe falling back to QIDO-RS verification, and errors.

use super::archive::{Archive, Asked};
use super::{ArchiveMode, CommitJob};
use crate::config::{CommitmentMode, UpstreamConfig};
use crate::translate::commitment::{reason, CommitRequest, SopRef};
use crate::web::client::UpstreamClient;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR: &str = "1.2.840.10008.5.1.4.1.1.4";

/// Answers each request with the next canned response; keeps the request
/// lines ("METHOD /path?query").
struct Origin {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn origin(responses: Vec<(&'static str, &'static str, String)>) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/dicom-web", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for (status, headers, body) in responses {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 65536];
            let head_end = loop {
                let n = sock.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
            };
            let head = String::from_utf8_lossy(&req[..head_end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while req.len() < head_end + len {
                let n = sock.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            let line = head
                .lines()
                .next()
                .unwrap_or("")
                .trim_end_matches(" HTTP/1.1");
            log.lock().unwrap().push(line.to_owned());
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
        }
    });
    Origin { url, seen }
}

fn archive(url: &str, mode: CommitmentMode) -> Archive {
    let cfg: UpstreamConfig =
        toml::from_str(&format!("url = \"{url}\"\nrequest_timeout_secs = 10\n")).unwrap();
    Archive::new(
        Arc::new(UpstreamClient::new(&cfg).unwrap()),
        mode,
        Duration::from_secs(60),
    )
}

fn job(txn: &str) -> CommitJob {
    CommitJob {
        request: CommitRequest {
            transaction_uid: txn.into(),
            instances: vec![
                SopRef::new(CT, "1.2.3.1"),
                SopRef::new(CT, "1.2.3.2"),
                SopRef::new(CT, "1.2.3.3"),
            ],
        },
        calling_ae: "MODALITY".into(),
        deadline_at: i64::MAX,
        archive: None,
        posted: false,
        errors: 0,
        result: None,
        deliveries: 0,
        called_ae: "PONS".into(),
        parts: None,
    }
}

fn later(a: Asked) -> (Duration, String) {
    match a {
        Asked::Later(d, why) => (d, why),
        Asked::Done(r) => panic!("done too early: {r:?}"),
    }
}

/// (instance, reason) of the failures; committed instances.
fn outcome(a: Asked) -> (Vec<String>, Vec<(String, u16)>) {
    let Asked::Done(r) = a else {
        panic!("not done")
    };
    (
        r.committed.iter().map(|c| c.instance_uid.clone()).collect(),
        r.failed
            .iter()
            .map(|f| (f.sop.instance_uid.clone(), f.reason))
            .collect(),
    )
}

fn instance(uid: &str, class: &str) -> String {
    format!(
        r#"{{"00080016": {{"vr": "UI", "Value": ["{class}"]}}, "00080018": {{"vr": "UI", "Value": ["{uid}"]}}}}"#
    )
}

#[tokio::test]
async fn dicomweb_posts_once_then_polls_honouring_retry_after() {
    let result = r#"{"00081199": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
         "00081155": {"vr": "UI", "Value": ["1.2.3.1"]}}]},
      "00081198": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
         "00081155": {"vr": "UI", "Value": ["1.2.3.2"]},
         "00081197": {"vr": "US", "Value": [531]}}]}}"#;
    let o = origin(vec![
        ("202 Accepted", "Retry-After: 3\r\n", String::new()),
        ("202 Accepted", "", String::new()),
        (
            "200 OK",
            "Content-Type: application/dicom+json\r\n",
            result.into(),
        ),
    ])
    .await;
    let a = archive(&o.url, CommitmentMode::Dicomweb);
    let mut j = job("1.2.9.1");
    assert_eq!(later(a.ask(&mut j).await).0, Duration::from_secs(3));
    assert!(j.posted);
    assert_eq!(j.archive, Some(ArchiveMode::Dicomweb));
    // No Retry-After: our default poll interval.
    assert_eq!(later(a.ask(&mut j).await).0, Duration::from_secs(5));
    let (committed, failed) = outcome(a.ask(&mut j).await);
    assert_eq!(committed, vec!["1.2.3.1"]);
    // 0x0213 as the archive said; 1.2.3.3 it never mentioned.
    assert_eq!(
        failed,
        vec![
            ("1.2.3.2".into(), reason::RESOURCE_LIMITATION),
            ("1.2.3.3".into(), reason::PROCESSING_FAILURE)
        ]
    );
    assert_eq!(
        *o.seen.lock().unwrap(),
        vec![
            "POST /dicom-web/commitment-requests/1.2.9.1",
            "GET /dicom-web/commitment-requests/1.2.9.1",
            "GET /dicom-web/commitment-requests/1.2.9.1",
        ]
    );
}

#[tokio::test]
async fn auto_falls_back_to_verification_once_and_remembers() {
    let found = format!("[{}, {}]", instance("1.2.3.1", CT), instance("1.2.3.2", MR));
    let o = origin(vec![
        ("404 Not Found", "", String::new()),
        ("200 OK", "", found.clone()),
        ("200 OK", "", found),
    ])
    .await;
    let a = archive(&o.url, CommitmentMode::Auto);
    let mut first = job("1.2.9.2");
    let (committed, failed) = outcome(a.ask(&mut first).await);
    assert_eq!(first.archive, Some(ArchiveMode::Verify));
    assert_eq!(committed, vec!["1.2.3.1"]);
    assert_eq!(
        failed,
        vec![
            ("1.2.3.2".into(), reason::CLASS_INSTANCE_CONFLICT),
            ("1.2.3.3".into(), reason::NO_SUCH_INSTANCE)
        ]
    );
    // The next job goes straight to QIDO-RS.
    let mut second = job("1.2.9.3");
    outcome(a.ask(&mut second).await);
    let qido = "GET /dicom-web/instances?00080018=1.2.3.1,1.2.3.2,1.2.3.3\
                &includefield=00080016&offset=0&limit=100";
    assert_eq!(
        *o.seen.lock().unwrap(),
        vec!["POST /dicom-web/commitment-requests/1.2.9.2", qido, qido]
    );
}

#[tokio::test]
async fn a_request_known_from_before_a_restart_is_polled() {
    let o = origin(vec![
        ("409 Conflict", "", String::new()),
        ("202 Accepted", "Retry-After: 1\r\n", String::new()),
    ])
    .await;
    let a = archive(&o.url, CommitmentMode::Dicomweb);
    let mut j = job("1.2.9.4");
    later(a.ask(&mut j).await);
    assert!(j.posted);
    later(a.ask(&mut j).await);
    assert_eq!(
        *o.seen.lock().unwrap(),
        vec![
            "POST /dicom-web/commitment-requests/1.2.9.4",
            "GET /dicom-web/commitment-requests/1.2.9.4"
        ]
    );
}

#[tokio::test]
async fn trouble_backs_off_and_a_refusal_fails_every_instance() {
    let o = origin(vec![
        (
            "503 Service Unavailable",
            "Retry-After: 7\r\n",
            String::new(),
        ),
        ("503 Service Unavailable", "", String::new()),
        ("400 Bad Request", "", "no".into()),
    ])
    .await;
    let a = archive(&o.url, CommitmentMode::Verify);
    let mut j = job("1.2.9.5");
    assert_eq!(later(a.ask(&mut j).await).0, Duration::from_secs(7));
    assert_eq!(j.errors, 1);
    let (delay, why) = later(a.ask(&mut j).await);
    assert_eq!(delay, Duration::from_secs(2), "{why}");
    assert!(why.contains("503"), "{why}");
    let (committed, failed) = outcome(a.ask(&mut j).await);
    assert!(committed.is_empty());
    assert!(failed.iter().all(|(_, r)| *r == reason::PROCESSING_FAILURE));
    assert_eq!(failed.len(), 3);
    assert_eq!(j.errors, 0);
}
