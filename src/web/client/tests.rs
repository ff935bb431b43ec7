//! Client tests against a canned HTTP server (a TcpListener answering one
//! request). The test against a real Orthanc is in tests/upstream_stow.rs.

use super::*;
use std::io::Write;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub(super) fn config(url: &str, extra: &str) -> UpstreamConfig {
    toml::from_str(&format!(
        "url = \"{url}\"\nrequest_timeout_secs = 10\n{extra}"
    ))
    .unwrap()
}

/// Serve one request with `response`; hand back the raw request (head + body).
pub(super) async fn canned(response: String) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/dicom-web/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 65536];
        // Read the head, then exactly Content-Length body bytes.
        let head_end = loop {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed early");
            req.extend_from_slice(&buf[..n]);
            if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head = String::from_utf8_lossy(&req[..head_end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while req.len() < head_end + len {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed early");
            req.extend_from_slice(&buf[..n]);
        }
        sock.write_all(response.as_bytes()).await.unwrap();
        sock.shutdown().await.ok();
        req
    });
    (url, task)
}

pub(super) fn http_response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
}

fn item(dir: &std::path::Path, uid: &str, content: &[u8]) -> StowItem {
    let path = dir.join(format!("{uid}.dcm"));
    std::fs::write(&path, content).unwrap();
    StowItem {
        path,
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        sop_instance_uid: uid.into(),
    }
}

#[tokio::test]
async fn stow_request_shape_and_partial_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::File::create(&token)
        .unwrap()
        .write_all(b"s3cret\n")
        .unwrap();
    let body = r#"{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.2"]},"00081197":{"vr":"US","Value":[49152]}}]},
        "00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]}}]}}"#;
    let (url, server) = canned(http_response("202 Accepted", "", body)).await;
    let extra = format!(
        "auth = {{ kind = \"bearer\", token_file = \"{}\" }}\nheaders = {{ X-Site = \"lab\" }}",
        token.display()
    );
    let client = UpstreamClient::new(&config(&url, &extra)).unwrap();
    assert!(client.base_url().ends_with("/dicom-web"));
    let items = [
        item(dir.path(), "1.2.1", &[7u8; 100_000]),
        item(dir.path(), "1.2.2", b"DICM"),
        item(dir.path(), "1.2.3", b"x"),
    ];
    let out = client.stow(&items).await.unwrap();
    assert_eq!(
        out,
        vec![
            InstanceOutcome::Stored,
            InstanceOutcome::Failed(0xC000),
            InstanceOutcome::NotAcknowledged
        ]
    );
    let req = server.await.unwrap();
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&req[..head_end]).to_lowercase();
    assert!(
        head.starts_with("post /dicom-web/studies http/1.1"),
        "{head}"
    );
    assert!(head.contains("authorization: bearer s3cret\r\n"), "{head}");
    assert!(head.contains("accept: application/dicom+json"), "{head}");
    assert!(head.contains("x-site: lab"), "{head}");
    assert!(head.contains("content-type: multipart/related; type=\"application/dicom\"; boundary="));
    assert!(!head.contains("expect:"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(req.len() > head_end + 100_000);
}

#[tokio::test]
async fn ok_without_body_means_all_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = canned(http_response("200 OK", "", "")).await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    let out = client
        .stow(&[item(dir.path(), "1.9", b"a"), item(dir.path(), "1.8", b"b")])
        .await
        .unwrap();
    assert_eq!(out, vec![InstanceOutcome::Stored; 2]);
    server.await.unwrap();
}

#[tokio::test]
async fn unavailable_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = canned(http_response(
        "503 Service Unavailable",
        "Retry-After: 7\r\n",
        "<html>\n  maintenance\n</html>",
    ))
    .await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    let err = client
        .stow(&[item(dir.path(), "1.2", b"a")])
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    match &err {
        UpstreamError::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 503);
            assert_eq!(message, "<html> maintenance </html>");
        }
        e => panic!("unexpected {e:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn client_errors_are_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = canned(http_response("415 Unsupported Media Type", "", "nope")).await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    let err = client
        .stow(&[item(dir.path(), "1.2", b"a")])
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(err.retry_after(), None);
    server.await.unwrap();
}

#[tokio::test]
async fn upstream_down_is_a_transient_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let client = UpstreamClient::new(&config(&format!("http://{addr}"), "")).unwrap();
    let err = client
        .stow(&[item(dir.path(), "1.2", b"a")])
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(client.ping().await.is_err());
}

#[tokio::test]
async fn missing_file_is_reported_before_sending() {
    let client = UpstreamClient::new(&config("http://127.0.0.1:9", "")).unwrap();
    let err = client
        .stow(&[StowItem {
            path: "/nonexistent/x.dcm".into(),
            sop_class_uid: String::new(),
            sop_instance_uid: "1".into(),
        }])
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::File { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn ping_accepts_any_2xx() {
    let (url, server) = canned(http_response("204 No Content", "", "")).await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    client.ping().await.unwrap();
    let req = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(req.starts_with("GET /dicom-web/studies?limit=1 "), "{req}");
}

#[test]
fn retry_after_forms() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(
        parse_retry_after(" 120 ", now),
        Some(Duration::from_secs(120))
    );
    // RFC 9110's example date is 784111777 + 10 s.
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        parse_retry_after(
            "Sun, 06 Nov 1994 08:49:37 GMT",
            now + Duration::from_secs(99)
        ),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
}

#[test]
fn bad_config_is_refused() {
    let missing = config(
        "http://x",
        "auth = { kind = \"bearer\", token_file = \"/nonexistent/token\" }",
    );
    assert!(matches!(
        UpstreamClient::new(&missing),
        Err(UpstreamError::Config(_))
    ));
    let bad_header = config("http://x", "headers = { \"bad header\" = \"v\" }");
    assert!(matches!(
        UpstreamClient::new(&bad_header),
        Err(UpstreamError::Config(_))
    ));
}

#[tokio::test]
async fn bad_request_with_a_stow_body_gives_outcomes() {
    // What Orthanc 1.10 does when some instances of a request fail.
    let dir = tempfile::tempdir().unwrap();
    let body = r#"{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.2"]},"00081197":{"vr":"US","Value":[272]}}]},
        "00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]}}]}}"#;
    let (url, server) = canned(http_response("400 Bad Request", "", body)).await;
    let client = UpstreamClient::new(&config(&url, "")).unwrap();
    let items = [
        item(dir.path(), "1.2.1", b"a"),
        item(dir.path(), "1.2.2", b"b"),
    ];
    let out = client.stow(&items).await.unwrap();
    assert_eq!(
        out,
        vec![InstanceOutcome::Stored, InstanceOutcome::Failed(0x0110)]
    );
    server.await.unwrap();
}
